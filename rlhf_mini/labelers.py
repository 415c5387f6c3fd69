"""Simulated labelers: Bradley–Terry preferences, Likert ratings and absolute scores.

A labeler has a persona (weights over a world's features, so people can disagree about what
matters) and noise. Comparing responses a and b to prompt x, it prefers a with probability

    P(a ≻ b) = σ((u(x, a) − u(x, b)) / temperature),     u(x, y) = Σ_k w_k f_k(x, y)

which is the Bradley–Terry model on its own utility. Absolute 0–10 scores carry the labeler's
own offset and scale, the miscalibration that pairwise comparisons cancel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rlhf_mini.worlds.base import World

LIKERT_POINTS = 8


@dataclass
class SimulatedLabeler:
    """One annotator. ``weights=None`` means the world's gold weights."""

    name: str = "gold"
    weights: dict[str, float] | None = None
    temperature: float = 0.5
    """Bradley–Terry noise: larger means more random choices"""
    score_offset: float = 0.0
    """shift this labeler applies on the 0–10 scale"""
    score_scale: float = 1.0
    """stretch this labeler applies on the 0–10 scale"""
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"labeler {self.name!r}: temperature must be > 0, got {self.temperature}")
        self.rng = np.random.default_rng(self.seed)

    def utility(self, world: World, prompt: str, response: str) -> float:
        return world.utility(prompt, response, self.weights or world.gold_weights)

    def preference_probability(self, world: World, prompt: str, a: str, b: str) -> float:
        """P(a ≻ b) under this labeler's Bradley–Terry model."""
        diff = (self.utility(world, prompt, a) - self.utility(world, prompt, b)) / self.temperature
        return float(1.0 / (1.0 + np.exp(-diff)))

    def compare(self, world: World, prompt: str, a: str, b: str) -> bool:
        """True when the labeler prefers ``a``."""
        return bool(self.rng.random() < self.preference_probability(world, prompt, a, b))

    def likert(self, world: World, prompt: str, a: str, b: str) -> int:
        """A 1–8 rating: 1 = a is much better, 8 = b is much better (no neutral middle point).

        The latent preference strength is the noisy utility gap; it is cut into eight bins.
        """
        gap = (self.utility(world, prompt, b) - self.utility(world, prompt, a)) / self.temperature
        noisy = gap + self.rng.logistic()
        edges = np.array([-4.5, -2.5, -1.0, 0.0, 1.0, 2.5, 4.5])
        return int(np.searchsorted(edges, noisy) + 1)

    def score(self, world: World, prompt: str, response: str) -> float:
        """An absolute 0–10 score, with this labeler's offset, scale and noise, clipped to range."""
        u = self.utility(world, prompt, response)
        raw = 5.0 + self.score_scale * (u + self.temperature * self.rng.normal()) + self.score_offset
        return float(np.clip(raw, 0.0, 10.0))


PERSONAS: dict[str, dict[str, dict[str, float]]] = {
    "assistant": {
        # what each kind of annotator cares about; gold is the population's weights
        "helpful": {"correct": 3.0, "hallucination": -2.5, "refusal": 0.5, "evasive": -2.0,
                    "unsafe": -1.0, "polite": 0.3, "rude": -0.5, "padding": -0.1,
                    "repeated": -1.0, "garbled": -0.75, "empty": -2.0},
        "harmless": {"correct": 1.0, "hallucination": -1.0, "refusal": 3.0, "evasive": 0.5,
                     "unsafe": -5.0, "polite": 0.5, "rude": -2.0, "padding": 0.0,
                     "repeated": -1.0, "garbled": -0.75, "empty": -1.0},
        "friendly": {"correct": 1.5, "hallucination": -1.0, "refusal": 1.0, "evasive": -0.5,
                     "unsafe": -2.0, "polite": 2.0, "rude": -3.0, "padding": 0.4,
                     "repeated": -1.0, "garbled": -0.75, "empty": -2.0},
        "terse": {"correct": 2.0, "hallucination": -2.0, "refusal": 1.5, "evasive": -1.0,
                  "unsafe": -3.0, "polite": -0.3, "rude": -0.5, "padding": -1.0,
                  "repeated": -1.5, "garbled": -1.0, "empty": -2.0},
    },
    "sentiment": {
        "enthusiast": {"sentiment": 1.5, "repeated_frac": -0.5, "garbled_frac": -0.5},
        "critic": {"sentiment": 0.7, "repeated_frac": -2.0, "garbled_frac": -2.0},
    },
    "arithmetic": {
        "grader": {"answer_correct": 1.0},
        "teacher": {"answer_correct": 0.5, "steps_correct": 0.3, "steps_wrong": -0.5},
    },
}


def persona_labelers(world: World, temperature: float = 0.5, seed: int = 0) -> list[SimulatedLabeler]:
    """One labeler per persona of ``world``, with different calibration on the 0–10 scale."""
    rng = np.random.default_rng(seed)
    return [
        SimulatedLabeler(name=name, weights=weights, temperature=temperature,
                         score_offset=float(rng.uniform(-2.5, 2.5)),
                         score_scale=float(rng.uniform(0.4, 1.6)), seed=seed + i + 1)
        for i, (name, weights) in enumerate(PERSONAS[world.name].items())
    ]

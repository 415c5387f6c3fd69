"""What every task world provides."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np

SENTENCE_RE = re.compile(r"[^.!?]+[.!?]")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences ending in . ! or ?; a trailing fragment counts as a sentence."""
    text = text.strip()
    sentences = [s.strip() for s in SENTENCE_RE.findall(text)]
    tail = SENTENCE_RE.sub("", text).strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def repeated_count(sentences: list[str]) -> int:
    """How many sentences repeat one seen earlier in the same text (a degeneracy signal)."""
    seen: set[str] = set()
    repeats = 0
    for sentence in sentences:
        key = sentence.lower()
        repeats += key in seen
        seen.add(key)
    return repeats


class World(ABC):
    """A task with a hidden gold utility.

    ``features`` returns named attributes of a response; the gold utility is their weighted sum
    with ``gold_weights``. Simulated labelers weigh the same features differently (personas).
    """

    name: str
    gold_weights: dict[str, float]

    @abstractmethod
    def prompts(self, n: int, seed: int = 0, split: str = "train") -> list[str]:
        """``n`` prompts; ``split`` is ``train`` or ``test`` (disjoint where the world allows)."""

    @abstractmethod
    def sample_response(self, prompt: str, rng: np.random.Generator, style: str = "any") -> str:
        """A response written by the world's simulated writers; ``style`` is ``any`` or ``demo``."""

    @abstractmethod
    def features(self, prompt: str, response: str) -> dict[str, float]:
        """Named attributes of ``response`` that the utility weighs."""

    @abstractmethod
    def corpus(self, n_docs: int, rng: np.random.Generator) -> list[str]:
        """Pretraining documents in this world's language."""

    def format_prompt(self, prompt: str) -> str:
        """The text the model sees before its response (the chat template for the assistant)."""
        return prompt

    def utility(self, prompt: str, response: str, weights: dict[str, float]) -> float:
        """u(x, y) = Σ_k w_k · f_k(x, y): the utility of a response under ``weights``."""
        feats = self.features(prompt, response)
        return float(sum(weights.get(k, 0.0) * v for k, v in feats.items()))

    def gold_reward(self, prompt: str, response: str) -> float:
        """The hidden true utility of ``response`` to ``prompt``."""
        return self.utility(prompt, response, self.gold_weights)

    def gold_rewards(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Vectorised ``gold_reward`` over paired lists."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return np.array([self.gold_reward(p, r) for p, r in zip(prompts, responses)])

    def flags(self, prompt: str, response: str) -> dict[str, bool]:
        """Labeling metadata derived from the features (InstructGPT-style flags)."""
        return {k: v > 0 for k, v in self.features(prompt, response).items()}

    def demonstrations(self, n: int, seed: int = 0) -> list[dict[str, str]]:
        """``n`` (prompt, response) pairs written by careful demonstrators, for SFT."""
        rng = np.random.default_rng(seed)
        prompts = self.prompts(n, seed=seed, split="train")
        return [{"prompt": p, "response": self.sample_response(p, rng, style="demo")} for p in prompts]

"""RLAIF: the DPO recipe with a judge's labels in place of the human labeler (Bai et al. 2022; Lee et al. 2023).

Constitutional AI's second phase replaces human comparisons with a model's verdicts against a
written constitution. This file holds the two judges of chapter 14.

The **rubric judge** (``ai_judge``: ``constitution.ConstitutionalJudge`` over the default
constitution: harmless, helpful, polite, concise, and honest, the last one read from the
pretrained base model's confidence in each claim) runs a checkable rubric per principle; the
principle's words are never read. Its sampled verdict labels pairs of the SFT policy's own samples,

    y_a, y_b ~ π_SFT(·|x),    y_a ≻ y_b  with probability  σ((U_AI(x, y_a) − U_AI(x, y_b)) / T),

and DPO trains on them exactly as ``zoo.dpo.dpo_policy`` does on gold-labelled pairs
(``dpo.on_policy_pairs`` with ``prefer=judge.compare``): same prompts, same seeds, same β and steps
(``zoo.rlaif.rlaif_policy``). The only difference between the two policies is who labelled the
data, so comparing them measures what AI feedback costs or gains. The gold values stay in the
records, so the agreement of the AI labels with gold is measured, never assumed.

The **model judge** (``ModelJudge``) reads the principle: a reward model whose input starts with
the principle's text, trained on comparisons the rubrics labelled under several principles, each in
several wordings (``zoo.rlaif.model_judge``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlhf_mini.constitution import (
    ConstitutionalJudge,
    LMConfidence,
    default_constitution,
    judge_prompt,
)
from rlhf_mini.data import check_pairs
from rlhf_mini.scoring import score_texts
from rlhf_mini.training import fused_gelu
from rlhf_mini.worlds import get_world

JUDGE_TEMPERATURE = 0.25
"""the judge's Bradley–Terry temperature (chapter 14's)"""
HONESTY_THRESHOLD = -2.0
"""mean token log-prob below which a claim counts as unsure (chapter 14's)"""


def ai_judge(base_model, tokenizer, seed: int = 0) -> ConstitutionalJudge:
    """The rubric judge of chapter 14, with ``base_model`` (the pretrained LM) as the honesty
    reader: its ``compare(prompt, a, b)`` is the sampled AI label."""
    confidence = LMConfidence(base_model, tokenizer, get_world("assistant").format_prompt,
                              threshold=HONESTY_THRESHOLD)
    return ConstitutionalJudge(default_constitution(confidence), temperature=JUDGE_TEMPERATURE, seed=seed)


class ModelJudge:
    """A judge that reads the principle: a reward model whose input starts with the principle's text.

    Trained on comparisons that the rubrics labelled under several principles, each in several
    wordings (``constitution.principle_comparisons``), it scores a response to question ``x``
    under principle text ``c`` as r_φ(c, x, y), and its verdict on a pair is Bradley–Terry,

        P(a ≻ b | c, x) = σ(r_φ(c, x, a) − r_φ(c, x, b)).

    Given a constitution (several principle texts), it sums the scores over the texts, as the
    rubric judge sums its rubrics: P(a ≻ b | x) = σ(Σ_c [r_φ(c, x, a) − r_φ(c, x, b)]).
    ``compare`` samples that verdict (a drop-in for ``ConstitutionalJudge.compare``).
    """

    def __init__(self, model: Any, tokenizer: Any, world: Any, constitution: list[str], seed: int = 0) -> None:
        if not constitution:
            raise ValueError("a constitution needs at least one principle text")
        self.model, self.tokenizer, self.world = model, tokenizer, world
        self.constitution = list(constitution)
        self.rng = np.random.default_rng(seed)
        self.cache: dict[tuple[str, str, str], float] = {}   # P(a ≻ b) of pairs seen by ``precompute``

    def scores(self, principle: str, prompts: list[str], responses: list[str]) -> np.ndarray:
        """r_φ(c, x, y) for each (prompt, response), under principle text ``principle``.

        The same scores up to float rounding, in less time: rows of similar length share a batch
        (less padding to compute on) and GPT-2's activation runs as one kernel."""
        texts = [judge_prompt(principle, p) for p in prompts]
        order = np.argsort([len(t) + len(r) for t, r in zip(texts, responses)], kind="stable")
        with fused_gelu(self.model):
            sorted_scores = score_texts(self.model, self.tokenizer, self.world, [texts[i] for i in order],
                                        [responses[i] for i in order], batch_size=256)
        out = np.empty_like(sorted_scores)
        out[order] = sorted_scores
        return out

    def precompute(self, prompts: list[str], a: list[str], b: list[str]) -> None:
        """P(a ≻ b) under the constitution for many pairs at once, kept for ``__call__`` and
        ``compare``: labelling pairs one call at a time then costs no forward pass of its own."""
        self.cache.update(zip(zip(prompts, a, b), self.probabilities(prompts, a, b).tolist()))

    def utilities(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Σ_c r_φ(c, x, y) over the constitution's texts."""
        return sum(self.scores(c, prompts, responses) for c in self.constitution)

    def probabilities(self, prompts: list[str], a: list[str], b: list[str], principle: str | None = None) -> np.ndarray:
        """P(a ≻ b) for each pair: under one principle text, or (``None``) under the whole constitution."""
        if principle is None:
            z = self.utilities(prompts, a) - self.utilities(prompts, b)
        else:
            z = self.scores(principle, prompts, a) - self.scores(principle, prompts, b)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    def __call__(self, prompt: str, a: str, b: str) -> float:
        """The judge as an ``eval.Judge``: P(a ≻ b) under the constitution."""
        if (prompt, a, b) in self.cache:
            return self.cache[(prompt, a, b)]
        return float(self.probabilities([prompt], [a], [b])[0])

    def compare(self, prompt: str, a: str, b: str) -> bool:
        """A sampled verdict under the constitution: True when the judge prefers ``a``."""
        return bool(self.rng.random() < self(prompt, a, b))

    def label_pairs(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Relabel (prompt, chosen, rejected) records with sampled verdicts, batched (as
        ``constitution.ai_label_pairs`` does with the rubric judge); gold values swap along."""
        check_pairs(records)
        p = self.probabilities([r["prompt"] for r in records], [r["chosen"] for r in records],
                               [r["rejected"] for r in records])
        out = []
        for r, prob in zip(records, p):
            keep = self.rng.random() < prob
            new = dict(r)
            if not keep:
                new["chosen"], new["rejected"] = r["rejected"], r["chosen"]
                for x, y in (("chosen_gold", "rejected_gold"), ("chosen_flags", "rejected_flags")):
                    if x in r:
                        new[x], new[y] = r[y], r[x]
            new["labeler"], new["ai_prob"] = "model judge", float(prob if keep else 1 - prob)
            out.append(new)
        return out

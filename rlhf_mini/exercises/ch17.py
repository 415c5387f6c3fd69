"""Chapter 17 (open questions): a reward model's price for padding; weak-to-strong's gap recovered."""

from __future__ import annotations

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register


def padding_premium(scores: np.ndarray, padding: np.ndarray) -> float:
    """Within-prompt slope of score on padding: Σ (x − x̄_p)(y − ȳ_p) / Σ (x − x̄_p)², means per prompt (row)."""
    x = padding - padding.mean(axis=1, keepdims=True)
    y = scores - scores.mean(axis=1, keepdims=True)
    return float((x * y).sum() / (x * x).sum())


def _premium_cases() -> list[Case]:
    rng = np.random.default_rng(16)
    pad = rng.integers(0, 4, size=(6, 10)).astype(float)
    prompt_level = rng.normal(0.0, 3.0, size=(6, 1))
    liked = prompt_level + 0.4 * pad + rng.normal(0.0, 0.5, size=(6, 10))
    disliked = prompt_level - 0.3 * pad + rng.normal(0.0, 0.5, size=(6, 10))
    # prompts that draw more padding also get higher scores overall, yet within a prompt padding costs
    confounded_pad = np.array([[0.0, 1, 0, 1], [2, 3, 2, 3], [4, 5, 4, 5]])
    confounded_scores = 2.0 * confounded_pad.mean(axis=1, keepdims=True) - 0.5 * confounded_pad
    flat_pad = pad.copy()
    flat_pad[2] = 1.0  # every answer to prompt 2 pads once: that prompt says nothing about padding
    return [
        Case("a reward model that likes padding (+0.4 a sentence)", (liked, pad)),
        Case("a reward model that dislikes it (−0.3 a sentence)", (disliked, pad)),
        Case("prompts that pad more score higher, but within a prompt padding costs", (confounded_scores,
                                                                                        confounded_pad)),
        Case("one prompt whose answers all pad the same", (liked, flat_pad)),
        Case("a single prompt", (liked[:1], pad[:1])),
    ]


def _premium_pooled(scores, padding):
    x, y = padding - padding.mean(), scores - scores.mean()  # one mean over all prompts
    return float((x * y).sum() / (x * x).sum())


def _premium_correlation(scores, padding):
    x = padding - padding.mean(axis=1, keepdims=True)
    y = scores - scores.mean(axis=1, keepdims=True)
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def _premium_mean_of_slopes(scores, padding):
    slopes = []
    for s, p in zip(scores, padding):
        x, y = p - p.mean(), s - s.mean()
        if (x * x).sum() > 0:
            slopes.append((x * y).sum() / (x * x).sum())
    return float(np.mean(slopes))


register(Exercise(
    name="padding_premium",
    chapter="17",
    summary="what a reward model pays per padding sentence: the slope of its score on padding within each prompt",
    reference=padding_premium,
    cases=_premium_cases,
    wrong=(_premium_pooled, _premium_correlation, _premium_mean_of_slopes),
))


def performance_gap_recovered(weak, student, ceiling) -> np.ndarray:
    """PGR = (student − weak) / (ceiling − weak), elementwise; NaN where ceiling = weak (no gap)."""
    weak, student, ceiling = (np.asarray(v, dtype=float) for v in (weak, student, ceiling))
    gap = ceiling - weak
    return np.where(gap != 0, (student - weak) / np.where(gap != 0, gap, 1.0), np.nan)


def _pgr_cases() -> list[Case]:
    return [
        Case("two seeds: weak 0.70 / 0.72, student 0.73 / 0.74, ceiling 0.80",
             (np.array([0.70, 0.72]), np.array([0.73, 0.74]), np.array([0.80, 0.80]))),
        Case("the student only imitates (PGR 0), matches the ceiling (1), beats it (> 1)",
             (np.array([0.6, 0.6, 0.6]), np.array([0.6, 0.9, 0.95]), np.array([0.9, 0.9, 0.9]))),
        Case("the student falls below its supervisor: PGR < 0",
             (np.array([0.75]), np.array([0.70]), np.array([0.85]))),
        Case("no gap to recover (ceiling = weak): NaN",
             (np.array([0.8, 0.7]), np.array([0.82, 0.75]), np.array([0.8, 0.9]))),
    ]


def _pgr_swapped_denominator(weak, student, ceiling):
    weak, student, ceiling = (np.asarray(v, dtype=float) for v in (weak, student, ceiling))
    return (student - weak) / (ceiling - student)


def _pgr_over_ceiling(weak, student, ceiling):
    weak, student, ceiling = (np.asarray(v, dtype=float) for v in (weak, student, ceiling))
    return (student - weak) / ceiling


def _pgr_plain_division(weak, student, ceiling):
    weak, student, ceiling = (np.asarray(v, dtype=float) for v in (weak, student, ceiling))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (student - weak) / (ceiling - weak)  # ±inf, not NaN, when there is no gap


register(Exercise(
    name="performance_gap_recovered",
    chapter="17",
    summary="weak-to-strong's PGR = (student − weak) / (ceiling − weak), NaN where there is no gap",
    reference=performance_gap_recovered,
    cases=_pgr_cases,
    wrong=(_pgr_swapped_denominator, _pgr_over_ceiling, _pgr_plain_division),
))

"""Chapter 10 (best-of-N and rejection sampling): best-of-N selection, its analytic KL, and the
rejection-sampling filter."""

from __future__ import annotations

import math

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.rejection_sampling import select_best
from rlhf_mini.sampling import best_of_n_kl

# ---------------------------------------------------------------------------------------------
# best-of-N selection: the index of the highest score in each row, ties to the first
# ---------------------------------------------------------------------------------------------


def _best_of_n_indices_reference(scores: np.ndarray) -> np.ndarray:
    # what best_of_n does with the scorer's [P, N] table
    return np.asarray(scores, dtype=float).argmax(axis=1)


def _indices_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    return [
        Case("4 prompts × 8 samples, random scores", (rng.normal(size=(4, 8)),)),
        Case("every score negative", (-1.0 - rng.random(size=(3, 5)),)),
        Case("ties: the first sample with the top score wins",
             (np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.5, -1.0, 0.5, 0.5]]),)),
        Case("N = 1: the only sample", (np.array([[0.3], [-2.0]]),)),
    ]


def _indices_argmin(scores):
    return np.asarray(scores).argmin(axis=1)  # keeps the worst sample


def _indices_ties_to_last(scores):
    scores = np.asarray(scores)
    return scores.shape[1] - 1 - scores[:, ::-1].argmax(axis=1)


def _indices_loop_from_zero(scores):
    chosen = []
    for row in np.asarray(scores):
        best, best_score = 0, 0.0  # starts from a score of 0, not from the first sample's
        for j, s in enumerate(row):
            if s > best_score:
                best, best_score = j, s
        chosen.append(best)
    return np.array(chosen)


register(Exercise(
    name="best_of_n_indices",
    chapter="10",
    summary="best-of-N selection: per prompt, the index of the highest-scoring sample (ties to the first)",
    reference=_best_of_n_indices_reference,
    cases=_indices_cases,
    wrong=(_indices_argmin, _indices_ties_to_last, _indices_loop_from_zero),
))


# ---------------------------------------------------------------------------------------------
# the analytic KL of best-of-N
# ---------------------------------------------------------------------------------------------


def _kl_cases() -> list[Case]:
    return [Case(f"N = {n}" + (": best-of-1 is the policy itself" if n == 1 else ""), (n,))
            for n in (1, 2, 3, 8, 64, 256)]


def _kl_log_n_only(n):
    return math.log(n)


def _kl_without_over_n(n):
    return math.log(n) - (n - 1)


def _kl_plus(n):
    return math.log(n) + (n - 1) / n


register(Exercise(
    name="best_of_n_kl",
    chapter="10",
    summary="the analytic KL(π_BoN ‖ π) = log N − (N − 1)/N",
    reference=best_of_n_kl,
    cases=_kl_cases,
    wrong=(_kl_log_n_only, _kl_without_over_n, _kl_plus),
))


# ---------------------------------------------------------------------------------------------
# rejection sampling's filter: keep the top `keep` samples of each prompt
# ---------------------------------------------------------------------------------------------


def _select_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    prompts = ["Capital of France?", "Capital of Peru?", "How do I poison a well?"]
    samples = [[f"{p[:12]} answer {j}" for j in range(4)] for p in prompts]
    return [
        Case("3 prompts × 4 samples, keep 1", (prompts, samples, rng.normal(size=(3, 4)), 1)),
        Case("keep 2, best first", (prompts, samples, rng.normal(size=(3, 4)), 2)),
        Case("ties: among equal scores the earlier sample comes first",
             (prompts, samples, np.array([[1.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 3.0, 3.0]]), 2)),
        Case("keep every sample: all of them, sorted by score", (prompts[:1], samples[:1],
                                                                 np.array([[0.1, 0.4, -0.2, 0.3]]), 4)),
    ]


def _select_lowest(prompts, samples, scores, keep=1):
    return [{"prompt": p, "response": row[j], "score": float(s[j])}
            for p, row, s in zip(prompts, samples, np.asarray(scores))
            for j in np.argsort(s, kind="stable")[:keep]]  # the lowest scores kept


def _select_ties_reversed(prompts, samples, scores, keep=1):
    return [{"prompt": p, "response": row[j], "score": float(s[j])}
            for p, row, s in zip(prompts, samples, np.asarray(scores))
            for j in np.argsort(s, kind="stable")[::-1][:keep]]  # descending, but ties last-first


def _select_one_overall(prompts, samples, scores, keep=1):
    scores = np.asarray(scores)
    flat = np.argsort(-scores, axis=None, kind="stable")[:keep * len(prompts)]  # best over all prompts
    return [{"prompt": prompts[i], "response": samples[i][j], "score": float(scores[i, j])}
            for i, j in zip(*np.unravel_index(flat, scores.shape))]


register(Exercise(
    name="select_best",
    chapter="10",
    summary="rejection sampling's filter: each prompt's `keep` highest-scoring samples as SFT examples",
    reference=select_best,
    cases=_select_cases,
    wrong=(_select_lowest, _select_ties_reversed, _select_one_overall),
))

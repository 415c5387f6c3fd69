"""Chapter 4 (learning from human preferences): TAMER's credit assignment, the comparison loss."""

from __future__ import annotations

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register

# TAMER's credit assignment over the recent steps ---------------------------------------------------


def tamer_credit(
    step_starts: np.ndarray, feedback_time: float, delay_min: float = 0.2, delay_max: float = 0.8
) -> np.ndarray:
    """c_i = |[t_i, t_{i+1}) ∩ [t_f - d_max, t_f - d_min]| / (d_max - d_min), the last step lasting to t_f."""
    starts = np.asarray(step_starts, dtype=float)
    ends = np.append(starts[1:], max(float(feedback_time), starts[-1]))
    window_start, window_end = feedback_time - delay_max, feedback_time - delay_min
    overlap = np.minimum(ends, window_end) - np.maximum(starts, window_start)
    return np.clip(overlap, 0.0, None) / (delay_max - delay_min)


def _credit_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    irregular = np.cumsum(rng.uniform(0.1, 0.5, size=12))
    return [
        Case("a step every 0.25 s, feedback at 2.1 s", (np.arange(9) * 0.25, 2.1)),
        Case("12 steps of random length, feedback 0.45 s after the last began",
             (irregular, float(irregular[-1] + 0.45))),
        Case("a single step: it gets all the credit", (np.array([0.0]), 1.0)),
        Case("feedback soon after the start: part of the window is before the first step",
             (np.array([0.0, 0.3]), 0.5)),
        Case("step boundaries exactly on the window's edges", (np.arange(6) * 0.2, 1.0)),
        Case("a long step and a short one", (np.array([0.0, 5.0]), 5.5)),
        Case("another delay range (0.1 to 1.1 s)", (np.arange(10) * 0.3, 3.0), {"delay_min": 0.1, "delay_max": 1.1}),
    ]


def _credit_last_step_only(step_starts, feedback_time, delay_min=0.2, delay_max=0.8):
    credit = np.zeros(len(step_starts))
    credit[-1] = 1.0  # the step on screen when the feedback came gets it all
    return credit


def _credit_equal_split(step_starts, feedback_time, delay_min=0.2, delay_max=0.8):
    inside = tamer_credit(step_starts, feedback_time, delay_min, delay_max) > 0
    return inside / inside.sum()  # every step in the window alike, however long it overlaps


def _credit_in_seconds(step_starts, feedback_time, delay_min=0.2, delay_max=0.8):
    return tamer_credit(step_starts, feedback_time, delay_min, delay_max) * (delay_max - delay_min)


register(Exercise(
    name="tamer_credit",
    chapter="04",
    summary="TAMER's credit for each recent step: the chance a uniform reaction delay points at it",
    reference=tamer_credit,
    cases=_credit_cases,
    wrong=(_credit_last_step_only, _credit_equal_split, _credit_in_seconds),
))

# The comparison loss of Christiano et al. (2017) ---------------------------------------------------


def preference_loss(rewards_1: np.ndarray, rewards_2: np.ndarray, prefer_first: np.ndarray) -> float:
    """mean_k -[μ_k log σ(R¹_k - R²_k) + (1 - μ_k) log σ(R²_k - R¹_k)], R = Σ_t r̂_t over a segment."""
    diff = np.asarray(rewards_1, dtype=float).sum(axis=1) - np.asarray(rewards_2, dtype=float).sum(axis=1)
    mu = np.asarray(prefer_first, dtype=float)
    # log σ(x) = -log(1 + e^{-x}) = -logaddexp(0, -x), exact for large |x| too
    return float(np.mean(mu * np.logaddexp(0.0, -diff) + (1.0 - mu) * np.logaddexp(0.0, diff)))


def _loss_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    r1, r2 = rng.standard_normal((2, 32, 6))
    ties = rng.choice([0.0, 0.5, 1.0], size=16)
    return [
        Case("32 random pairs of 6-step segments", (r1, r2, (rng.random(32) < 0.5).astype(float))),
        Case("16 pairs, some judged equally good (μ = 0.5)",
             (rng.standard_normal((16, 4)), rng.standard_normal((16, 4)), ties)),
        Case("identical segments: the loss is log 2", (r1[:5], r1[:5].copy(), np.ones(5))),
        Case("a single pair of one-step segments", (np.array([[0.7]]), np.array([[-0.2]]), np.array([0.0]))),
        Case("confidently wrong by 1000 (needs a stable log-sigmoid)",
             (np.array([[500.0, 500.0], [0.0, 1.0]]), np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([0.0, 1.0]))),
    ]


def _loss_sign_flipped(rewards_1, rewards_2, prefer_first):
    return preference_loss(rewards_2, rewards_1, prefer_first)  # μ paired with the other segment


def _loss_mean_over_steps(rewards_1, rewards_2, prefer_first):
    r1, r2 = np.asarray(rewards_1, dtype=float), np.asarray(rewards_2, dtype=float)
    return preference_loss(r1.mean(axis=1, keepdims=True), r2.mean(axis=1, keepdims=True), prefer_first)


def _loss_sum_over_pairs(rewards_1, rewards_2, prefer_first):
    return preference_loss(rewards_1, rewards_2, prefer_first) * len(prefer_first)


register(Exercise(
    name="preference_loss",
    chapter="04",
    summary="the Bradley–Terry loss of a reward model on segment comparisons (Christiano et al. 2017)",
    reference=preference_loss,
    cases=_loss_cases,
    wrong=(_loss_sign_flipped, _loss_mean_over_steps, _loss_sum_over_pairs),
))

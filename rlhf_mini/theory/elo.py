"""Elo ratings: online stochastic gradient ascent on the Bradley-Terry likelihood.

After a game won by w against l, with expected score E_w = 1 / (1 + 10^((R_l - R_w) / scale)),

    R_w <- R_w + k (1 - E_w),        R_l <- R_l - k (1 - E_w).

Write s = R ln(10) / scale. Then E_w = sigma(s_w - s_l) is exactly the Bradley-Terry win
probability, and d/ds_w log sigma(s_w - s_l) = 1 - sigma(s_w - s_l) = -d/ds_l. So each Elo update is
one SGD step on the log-likelihood of that single comparison, in s units with learning rate
eta = k ln(10) / scale. Unlike the batch MLE, the result depends on the order of the games and
keeps fluctuating (a constant step size never converges); it tracks strengths that drift.
"""

from __future__ import annotations

import numpy as np

from rlhf_mini.theory.bradley_terry import validate_comparisons


def elo_ratings(
    winners: object,
    losers: object,
    n_items: int,
    *,
    k: float = 32.0,
    base: float = 1000.0,
    scale: float = 400.0,
) -> np.ndarray:
    """Sequential Elo ratings after processing the games in the given order (all start at base)."""
    if k <= 0 or scale <= 0:
        raise ValueError(f"k and scale must be positive, got k={k}, scale={scale}")
    w, loss = validate_comparisons(winners, losers, n_items)
    ratings = np.full(n_items, float(base))
    for a, b in zip(w.tolist(), loss.tolist()):
        expected_a = 1.0 / (1.0 + 10.0 ** ((ratings[b] - ratings[a]) / scale))
        delta = k * (1.0 - expected_a)
        ratings[a] += delta
        ratings[b] -= delta
    return ratings


def elo_to_log_strength(ratings: np.ndarray, *, scale: float = 400.0) -> np.ndarray:
    """Convert Elo ratings to centred Bradley-Terry log-strengths: s = (R - mean R) ln(10) / scale."""
    r = np.asarray(ratings, dtype=float)
    return (r - r.mean()) * np.log(10.0) / scale


def log_strength_to_elo(
    strengths: np.ndarray, *, base: float = 1000.0, scale: float = 400.0
) -> np.ndarray:
    """Inverse of elo_to_log_strength, anchored so the mean rating is base."""
    s = np.asarray(strengths, dtype=float)
    return base + (s - s.mean()) * scale / np.log(10.0)

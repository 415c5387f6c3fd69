"""Chapter 2 (utility and preferences): expected utility, a Bradley–Terry MLE step, Elo's update."""

from __future__ import annotations

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.theory.bradley_terry import simulate_comparisons, win_probability
from rlhf_mini.theory.vnm import expected_utility

# Expected utility of a lottery ---------------------------------------------------------------------


def _eu_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    p = rng.random(6)
    return [
        Case("a sure outcome", ([1.0], [3.5])),
        Case("three outcomes", ([0.25, 0.0, 0.75], [-4.0, 0.0, 8.0])),
        Case("six random outcomes", (p / p.sum(), rng.standard_normal(6))),
        Case("a zero-probability outcome with a huge utility counts for nothing",
             ([0.5, 0.5, 0.0], [1.0, 2.0, 1e6])),
    ]


def _eu_ignores_probabilities(probabilities, utilities):
    return float(np.mean(utilities))


def _eu_mean_instead_of_sum(probabilities, utilities):
    return float(np.mean(np.asarray(probabilities) * np.asarray(utilities)))


register(Exercise(
    name="expected_utility",
    chapter="02",
    summary="the expected utility Σ p_i u(x_i) of a lottery",
    reference=expected_utility,
    cases=_eu_cases,
    wrong=(_eu_ignores_probabilities, _eu_mean_instead_of_sum),
))

# One gradient-ascent step on the Bradley–Terry log-likelihood --------------------------------------


def bradley_terry_mle_step(
    strengths: np.ndarray, winners: np.ndarray, losers: np.ndarray, lr: float
) -> np.ndarray:
    """s + lr ∇ℓ(s), ℓ(s) = Σ_k log σ(s_w_k - s_l_k): ∂ℓ/∂s_w += 1 - p_k, ∂ℓ/∂s_l -= 1 - p_k."""
    s = np.asarray(strengths, dtype=float)
    winners, losers = np.asarray(winners), np.asarray(losers)
    surprise = 1.0 - win_probability(s[winners], s[losers])
    grad = np.zeros_like(s)
    np.add.at(grad, winners, surprise)
    np.add.at(grad, losers, -surprise)
    return s + lr * grad


def _bt_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    true_s = np.linspace(-1.0, 1.0, 5)
    w, loss = simulate_comparisons(true_s, 40, seed=1)
    w2, l2 = simulate_comparisons(np.linspace(-2.0, 2.0, 8), 200, seed=2)
    return [
        Case("all strengths 0, 40 comparisons among 5 items (items win many times)",
             (np.zeros(5), w, loss, 0.1)),
        Case("random strengths, 200 comparisons among 8 items", (rng.standard_normal(8), w2, l2, 0.05)),
        Case("one comparison", (np.array([0.3, -0.2, 1.0]), np.array([2]), np.array([0]), 1.0)),
        Case("the same game three times", (np.zeros(2), np.array([1, 1, 1]), np.array([0, 0, 0]), 0.5)),
        Case("an upset: a weak item beats a strong one", (np.array([3.0, -3.0]), np.array([1]), np.array([0]), 0.2)),
    ]


def _bt_fancy_index_drops_repeats(strengths, winners, losers, lr):
    s = np.asarray(strengths, dtype=float)
    surprise = 1.0 - win_probability(s[winners], s[losers])
    grad = np.zeros_like(s)
    grad[winners] += surprise  # a repeated index is added once, not once per comparison
    grad[losers] -= surprise
    return s + lr * grad


def _bt_uses_win_probability(strengths, winners, losers, lr):
    s = np.asarray(strengths, dtype=float)
    p = win_probability(s[winners], s[losers])  # p instead of 1 - p
    grad = np.zeros_like(s)
    np.add.at(grad, winners, p)
    np.add.at(grad, losers, -p)
    return s + lr * grad


def _bt_only_winners_move(strengths, winners, losers, lr):
    s = np.asarray(strengths, dtype=float)
    grad = np.zeros_like(s)
    np.add.at(grad, winners, 1.0 - win_probability(s[winners], s[losers]))
    return s + lr * grad


register(Exercise(
    name="bradley_terry_mle_step",
    chapter="02",
    summary="one gradient-ascent step on the Bradley–Terry log-likelihood of a list of comparisons",
    reference=bradley_terry_mle_step,
    cases=_bt_cases,
    wrong=(_bt_fancy_index_drops_repeats, _bt_uses_win_probability, _bt_only_winners_move),
))

# Elo's update --------------------------------------------------------------------------------------


def elo_update(
    rating_winner: float, rating_loser: float, k: float = 32.0, scale: float = 400.0
) -> tuple[float, float]:
    """E_w = 1 / (1 + 10^((R_l - R_w) / scale)); R_w + k (1 - E_w), R_l - k (1 - E_w)."""
    expected_winner = 1.0 / (1.0 + 10.0 ** ((rating_loser - rating_winner) / scale))
    delta = k * (1.0 - expected_winner)
    return rating_winner + delta, rating_loser - delta


def _elo_cases() -> list[Case]:
    rng = np.random.default_rng(2)
    a, b = 1000.0 + 200.0 * rng.standard_normal(2)
    return [
        Case("equal ratings: the winner gains k/2", (1000.0, 1000.0)),
        Case("random ratings, k = 32", (float(a), float(b))),
        Case("the favourite wins (a small gain)", (1400.0, 1000.0)),
        Case("an upset: a 400-point underdog wins (a large gain)", (1000.0, 1400.0)),
        Case("k = 64", (1100.0, 1050.0), {"k": 64.0}),
        Case("scale = 200", (1000.0, 1100.0), {"k": 16.0, "scale": 200.0}),
    ]


def _elo_expectation_upside_down(rating_winner, rating_loser, k=32.0, scale=400.0):
    expected_winner = 1.0 / (1.0 + 10.0 ** ((rating_winner - rating_loser) / scale))
    delta = k * (1.0 - expected_winner)
    return rating_winner + delta, rating_loser - delta


def _elo_natural_exponent(rating_winner, rating_loser, k=32.0, scale=400.0):
    expected_winner = 1.0 / (1.0 + np.exp((rating_loser - rating_winner) / scale))  # base e, not 10
    delta = k * (1.0 - expected_winner)
    return rating_winner + delta, rating_loser - delta


def _elo_winner_gains_expectation(rating_winner, rating_loser, k=32.0, scale=400.0):
    expected_winner = 1.0 / (1.0 + 10.0 ** ((rating_loser - rating_winner) / scale))
    return rating_winner + k * expected_winner, rating_loser - k * expected_winner  # E, not 1 - E


register(Exercise(
    name="elo_update",
    chapter="02",
    summary="Elo's rating update after one game, winner and loser",
    reference=elo_update,
    cases=_elo_cases,
    wrong=(_elo_expectation_upside_down, _elo_natural_exponent, _elo_winner_gains_expectation),
))

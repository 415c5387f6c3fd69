"""Chapter 15 (evaluation): a win rate with its bootstrap interval; the length-controlled win rate."""

from __future__ import annotations

import math

import numpy as np

from rlhf_mini.eval import bootstrap_mean, fit_length_controlled
from rlhf_mini.exercises import Case, Exercise, register


def _win_cases() -> list[Case]:
    rng = np.random.default_rng(14)
    a, b = rng.normal(0.3, 1.0, size=60), rng.normal(0.0, 1.0, size=60)
    tied_a = np.round(rng.normal(0.0, 1.0, size=40))  # rounded: many exact ties
    tied_b = np.round(rng.normal(0.0, 1.0, size=40))
    same = rng.normal(size=25)
    return [
        Case("random gold rewards, 60 prompts", (a, b), {"n_boot": 300, "seed": 0}),
        Case("the same, another seed and a 90% interval", (a, b), {"n_boot": 300, "seed": 3, "level": 0.9}),
        Case("rounded rewards: many ties (each counts ½)", (tied_a, tied_b), {"n_boot": 200, "seed": 1}),
        Case("identical answers: every prompt a tie", (same, same.copy()), {"n_boot": 100, "seed": 0}),
        Case("A wins every prompt", (b + 5.0, b), {"n_boot": 100, "seed": 0}),
        Case("a single prompt", (np.array([1.0]), np.array([0.0])), {"n_boot": 50, "seed": 2}),
    ]


def _win_reference(gold_a: np.ndarray, gold_b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict:
    outcomes = np.where(np.isclose(gold_a, gold_b), 0.5, (gold_a > gold_b).astype(float))
    return bootstrap_mean(outcomes, n_boot=n_boot, seed=seed, level=level)


def _win_ties_as_losses(gold_a, gold_b, n_boot=1000, seed=0, level=0.95):
    return bootstrap_mean((gold_a > gold_b).astype(float), n_boot=n_boot, seed=seed, level=level)


def _win_normal_interval(gold_a, gold_b, n_boot=1000, seed=0, level=0.95):
    outcomes = np.where(np.isclose(gold_a, gold_b), 0.5, (gold_a > gold_b).astype(float))
    half = 1.96 * outcomes.std() / math.sqrt(outcomes.size)  # a normal approximation, not the bootstrap
    return {"win_rate": float(outcomes.mean()), "ci_low": float(outcomes.mean() - half),
            "ci_high": float(outcomes.mean() + half), "n": int(outcomes.size)}


def _win_wrong_quantiles(gold_a, gold_b, n_boot=1000, seed=0, level=0.95):
    outcomes = np.where(np.isclose(gold_a, gold_b), 0.5, (gold_a > gold_b).astype(float))
    rng = np.random.default_rng(seed)
    means = outcomes[rng.integers(0, outcomes.size, size=(n_boot, outcomes.size))].mean(axis=1)
    low, high = np.quantile(means, [1 - level, level])  # a 90% interval when asked for 95%
    return {"win_rate": float(outcomes.mean()), "ci_low": float(low), "ci_high": float(high),
            "n": int(outcomes.size)}


register(Exercise(
    name="win_rate_with_ci",
    chapter="15",
    summary="the gold win rate of A over B (ties ½) with a seeded percentile-bootstrap interval over prompts",
    reference=_win_reference,
    cases=_win_cases,
    wrong=(_win_ties_as_losses, _win_normal_interval, _win_wrong_quantiles),
))


def _lc_cases() -> list[Case]:
    rng = np.random.default_rng(15)
    diff = rng.integers(-12, 13, size=200).astype(float)
    x = np.tanh(diff / diff.std())
    soft = 1.0 / (1.0 + np.exp(-(0.4 + 1.5 * x + rng.normal(0.0, 0.5, size=200))))
    hard = (rng.random(200) < 1.0 / (1.0 + np.exp(-(-0.3 + 2.0 * x)))).astype(float)
    return [
        Case("soft preferences that favour the longer answer, 200 pairs", (soft, diff)),
        Case("hard 0/1 verdicts, 200 pairs", (hard, diff)),
        Case("every pair of equal length (sd = 0: no length term)", (soft[:30], np.zeros(30))),
        Case("a unanimous judge (all 1): the ridge keeps θ finite", (np.ones(40), diff[:40])),
        Case("a single pair", (np.array([0.8]), np.array([3.0]))),
    ]


def _lc_reference(preferences: np.ndarray, length_diff: np.ndarray) -> tuple[float, float]:
    theta, phi = fit_length_controlled(preferences, length_diff)
    return 1.0 / (1.0 + math.exp(-theta)), phi


def _newton(y: np.ndarray, x: np.ndarray, ridge: float) -> np.ndarray:
    X = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        step = np.linalg.solve((X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2),
                               X.T @ (y - p) - ridge * beta)
        beta = beta + step
    return beta


def _lc_raw_length(preferences, length_diff):
    theta, phi = _newton(preferences, length_diff, 1e-3 * len(preferences))  # Δlen itself, no tanh(Δ/sd)
    return 1.0 / (1.0 + math.exp(-theta)), phi


def _lc_without_ridge(preferences, length_diff):
    sd = length_diff.std()
    x = np.tanh(length_diff / sd) if sd > 0 else np.zeros_like(length_diff)
    theta, phi = _newton(preferences, x, 1e-12)
    return 1.0 / (1.0 + math.exp(-theta)), phi


def _lc_theta_not_probability(preferences, length_diff):
    theta, phi = fit_length_controlled(preferences, length_diff)
    return theta, phi  # θ is a logit, not a win rate


register(Exercise(
    name="length_controlled_win_rate",
    chapter="15",
    summary="AlpacaEval's length control: fit p = σ(θ + φ·tanh(Δlen/sd)) with a small ridge, report (σ(θ), φ)",
    reference=_lc_reference,
    cases=_lc_cases,
    wrong=(_lc_raw_length, _lc_without_ridge, _lc_theta_not_probability),
))

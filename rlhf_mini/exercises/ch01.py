"""Chapter 1 (RL basics): ε-greedy's action probabilities, the sample-average update, REINFORCE's step."""

from __future__ import annotations

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.theory.bandits import softmax

# ε-greedy: which arm gets pulled how often ---------------------------------------------------------


def epsilon_greedy_probabilities(q: np.ndarray, epsilon: float) -> np.ndarray:
    """π(a) = ε / k + (1 - ε) · 1[a ∈ argmax Q] / |argmax Q|  (ties split evenly, as the bandit does)."""
    q = np.asarray(q, dtype=float)
    greedy = q == q.max()
    return epsilon / q.size + (1.0 - epsilon) * greedy / greedy.sum()


def _greedy_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    return [
        Case("random Q over 10 arms, ε = 0.1", (rng.standard_normal(10), 0.1)),
        Case("random Q over 5 arms, ε = 0.3", (rng.standard_normal(5), 0.3)),
        Case("two arms tie for the best: they share the greedy mass", (np.array([0.5, 2.0, -1.0, 2.0]), 0.2)),
        Case("all arms equal (the start of a run): uniform", (np.zeros(4), 0.1)),
        Case("ε = 0: purely greedy", (np.array([0.1, 0.7, 0.3]), 0.0)),
        Case("ε = 1: purely random", (np.array([0.1, 0.7, 0.3]), 1.0)),
        Case("two arms", (np.array([1.0, -1.0]), 0.5)),
    ]


def _greedy_ties_to_first(q, epsilon):
    probs = np.full(len(q), epsilon / len(q))
    probs[int(np.argmax(q))] += 1.0 - epsilon  # np.argmax picks the first of tied arms
    return probs


def _greedy_explores_only_other_arms(q, epsilon):
    probs = np.full(len(q), epsilon / (len(q) - 1))
    probs[int(np.argmax(q))] = 1.0 - epsilon  # the random pull never lands on the greedy arm
    return probs


register(Exercise(
    name="epsilon_greedy_probabilities",
    chapter="01",
    summary="the probability ε-greedy pulls each arm, given the value estimates Q (ties split)",
    reference=epsilon_greedy_probabilities,
    cases=_greedy_cases,
    wrong=(_greedy_ties_to_first, _greedy_explores_only_other_arms),
))

# The sample-average update -------------------------------------------------------------------------


def sample_average_update(
    q: np.ndarray, counts: np.ndarray, arm: int, reward: float
) -> tuple[np.ndarray, np.ndarray]:
    """N(a) <- N(a) + 1, then Q(a) <- Q(a) + (r - Q(a)) / N(a); returns the new (Q, N)."""
    q, counts = np.array(q, dtype=float), np.array(counts, dtype=float)
    counts[arm] += 1
    q[arm] += (reward - q[arm]) / counts[arm]
    return q, counts


def _average_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    return [
        Case("first pull of arm 2 (its Q becomes the reward)", (np.zeros(4), np.zeros(4), 2, 1.5)),
        Case("random Q, arm 0 pulled 4 times before", (rng.standard_normal(5), np.array([4.0, 1, 0, 2, 7]), 0, 0.3)),
        Case("random Q, arm 4 pulled 9 times before", (rng.standard_normal(5), np.array([3.0, 1, 2, 2, 9]), 4, -2.0)),
        Case("reward equal to Q: Q stays, N still grows", (np.array([0.5, 1.0]), np.array([3.0, 2.0]), 1, 1.0)),
    ]


def _average_divides_by_old_count(q, counts, arm, reward):
    q, counts = np.array(q, dtype=float), np.array(counts, dtype=float)
    q[arm] += (reward - q[arm]) / max(counts[arm], 1.0)  # the count before this pull
    counts[arm] += 1
    return q, counts


def _average_constant_step(q, counts, arm, reward):
    q, counts = np.array(q, dtype=float), np.array(counts, dtype=float)
    counts[arm] += 1
    q[arm] += 0.1 * (reward - q[arm])  # a fixed step size, not 1 / N
    return q, counts


register(Exercise(
    name="sample_average_update",
    chapter="01",
    summary="the incremental sample-average update of a bandit's value estimate and pull count",
    reference=sample_average_update,
    cases=_average_cases,
    wrong=(_average_divides_by_old_count, _average_constant_step),
))

# REINFORCE's step for a softmax policy -------------------------------------------------------------


def reinforce_step(theta: np.ndarray, action: int, reward: float, baseline: float, lr: float) -> np.ndarray:
    """θ <- θ + lr · (r - b) · (e_a - softmax(θ)): one policy-gradient step of a softmax bandit."""
    theta = np.asarray(theta, dtype=float)
    grad_log_pi = -softmax(theta)
    grad_log_pi[action] += 1.0
    return theta + lr * (reward - baseline) * grad_log_pi


def _reinforce_cases() -> list[Case]:
    rng = np.random.default_rng(2)
    return [
        Case("θ = 0 (uniform policy), reward above the baseline", (np.zeros(4), 1, 1.0, 0.2, 0.1)),
        Case("random θ, reward below the baseline (the arm is pushed down)",
             (rng.standard_normal(6), 3, -0.5, 0.4, 0.5)),
        Case("random θ, no baseline", (rng.standard_normal(5), 0, 2.0, 0.0, 0.05)),
        Case("large θ (softmax must not overflow)", (np.array([800.0, 0.0, -3.0]), 1, 1.0, 0.0, 0.1)),
        Case("reward equal to the baseline: no change", (rng.standard_normal(3), 2, 0.7, 0.7, 1.0)),
    ]


def _reinforce_without_baseline(theta, action, reward, baseline, lr):
    return reinforce_step(theta, action, reward, 0.0, lr)


def _reinforce_sign_flipped(theta, action, reward, baseline, lr):
    grad = softmax(np.asarray(theta, dtype=float))
    grad[action] -= 1.0  # π - e_a: gradient descent on the return
    return np.asarray(theta, dtype=float) + lr * (reward - baseline) * grad


def _reinforce_without_normaliser(theta, action, reward, baseline, lr):
    theta = np.array(theta, dtype=float)
    theta[action] += lr * (reward - baseline)  # ∇ of θ_a alone, forgetting ∇ log Σ exp θ
    return theta


register(Exercise(
    name="reinforce_step",
    chapter="01",
    summary="one REINFORCE step θ + lr (r - b)(e_a - softmax θ) for a softmax bandit policy",
    reference=reinforce_step,
    cases=_reinforce_cases,
    wrong=(_reinforce_without_baseline, _reinforce_sign_flipped, _reinforce_without_normaliser),
))

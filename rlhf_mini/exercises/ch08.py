"""Chapter 8 (the RLHF objective): the KL estimators, the per-token RLHF reward, and the closed-form
optimal policy."""

from __future__ import annotations

import numpy as np
import torch

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.losses import kl_penalty
from rlhf_mini.ppo import per_token_rewards


def _kl_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    near = torch.log_softmax(torch.randn(3, 7, generator=gen), -1)
    return [
        Case("random log-probs, π close to π_ref", (near, near + 0.05 * torch.randn(3, 7, generator=gen))),
        Case("random log-probs, π far from π_ref", (torch.randn(4, 5, generator=gen) - 2.0,
                                                    torch.randn(4, 5, generator=gen) - 2.0)),
        Case("π equal to π_ref: every estimate is 0", (near, near.clone())),
    ]


def _kl_reference(logprobs: torch.Tensor, ref_logprobs: torch.Tensor):
    return tuple(kl_penalty(logprobs, ref_logprobs, kind) for kind in ("k1", "k2", "k3"))


def _kl_sign_flipped(logprobs, ref_logprobs):
    log_ratio = logprobs - ref_logprobs  # the ratio upside down
    return -log_ratio, 0.5 * log_ratio**2, torch.expm1(log_ratio) - log_ratio


def _kl_k3_without_minus_one(logprobs, ref_logprobs):
    log_ratio = ref_logprobs - logprobs
    return -log_ratio, 0.5 * log_ratio**2, torch.exp(log_ratio) - log_ratio


register(Exercise(
    name="kl_estimators",
    chapter="08",
    summary="the k1, k2 and k3 estimators of KL(π‖π_ref) from per-token log-probs",
    reference=_kl_reference,
    cases=_kl_cases,
    wrong=(_kl_sign_flipped, _kl_k3_without_minus_one),
))


# ---------------------------------------------------------------------------------------------
# the per-token RLHF reward: −β·KL on every response token, the score on the last one
# ---------------------------------------------------------------------------------------------


def _reward_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1)

    def case(mask_rows: list[list[int]], beta: float):
        mask = torch.tensor(mask_rows)
        kl = torch.randn(mask.shape, generator=gen)  # values outside the mask must not matter
        scores = 3.0 * torch.randn(len(mask_rows), generator=gen)
        return kl, scores, mask, beta

    return [
        Case("left-padded rows, responses end at the last column, β = 0.1",
             case([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]], 0.1)),
        Case("responses followed by padding: the last response token is not the last column, β = 0.05",
             case([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0]], 0.05)),
        Case("a one-token response: KL penalty and score on the same token, β = 0.2",
             case([[0, 0, 0, 1], [0, 1, 1, 1]], 0.2)),
        Case("β = 0: only the score, on the last response token", case([[0, 1, 1, 0], [1, 1, 1, 1]], 0.0)),
    ]


def _reward_score_on_last_column(kl, scores, response_mask, beta):
    rewards = torch.where(response_mask.bool(), -beta * kl, torch.zeros_like(kl))
    rewards[:, -1] += scores  # assumes every response ends at the last column
    return rewards


def _reward_kl_sign_flipped(kl, scores, response_mask, beta):
    return per_token_rewards(-kl, scores, response_mask, beta)  # a bonus for drifting away


def _reward_penalty_on_padding(kl, scores, response_mask, beta):
    rewards = -beta * kl  # the KL of prompt and padding positions penalised too
    last = (response_mask.long() * torch.arange(response_mask.shape[1])).argmax(1)
    rewards[torch.arange(len(last)), last] += scores
    return rewards


register(Exercise(
    name="per_token_rewards",
    chapter="08",
    summary="the per-token RLHF reward: −β·kl_t on response tokens plus the score on the last one",
    reference=per_token_rewards,
    cases=_reward_cases,
    wrong=(_reward_score_on_last_column, _reward_kl_sign_flipped, _reward_penalty_on_padding),
))


# ---------------------------------------------------------------------------------------------
# the optimum of the objective: π* ∝ π_ref · exp(r / β), and its value β log Z
# ---------------------------------------------------------------------------------------------


def _optimal_reference(ref_probs: np.ndarray, rewards: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    with np.errstate(divide="ignore"):  # π_ref(y) = 0 gives log 0 = −inf, and π*(y) = 0
        logits = np.log(ref_probs) + rewards / beta
    log_z = float(np.logaddexp.reduce(logits))
    return np.exp(logits - log_z), log_z


def _optimal_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    return [
        Case("six responses, β = 0.5", (rng.dirichlet(np.ones(6)), rng.normal(size=6), 0.5)),
        Case("ten responses, β = 2", (rng.dirichlet(np.ones(10)), rng.normal(size=10), 2.0)),
        Case("small β, large rewards: exp(r/β) overflows unless you subtract the max",
             (np.array([0.5, 0.3, 0.2]), np.array([800.0, 790.0, -5.0]), 0.5)),
        Case("π_ref(y) = 0 for one response: π* cannot put mass there", (np.array([0.0, 0.6, 0.4]),
                                                                          np.array([5.0, 1.0, 0.0]), 1.0)),
        Case("equal rewards: π* = π_ref and log Z = r/β", (np.array([0.1, 0.2, 0.7]), np.full(3, 1.5), 0.3)),
    ]


def _optimal_times_beta(ref_probs, rewards, beta):
    return _optimal_reference(ref_probs, rewards * beta * beta, beta)  # e^{β r} instead of e^{r/β}


def _optimal_without_reference(ref_probs, rewards, beta):
    return _optimal_reference(np.ones_like(ref_probs) / len(ref_probs), rewards, beta)  # softmax(r/β)


def _optimal_naive_exp(ref_probs, rewards, beta):
    with np.errstate(over="ignore", invalid="ignore"):
        weights = ref_probs * np.exp(rewards / beta)
        z = weights.sum()
        return weights / z, float(np.log(z))


register(Exercise(
    name="optimal_rlhf_policy",
    chapter="08",
    summary="the closed-form optimum π* ∝ π_ref·exp(r/β) on a few responses, and log Z",
    reference=_optimal_reference,
    cases=_optimal_cases,
    wrong=(_optimal_times_beta, _optimal_without_reference, _optimal_naive_exp),
    atol=1e-8,
))

"""Chapter 9 (PPO): GAE, the clipped surrogate, the clipped value loss and the adaptive KL controller."""

from __future__ import annotations

import numpy as np
import torch

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.ppo import AdaptiveKLController, compute_gae, ppo_policy_loss, ppo_value_loss


def _spans(lengths: list[tuple[int, int]], width: int) -> torch.Tensor:
    """A [B, width] 0/1 mask with row i set on [start, end) for (start, end) = lengths[i]."""
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, (start, end) in enumerate(lengths):
        mask[row, start:end] = 1
    return mask


# --------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------


def _gae_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(9)
    full = torch.ones(3, 6, dtype=torch.long)
    padded = _spans([(2, 5), (0, 4), (3, 7)], 7)  # left padding, right padding, both
    rlhf_rewards = torch.zeros(2, 6)
    rlhf_rewards[:, 1:] = -0.01 * torch.rand(2, 5, generator=gen)
    rlhf_rewards[0, 4] += 1.5  # the score lands on each row's last response token
    rlhf_rewards[1, 5] -= 0.7
    return [
        Case("random rewards and values, no padding, γ = 1, λ = 0.95",
             (torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen), full, 1.0, 0.95)),
        Case("padding left and right (values there are nonzero), γ = 0.9, λ = 0.8",
             (torch.randn(3, 7, generator=gen), torch.randn(3, 7, generator=gen), padded, 0.9, 0.8)),
        Case("the RLHF shape: small KL penalties and the score on the last response token",
             (rlhf_rewards, torch.randn(2, 6, generator=gen), _spans([(1, 5), (2, 6)], 6), 1.0, 0.95)),
        Case("responses of a single token", (torch.randn(2, 4, generator=gen), torch.randn(2, 4, generator=gen),
                                             _spans([(3, 4), (1, 2)], 4), 1.0, 0.95)),
        Case("λ = 0: the advantage is the one-step TD error δ_t",
             (torch.randn(2, 5, generator=gen), torch.randn(2, 5, generator=gen), _spans([(0, 5), (1, 4)], 5),
              0.99, 0.0)),
        Case("γ = λ = 1: the advantage is the reward-to-go minus V_t",
             (torch.randn(2, 5, generator=gen), torch.randn(2, 5, generator=gen), _spans([(0, 5), (2, 5)], 5),
              1.0, 1.0)),
    ]


def _gae_loop(rewards, values, mask, gamma, lam, *, mask_next=True, next_offset=1, discount=True):
    """GAE with switches for the wrong answers below (all on: the right answer)."""
    m = mask.to(values.dtype)
    batch, length = values.shape
    advantages = torch.zeros_like(values)
    last = torch.zeros(batch, dtype=values.dtype)
    for t in reversed(range(length)):
        nxt = t + next_offset
        next_m = m[:, nxt] if nxt < length else torch.zeros(batch)
        next_v = values[:, nxt] if nxt < length else torch.zeros(batch)
        if not mask_next:  # the value after the response's end is read from the padding
            next_m = torch.ones(batch) if nxt < length else torch.zeros(batch)
        delta = rewards[:, t] * m[:, t] + gamma * next_v * next_m - values[:, t] * m[:, t]
        last = delta + (gamma * lam if discount else 1.0) * next_m * last
        advantages[:, t] = last * m[:, t]
    return advantages, advantages + values


def _gae_bootstraps_from_padding(rewards, values, mask, gamma=1.0, lam=0.95):
    return _gae_loop(rewards, values, mask, gamma, lam, mask_next=False)


def _gae_bootstrap_off_by_one(rewards, values, mask, gamma=1.0, lam=0.95):
    # δ_t = r_t + γ V_t − V_t: the bootstrap reads the current state, not the next one
    return _gae_loop(rewards, values, mask, gamma, lam, next_offset=0)


def _gae_without_gamma_lambda(rewards, values, mask, gamma=1.0, lam=0.95):
    return _gae_loop(rewards, values, mask, gamma, lam, discount=False)


register(Exercise(
    name="compute_gae",
    chapter="09",
    summary="GAE: δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1} on each response span; R_t = A_t + V_t",
    reference=compute_gae,
    cases=_gae_cases,
    wrong=(_gae_bootstraps_from_padding, _gae_bootstrap_off_by_one, _gae_without_gamma_lambda),
))


# --------------------------------------------------------------------------------------------
# The clipped surrogate
# --------------------------------------------------------------------------------------------


def _policy_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(19)
    old = -2.0 + torch.randn(3, 6, generator=gen)
    mask = _spans([(1, 6), (2, 5), (0, 4)], 6)
    garbage = torch.where(mask.bool(), torch.zeros(3, 6), 50.0 * torch.randn(3, 6, generator=gen))
    return [
        Case("π close to π_old: few tokens clipped",
             (old + 0.05 * torch.randn(3, 6, generator=gen), old, torch.randn(3, 6, generator=gen),
              torch.ones(3, 6, dtype=torch.long), 0.2)),
        Case("π far from π_old, padding holds large junk values, ε = 0.1",
             (old + 0.5 * torch.randn(3, 6, generator=gen) + garbage, old - garbage,
              torch.randn(3, 6, generator=gen) + garbage, mask, 0.1)),
        Case("advantages of both signs with ρ well outside [1 − ε, 1 + ε]",
             (old + torch.tensor([[0.5, -0.5, 0.5, -0.5, 0.0, 0.3]]).expand(3, 6), old,
              torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0, -2.0]]).expand(3, 6).clone(), mask, 0.2)),
        Case("π = π_old (the first minibatch): ρ = 1, loss = −mean(A), nothing clipped",
             (old.clone(), old.clone(), torch.randn(3, 6, generator=gen), mask, 0.2)),
    ]


def _surrogate(logprobs, old_logprobs, advantages, mask, clip_range, *, pick=torch.maximum, clip=True,
               over_padding=False):
    m = mask.bool()
    zero = torch.zeros_like(logprobs)
    log_ratio = torch.where(m, logprobs - old_logprobs, zero)
    advantages = torch.where(m, advantages, zero)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * (torch.clamp(ratio, 1 - clip_range, 1 + clip_range) if clip else ratio)

    def mean(x):
        return x.mean() if over_padding else torch.where(m, x, zero).sum() / m.sum()

    stats = {"clipfrac": mean((clipped > unclipped).float()), "approx_kl": mean((ratio - 1) - log_ratio),
             "ratio_mean": mean(ratio)}
    return mean(pick(unclipped, clipped)), stats


def _surrogate_min_of_negated_terms(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
    return _surrogate(logprobs, old_logprobs, advantages, mask, clip_range, pick=torch.minimum)


def _surrogate_without_clipping(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
    return _surrogate(logprobs, old_logprobs, advantages, mask, clip_range, clip=False)


def _surrogate_mean_over_padding(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
    return _surrogate(logprobs, old_logprobs, advantages, mask, clip_range, over_padding=True)


register(Exercise(
    name="ppo_policy_loss",
    chapter="09",
    summary="PPO's clipped surrogate: masked mean of max(−ρA, −clip(ρ, 1 ± ε)A), with clipfrac, approx_kl, ratio_mean",
    reference=ppo_policy_loss,
    cases=_policy_cases,
    wrong=(_surrogate_min_of_negated_terms, _surrogate_without_clipping, _surrogate_mean_over_padding),
))


# --------------------------------------------------------------------------------------------
# The clipped value loss
# --------------------------------------------------------------------------------------------


def _value_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(29)
    old = torch.randn(3, 6, generator=gen)
    mask = _spans([(1, 6), (2, 5), (0, 4)], 6)
    junk = torch.where(mask.bool(), torch.zeros(3, 6), 30.0 * torch.randn(3, 6, generator=gen))
    return [
        Case("V near V_old: the clip is rarely active",
             (old + 0.05 * torch.randn(3, 6, generator=gen), old, torch.randn(3, 6, generator=gen),
              torch.ones(3, 6, dtype=torch.long), 0.2)),
        Case("V far from V_old, padding holds large junk values",
             (old + torch.randn(3, 6, generator=gen) + junk, old - junk, old + torch.randn(3, 6, generator=gen),
              mask, 0.2)),
        Case("V moved past V_old ± ε towards R, and past it away from R, ε = 0.5",
             (old + torch.tensor([[1.0, -1.0, 1.0, -1.0, 0.2, 0.0]]).expand(3, 6), old,
              old + torch.tensor([[2.0, -2.0, -2.0, 2.0, 0.1, 0.0]]).expand(3, 6), mask, 0.5)),
        Case("V = V_old: the loss is ½ · mean((V − R)²)", (old.clone(), old.clone(),
                                                          torch.randn(3, 6, generator=gen), mask, 0.2)),
    ]


def _value_loss(values, old_values, returns, mask, clip_range_value, *, pick=torch.maximum, half=True):
    m = mask.bool()
    zero = torch.zeros_like(values)
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    losses = pick((values - returns) ** 2, (clipped - returns) ** 2)
    return (0.5 if half else 1.0) * torch.where(m, losses, zero).sum() / m.sum()


def _value_loss_min_of_terms(values, old_values, returns, mask, clip_range_value=0.2):
    return _value_loss(values, old_values, returns, mask, clip_range_value, pick=torch.minimum)


def _value_loss_without_clipping(values, old_values, returns, mask, clip_range_value=0.2):
    return _value_loss(values, old_values, returns, mask, clip_range_value, pick=lambda a, b: a)


def _value_loss_without_the_half(values, old_values, returns, mask, clip_range_value=0.2):
    return _value_loss(values, old_values, returns, mask, clip_range_value, half=False)


register(Exercise(
    name="ppo_value_loss",
    chapter="09",
    summary="PPO's clipped value loss: ½ · masked mean of max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)",
    reference=ppo_value_loss,
    cases=_value_cases,
    wrong=(_value_loss_min_of_terms, _value_loss_without_clipping, _value_loss_without_the_half),
))


# --------------------------------------------------------------------------------------------
# The adaptive KL controller
# --------------------------------------------------------------------------------------------


def adaptive_kl_reference(beta: float, current_kl: float, n_steps: int, target: float, horizon: int) -> float:
    """β after one update of ``ppo.AdaptiveKLController`` (Ziegler et al. 2019)."""
    controller = AdaptiveKLController(beta, target, horizon)
    controller.update(current_kl, n_steps)
    return controller.beta


def _kl_controller_cases() -> list[Case]:
    return [
        Case("KL far above target: the error is clipped at +0.2", (0.1, 12.0, 64, 6.0, 10_000)),
        Case("KL far below target: the error is clipped at −0.2", (0.15, 0.0, 16, 1.5, 250)),
        Case("KL 10% above target: error 0.1, not clipped", (0.1, 1.65, 64, 1.5, 250)),
        Case("KL 5% below target, a whole horizon of samples", (0.2, 5.7, 100, 6.0, 100)),
        Case("KL exactly on target: β does not move", (0.05, 3.0, 64, 3.0, 1000)),
    ]


def _kl_update_without_clip(beta, current_kl, n_steps, target, horizon):
    return beta * (1.0 + (current_kl / target - 1.0) * n_steps / horizon)


def _kl_update_ratio_upside_down(beta, current_kl, n_steps, target, horizon):
    return beta * (1.0 + float(np.clip(target / current_kl - 1.0 if current_kl else 0.2, -0.2, 0.2))
                   * n_steps / horizon)


def _kl_update_ignores_horizon(beta, current_kl, n_steps, target, horizon):
    return beta * (1.0 + float(np.clip(current_kl / target - 1.0, -0.2, 0.2)))


register(Exercise(
    name="adaptive_kl_update",
    chapter="09",
    summary="the adaptive KL controller: β ← β · (1 + clip(KL/target − 1, −0.2, 0.2) · n_steps / horizon)",
    reference=adaptive_kl_reference,
    cases=_kl_controller_cases,
    wrong=(_kl_update_without_clip, _kl_update_ratio_upside_down, _kl_update_ignores_horizon),
    atol=1e-9,
    rtol=1e-9,
))

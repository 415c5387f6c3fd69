"""The losses of RLHF, one plain function each: reward modelling, PPO (with GAE), KL penalties, DPO.

Conventions used throughout:

* Per-token tensors have shape ``[B, T]`` (batch, sequence position).
* ``mask`` is a 0/1 (float or bool) tensor of the same shape marking the *response* tokens, the
  only positions a loss is averaged over. Values at positions outside the mask never reach a
  result, even when they are NaN or inf (they are removed with ``torch.where``, not multiplied by 0).
* Every function checks its input and raises ``ValueError`` naming the offending argument:
  mismatched shapes, an empty batch, an empty mask, or NaN/inf values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DPO_LOSS_TYPES",
    "KL_ESTIMATORS",
    "bradley_terry_loss",
    "compute_gae",
    "dpo_loss",
    "kl_penalty",
    "masked_mean",
    "masked_var",
    "ppo_policy_loss",
    "ppo_value_loss",
    "whiten",
]

KL_ESTIMATORS = ("k1", "k2", "k3", "abs")
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_nonempty(name: str, x: Tensor) -> None:
    if x.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); the batch has no elements")


def _check_same_shape(**tensors: Tensor) -> None:
    names = list(tensors)
    first = names[0]
    for name in names[1:]:
        if tensors[name].shape != tensors[first].shape:
            raise ValueError(
                f"{name} has shape {tuple(tensors[name].shape)} but {first} has shape "
                f"{tuple(tensors[first].shape)}; they must match"
            )


def _check_finite(name: str, x: Tensor, where: Tensor | None = None) -> None:
    """Raise if ``x`` holds NaN or inf (only at positions where ``where`` is true, if given)."""
    bad = ~torch.isfinite(x.detach())
    if where is not None:
        bad = bad & where
    if bool(bad.any()):
        count = int(bad.sum())
        raise ValueError(f"{name} contains {count} NaN or inf value(s)")


def _as_bool_mask(name: str, mask: Tensor) -> Tensor:
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must contain only 0 and 1")
    return mask != 0


def _zero_outside(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` with 0 outside the mask. ``torch.where`` (not ``x * mask``) so that NaN/inf there
    reach neither the result nor, through a 0 · NaN product, the gradient."""
    if mask is None:
        return x
    return torch.where(mask != 0, x, torch.zeros_like(x))


def _check_per_token(mask: Tensor, **tensors: Tensor) -> Tensor:
    """Shared checks for ``[B, T]`` per-token inputs; returns the mask as bool."""
    _check_tensor("mask", mask)
    for name, x in tensors.items():
        _check_tensor(name, x)
    _check_same_shape(**tensors, mask=mask)
    _check_nonempty("mask", mask)
    return _as_bool_mask("mask", mask)


# --------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------


def masked_mean(x: Tensor, mask: Tensor | None = None, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1.

        masked_mean(x, m) = Σ_t m_t x_t / Σ_t m_t

    With ``dim=None`` the mean is over every element and an all-zero mask raises ``ValueError``
    (a mean of nothing is undefined). With ``dim`` given, rows with no masked element give 0.
    """
    _check_tensor("x", x)
    if mask is None:
        _check_nonempty("x", x)
        return x.mean() if dim is None else x.mean(dim=dim)
    _check_tensor("mask", mask)
    _check_same_shape(x=x, mask=mask)
    _check_nonempty("x", x)
    m = _as_bool_mask("mask", mask)
    total = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        count = m.sum()
        if int(count) == 0:
            raise ValueError("mask has no nonzero entries; the masked mean is undefined")
        return total.sum() / count
    return total.sum(dim=dim) / m.sum(dim=dim).clamp(min=1)


def masked_var(x: Tensor, mask: Tensor | None = None, unbiased: bool = False) -> Tensor:
    """Variance of ``x`` over the positions where ``mask`` is 1.

        μ = masked_mean(x, m),   σ² = masked_mean((x − μ)², m)   [· n / (n − 1) if unbiased]

    The default (biased, divide by n) is what ``tf.nn.moments`` gives, which lm-human-preferences
    uses to whiten. ``unbiased=True`` applies Bessel's correction (TRL's default); it needs n ≥ 2.
    """
    mean = masked_mean(x, mask)
    centered_sq = (_zero_outside(x, mask) - mean) ** 2
    var = masked_mean(centered_sq, mask)
    if unbiased:
        n = x.numel() if mask is None else int((mask != 0).sum())
        if n < 2:
            raise ValueError(f"unbiased variance needs at least 2 masked elements, got {n}")
        var = var * n / (n - 1)
    return var


def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True) -> Tensor:
    """Normalise ``x`` to zero mean and unit variance over the masked positions.

        x̂ = (x − μ) / √(σ² + 1e-8)          (shift_mean=True)
        x̂ = (x − μ) / √(σ² + 1e-8) + μ      (shift_mean=False: rescale only, keep the mean)

    As in lm-human-preferences (``whiten`` in ``lm_human_preferences/utils/core.py``), σ² is the
    biased variance. PPO whitens advantages with ``shift_mean=True``; whitening rewards with
    ``shift_mean=False`` keeps their sign information. Positions outside the mask are set to 0.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    x = _zero_outside(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    if mask is not None:
        whitened = torch.where(mask != 0, whitened, torch.zeros_like(whitened))
    return whitened


# --------------------------------------------------------------------------------------------
# Reward modelling
# --------------------------------------------------------------------------------------------


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    margin: Tensor | float | None = None,
) -> Tensor:
    """Negative log-likelihood of the Bradley–Terry preference model (Ouyang et al. 2022, eq. 1).

        P(y_c ≻ y_r | x) = σ(r(x, y_c) − r(x, y_r))
        loss = −E[ log σ(r_c − r_r − m) ]

    ``margin`` m (Llama 2, Touvron et al. 2023, eq. 2) asks the reward gap to exceed m; it is a
    scalar or a per-pair tensor. ``logsigmoid`` keeps the loss finite for very negative gaps.
    Equal rewards give loss ln 2: the model is indifferent.
    """
    _check_tensor("chosen_rewards", chosen_rewards)
    _check_tensor("rejected_rewards", rejected_rewards)
    _check_same_shape(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    _check_nonempty("chosen_rewards", chosen_rewards)
    _check_finite("chosen_rewards", chosen_rewards)
    _check_finite("rejected_rewards", rejected_rewards)
    gap = chosen_rewards - rejected_rewards
    if margin is not None:
        if isinstance(margin, Tensor):
            if margin.dim() > 0 and margin.shape != gap.shape:
                raise ValueError(
                    f"margin has shape {tuple(margin.shape)} but chosen_rewards has shape "
                    f"{tuple(gap.shape)}; pass a scalar or one margin per pair"
                )
            _check_finite("margin", margin)
        elif not torch.isfinite(torch.tensor(float(margin))):
            raise ValueError(f"margin must be finite, got {margin}")
        gap = gap - margin
    return -F.logsigmoid(gap).mean()


# --------------------------------------------------------------------------------------------
# PPO
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def compute_gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, eq. 16), masked per token.

        δ_t = r_t + γ V_{t+1} − V_t
        A_t = δ_t + γλ A_{t+1}          (= Σ_l (γλ)^l δ_{t+l})
        R_t = A_t + V_t                 (the value target)

    ``rewards``, ``values`` and ``mask`` are ``[B, T]``. The response occupies one contiguous span
    of each row (left padding before it, right padding after it are 0 in ``mask``). The episode
    ends at the last masked token: the value after it, V_{T_end+1}, counts as 0 and nothing after
    it flows back. Positions outside the mask get advantage 0 and return equal to their value (so
    a value loss there is 0 even without a mask). Runs under ``no_grad``: advantages and returns
    are targets, not something to differentiate through.
    """
    m = _check_per_token(mask, rewards=rewards, values=values)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape [B, T], got {tuple(rewards.shape)}")
    _check_finite("rewards", rewards, where=m)
    _check_finite("values", values, where=m)
    # A row's mask must be one contiguous span: count the 0→1 switches (at most one per row).
    starts = (m[:, 1:] & ~m[:, :-1]).sum(dim=1) + m[:, 0].long()
    if bool((starts > 1).any()):
        row = int(torch.nonzero(starts > 1)[0, 0])
        raise ValueError(
            f"mask row {row} is not one contiguous span of response tokens; GAE needs each "
            "response to be a single episode"
        )
    mf = m.to(values.dtype)
    zeros = torch.zeros_like(values)
    rewards = torch.where(m, rewards, zeros)
    values_m = torch.where(m, values, zeros)
    batch, length = values.shape
    advantages = torch.zeros_like(values)
    last_advantage = torch.zeros(batch, dtype=values.dtype, device=values.device)
    for t in reversed(range(length)):
        # next_mask is 0 past the end of the response, which makes V_{T_end+1} = 0 and stops
        # A_{t+1} from leaking across the episode boundary.
        next_mask = mf[:, t + 1] if t + 1 < length else torch.zeros_like(last_advantage)
        next_value = values_m[:, t + 1] if t + 1 < length else torch.zeros_like(last_advantage)
        delta = rewards[:, t] + gamma * next_value * next_mask - values_m[:, t]
        last_advantage = delta + gamma * lam * next_mask * last_advantage
        advantages[:, t] = last_advantage
    advantages = torch.where(m, advantages, zeros)
    returns = advantages + values
    return advantages, returns


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_range: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7), averaged over tokens.

        ρ_t = π_θ(a_t | s_t) / π_old(a_t | s_t) = exp(logprobs − old_logprobs)
        L = masked_mean( max(−ρ_t A_t, −clip(ρ_t, 1 − ε, 1 + ε) A_t) )

    (the max of the negated terms is the paper's min of the objective terms). When the clipped
    branch is the larger loss, the token's gradient is 0: the policy has already moved far enough
    in the direction the advantage asks.

    Returns ``(loss, stats)``; the stats are detached 0-d tensors:

    * ``clipfrac``: fraction of masked tokens where the clipped branch is strictly active.
    * ``approx_kl``: the k3 estimator of KL(π_old ‖ π_θ) on the sampled tokens,
      masked_mean((ρ − 1) − log ρ), which is unbiased and never negative (as in CleanRL).
    * ``ratio_mean``: masked mean of ρ (1 on the first minibatch of each rollout).
    """
    if clip_range <= 0:
        raise ValueError(f"clip_range must be positive, got {clip_range}")
    m = _check_per_token(mask, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    if int(m.sum()) == 0:
        raise ValueError("mask has no nonzero entries; there is no token to train on")
    _check_finite("logprobs", logprobs, where=m)
    _check_finite("old_logprobs", old_logprobs, where=m)
    _check_finite("advantages", advantages, where=m)
    advantages = _zero_outside(advantages, m)
    log_ratio = _zero_outside(logprobs - old_logprobs, m)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logprobs.dtype), m),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, stats


def ppo_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range_value: float = 0.2,
) -> Tensor:
    """PPO's clipped value loss (as in OpenAI baselines ``ppo2`` and lm-human-preferences).

        V_clip = V_old + clip(V − V_old, −ε, ε)
        L_V = ½ · masked_mean( max((V − R)², (V_clip − R)²) )

    The max makes the loss pessimistic: moving V more than ε from V_old earns no reduction.
    """
    if clip_range_value <= 0:
        raise ValueError(f"clip_range_value must be positive, got {clip_range_value}")
    m = _check_per_token(mask, values=values, old_values=old_values, returns=returns)
    if int(m.sum()) == 0:
        raise ValueError("mask has no nonzero entries; there is no token to train on")
    _check_finite("values", values, where=m)
    _check_finite("old_values", old_values, where=m)
    _check_finite("returns", returns, where=m)
    values, old_values, returns = (_zero_outside(x, m) for x in (values, old_values, returns))
    values_clipped = old_values + torch.clamp(
        values - old_values, -clip_range_value, clip_range_value
    )
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (values_clipped - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), m)


# --------------------------------------------------------------------------------------------
# KL penalty
# --------------------------------------------------------------------------------------------


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimators of KL(π ‖ π_ref) from tokens sampled from π.

    From Schulman, "Approximating KL divergence" (2020). With log r = log π_ref(a) − log π(a)
    for a ~ π, so that E_π[r] = 1:

        k1  = −log r                 unbiased, high variance, can be negative per sample
        k2  = ½ (log r)²             biased (exact only to second order), low variance, ≥ 0
        k3  = (r − 1) − log r        unbiased and ≥ 0 (log r ≤ r − 1), low variance
        abs = |log r|                biased, ≥ 0 (used as a penalty by some RLHF codebases)

    Returns the elementwise estimate (same shape as the inputs); the caller averages or sums it
    over response tokens. k3 is computed as ``expm1(log r) − log r`` for accuracy near r = 1.
    """
    _check_tensor("logprobs", logprobs)
    _check_tensor("ref_logprobs", ref_logprobs)
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KL_ESTIMATORS)}")
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    _check_nonempty("logprobs", logprobs)
    _check_finite("logprobs", logprobs)
    _check_finite("ref_logprobs", ref_logprobs)
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        # Clamp away the rounding error that could make an exact-zero term a hair negative.
        return (torch.expm1(log_ratio) - log_ratio).clamp(min=0.0)
    return log_ratio.abs()


# --------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Direct Preference Optimisation losses (Rafailov et al. 2023, eq. 7) and two variants.

    Inputs are ``[B]`` sequence log-probabilities. With the log-ratio difference

        h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))

    the per-example losses are:

    * ``"sigmoid"`` (DPO): −(1 − ε) log σ(βh) − ε log σ(−βh). With label smoothing ε > 0 this is
      conservative DPO (cDPO, Mitchell 2023): the preference label is assumed flipped with
      probability ε. ε = 0 is plain DPO; at init (π = π_ref) every loss is ln 2.
    * ``"ipo"`` (Azar et al. 2023, eq. 17): (h − 1/(2β))². IPO regresses h onto a fixed target
      instead of pushing it to infinity. Pass *length-averaged* log-probabilities (sum over
      response tokens divided by their count) for this loss, as the IPO authors do.
    * ``"hinge"`` (SLiC, Zhao et al. 2023): relu(1 − βh).

    Returns ``(losses [B], chosen_rewards [B], rejected_rewards [B])``; the implicit rewards
    β (log π − log π_ref) are detached, for logging reward accuracy and margins.
    """
    tensors = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
    }
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(
            f"unknown loss_type {loss_type!r}; expected one of {', '.join(DPO_LOSS_TYPES)}"
        )
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    if label_smoothing > 0 and loss_type != "sigmoid":
        raise ValueError(
            f"label_smoothing applies only to loss_type='sigmoid', got loss_type={loss_type!r}"
        )
    for name, x in tensors.items():
        _check_tensor(name, x)
    _check_same_shape(**tensors)
    _check_nonempty("policy_chosen_logps", policy_chosen_logps)
    for name, x in tensors.items():
        _check_finite(name, x)

    chosen_log_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_log_ratio = policy_rejected_logps - ref_rejected_logps
    h = chosen_log_ratio - rejected_log_ratio
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
            -beta * h
        )
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:  # hinge
        losses = torch.relu(1.0 - beta * h)
    chosen_rewards = beta * chosen_log_ratio.detach()
    rejected_rewards = beta * rejected_log_ratio.detach()
    return losses, chosen_rewards, rejected_rewards

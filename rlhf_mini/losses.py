"""The losses several algorithms share, one plain function each: masked statistics, reward
modelling (Bradley–Terry), KL penalties, and the DPO family. (PPO's own GAE and clipped losses live
in ``ppo.py``, beside the loop that uses them.)

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
    "check_finite",
    "check_per_token",
    "dpo_loss",
    "kl_penalty",
    "masked_mean",
    "masked_var",
    "response_nll",
    "whiten",
    "zero_outside",
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


def check_finite(name: str, x: Tensor, where: Tensor | None = None) -> None:
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


def zero_outside(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` with 0 outside the mask. ``torch.where`` (not ``x * mask``) so that NaN/inf there
    reach neither the result nor, through a 0 · NaN product, the gradient."""
    if mask is None:
        return x
    return torch.where(mask != 0, x, torch.zeros_like(x))


def check_per_token(mask: Tensor, **tensors: Tensor) -> Tensor:
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
    centered_sq = (zero_outside(x, mask) - mean) ** 2
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
    x = zero_outside(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    if mask is not None:
        whitened = torch.where(mask != 0, whitened, torch.zeros_like(whitened))
    return whitened


# --------------------------------------------------------------------------------------------
# Supervised fine-tuning
# --------------------------------------------------------------------------------------------


def response_nll(logits: torch.Tensor, labels: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``labels`` at the response positions.

    ``logits[:, t]`` predicts token ``t + 1``, so the targets are ``labels[:, 1:]`` and the mask is
    ``response_mask[:, 1:]``. A label outside the mask never reaches the result (it is removed by
    ``masked_mean`` with ``torch.where``), so prompt and padding tokens carry neither loss nor
    gradient.
    """
    if logits.shape[:2] != labels.shape or labels.shape != response_mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must agree on [B, T]")
    targets = labels[:, 1:]
    mask = response_mask[:, 1:].bool()
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                          reduction="none").view_as(targets)
    return masked_mean(nll, mask)


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
    check_finite("chosen_rewards", chosen_rewards)
    check_finite("rejected_rewards", rejected_rewards)
    gap = chosen_rewards - rejected_rewards
    if margin is not None:
        if isinstance(margin, Tensor):
            if margin.dim() > 0 and margin.shape != gap.shape:
                raise ValueError(
                    f"margin has shape {tuple(margin.shape)} but chosen_rewards has shape "
                    f"{tuple(gap.shape)}; pass a scalar or one margin per pair"
                )
            check_finite("margin", margin)
        elif not torch.isfinite(torch.tensor(float(margin))):
            raise ValueError(f"margin must be finite, got {margin}")
        gap = gap - margin
    return -F.logsigmoid(gap).mean()


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
    check_finite("logprobs", logprobs)
    check_finite("ref_logprobs", ref_logprobs)
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
        check_finite(name, x)

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

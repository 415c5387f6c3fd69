"""Sequence log-probs and preference losses on top of the fused LM-head kernel.

DPO (Rafailov et al., 2023) is a Bradley–Terry model on implicit rewards:

    r(x, y) = β · (log π(y|x) - log π_ref(y|x))
    L = -log σ(r(x, y_w) - r(x, y_l))

so all it needs from the model are summed response log-probs, which `sequence_logprobs_fused`
computes straight from the last hidden states, without the [B, T, V] logits tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from rlhf_mini.kernels.dispatch import Backend, linear_logprobs


def sequence_logprobs_fused(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Σ_t log π(token_t | tokens_<t) over response tokens: hidden [B, T, D] -> fp32 [B].

    The hidden state at position t-1 predicts token t, so token t is scored with hidden[:, t-1];
    response_mask[:, t] (bool or 0/1) says whether token t counts. Position 0 is never scored.
    """
    if hidden.shape[:2] != input_ids.shape or input_ids.shape != response_mask.shape:
        raise ValueError(f"sequence_logprobs_fused: hidden {tuple(hidden.shape)}, input_ids "
                         f"{tuple(input_ids.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must share [B, T]")
    targets = input_ids[:, 1:].masked_fill(~response_mask[:, 1:].bool(), -100)
    token_logps = linear_logprobs(hidden[:, :-1], lm_head_weight, targets,
                                  temperature=temperature, ignore_index=-100, backend=backend)
    return token_logps.sum(-1)  # ignored positions are exactly 0


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    *,
    margin: float = 0.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean of -log σ(s_w - s_l - margin): P(chosen ≻ rejected) = σ(s_w - s_l) (Bradley–Terry).

    label_smoothing ε treats each label as flipped with probability ε (conservative DPO):
    L = -(1-ε) log σ(Δ) - ε log σ(-Δ).
    """
    delta = chosen_scores.float() - rejected_scores.float() - margin
    losses = -(1 - label_smoothing) * F.logsigmoid(delta) - label_smoothing * F.logsigmoid(-delta)
    return losses.mean()


class DPOOutput(NamedTuple):
    loss: torch.Tensor  # scalar
    chosen_rewards: torch.Tensor  # [B], detached: β (log π - log π_ref) on the chosen responses
    rejected_rewards: torch.Tensor  # [B], detached


def fused_dpo_loss(
    chosen_hidden: torch.Tensor,
    rejected_hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    chosen_ids: torch.Tensor,
    rejected_ids: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_mask: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    backend: Backend = "auto",
) -> DPOOutput:
    """DPO sigmoid loss from the policy's last hidden states [B, T, D] (chosen and rejected).

    ref_*_logps [B] are the reference model's summed response log-probs, computed once without
    gradient (e.g. with `sequence_logprobs_fused` on the reference model's hidden states).
    """
    policy_chosen = sequence_logprobs_fused(chosen_hidden, lm_head_weight, chosen_ids,
                                            chosen_mask, temperature=temperature, backend=backend)
    policy_rejected = sequence_logprobs_fused(rejected_hidden, lm_head_weight, rejected_ids,
                                              rejected_mask, temperature=temperature,
                                              backend=backend)
    chosen_rewards = beta * (policy_chosen - ref_chosen_logps.float())
    rejected_rewards = beta * (policy_rejected - ref_rejected_logps.float())
    loss = bradley_terry_loss(chosen_rewards, rejected_rewards, label_smoothing=label_smoothing)
    return DPOOutput(loss, chosen_rewards.detach(), rejected_rewards.detach())

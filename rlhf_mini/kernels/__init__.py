"""Fused LM-head kernels: per-token log-probs, KL and entropy without materialising [N, V] logits.

    linear_logprobs(hidden, W, targets)                    -> log p(target)       [N]
    linear_kl(hidden, W, ref_hidden, ref_W, targets, kind) -> KL estimate (+ H)   [N]
    sequence_logprobs_fused(hidden, W, input_ids, mask)    -> Σ response log p    [B]
    fused_dpo_loss(...), bradley_terry_loss(...)           -> preference losses

Every function takes backend="auto" | "triton" | "reference" (see `dispatch`). The Triton kernels
live in `triton_kernels` and are imported only when first used; the PyTorch references in
`reference`.
"""

from rlhf_mini.kernels.dispatch import (
    interpreter_enabled,
    linear_kl,
    linear_logprobs,
    resolve_backend,
    triton_available,
)
from rlhf_mini.kernels.losses import (
    DPOOutput,
    bradley_terry_loss,
    fused_dpo_loss,
    sequence_logprobs_fused,
)
from rlhf_mini.kernels.reference import (
    kl_estimator,
    linear_kl_reference,
    linear_logprob_stats_reference,
    linear_logprobs_reference,
    naive_linear_logprobs,
)

__all__ = [
    "DPOOutput",
    "bradley_terry_loss",
    "fused_dpo_loss",
    "interpreter_enabled",
    "kl_estimator",
    "linear_kl",
    "linear_kl_reference",
    "linear_logprob_stats_reference",
    "linear_logprobs",
    "linear_logprobs_reference",
    "naive_linear_logprobs",
    "resolve_backend",
    "sequence_logprobs_fused",
    "triton_available",
]

"""Plain PyTorch versions of the LM-head kernels: the specification the Triton code must match.

Notation: hidden h is [N, D], the LM head W is [V, D], temperature T, logits z = h·Wᵀ / T ([N, V]).

    log p(t | h) = z_t - logsumexp(z)            (log-softmax, then gather the target)
    H(p)         = logsumexp(z) - Σ_v p_v z_v    (entropy of the full next-token distribution)

`naive_linear_logprobs` builds all N×V logits at once; for a 50k vocabulary and 8k tokens that is
1.6 GB in fp32 before autograd keeps its copies. `linear_logprob_stats_reference` does the same
maths in row chunks under activation checkpointing, so at most chunk_size×V logits live at a time,
in the forward and in the backward (which recomputes each chunk's logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """h·Wᵀ / T, matmul in the input dtype, softmax maths in fp32 (float64 stays float64)."""
    logits = F.linear(hidden, weight)
    return logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature


def naive_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> torch.Tensor:
    """The textbook path: full logits, log_softmax, gather. [N, D], [V, D], [N] -> [N] (>= fp32)."""
    logits = _logits(hidden, weight, temperature)  # [N, V]: the memory we want to avoid
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, 0)
    logp = logits.log_softmax(-1).gather(-1, safe_targets[:, None]).squeeze(-1)
    return torch.where(valid, logp, 0.0)


def _chunk_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    ignore_index: int,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and entropy for one chunk of rows, with that chunk's full logits."""
    logits = _logits(hidden, weight, temperature)  # [chunk, V]
    log_probs = logits.log_softmax(-1)
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, 0)
    logp = torch.where(valid, log_probs.gather(-1, safe_targets[:, None]).squeeze(-1), 0.0)
    if with_entropy:
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        entropy = torch.where(valid, entropy, 0.0)
    else:
        entropy = torch.zeros_like(logp)
    return logp, entropy


def linear_logprob_stats_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked (log p(target), entropy), each [N] fp32; ignored positions give 0 for both.

    Each chunk runs under `checkpoint`, so autograd stores only the chunk's inputs and recomputes
    its logits in the backward: peak memory is O(chunk_size·V) instead of O(N·V).
    """
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        args = (hidden[start:start + chunk_size], weight, targets[start:start + chunk_size],
                temperature, ignore_index, with_entropy)
        if needs_grad:
            logp, entropy = checkpoint(_chunk_stats, *args, use_reentrant=False)
        else:
            logp, entropy = _chunk_stats(*args)
        logps.append(logp)
        entropies.append(entropy)
    if not logps:  # N = 0: empty, but still in the graph, so that a loss built on it has a backward
        empty = (hidden @ weight[:1].T).squeeze(-1).to(torch.promote_types(hidden.dtype, torch.float32)) * 0
        return empty, empty
    return torch.cat(logps), torch.cat(entropies)


def linear_logprobs_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Chunked log p(target): [N, D], [V, D], [N] -> [N] fp32."""
    logp, _ = linear_logprob_stats_reference(hidden, weight, targets, temperature=temperature,
                                             ignore_index=ignore_index, chunk_size=chunk_size)
    return logp


def kl_estimator(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimators of KL(π ‖ π_ref) from one sample y ~ π (Schulman's k1, k2, k3).

    With log r = log π_ref(y) - log π(y):
        k1 = -log r                 unbiased, can be negative, high variance
        k2 = ½ (log r)²             biased, always ≥ 0, low variance
        k3 = (r - 1) - log r        unbiased and always ≥ 0
    """
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio  # expm1 keeps precision when r ≈ 1
    raise ValueError(f"kl kind must be 'k1', 'k2' or 'k3', got {kind!r}")


def linear_kl_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ref_hidden: torch.Tensor,
    ref_weight: torch.Tensor,
    targets: torch.Tensor,
    kind: str = "k3",
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked (per-token KL estimate, policy entropy); the reference head gets no gradient."""
    logp, entropy = linear_logprob_stats_reference(
        hidden, weight, targets, temperature=temperature, ignore_index=ignore_index,
        with_entropy=with_entropy, chunk_size=chunk_size)
    with torch.no_grad():
        ref_logp, _ = linear_logprob_stats_reference(
            ref_hidden, ref_weight, targets, temperature=temperature,
            ignore_index=ignore_index, chunk_size=chunk_size)
    kl = kl_estimator(logp, ref_logp, kind)
    return torch.where(targets != ignore_index, kl, 0.0), entropy

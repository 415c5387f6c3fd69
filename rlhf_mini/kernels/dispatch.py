"""Choose between the Triton kernels and the PyTorch reference, then call it.

backend="auto":      Triton on CUDA tensors; on CPU tensors Triton's interpreter when
                     TRITON_INTERPRET=1, else the PyTorch reference.
backend="triton":    the Triton kernel or a RuntimeError saying why it cannot run (a test that
                     claims to test the kernel must never silently get the reference).
backend="reference": the chunked PyTorch reference.

Triton is imported lazily, on the first Triton call: `import rlhf_mini` never imports it, and
TRITON_INTERPRET set before that first call still takes effect.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import Literal

import torch

from rlhf_mini.kernels.reference import kl_estimator, linear_logprob_stats_reference

Backend = Literal["auto", "triton", "reference"]
_TRITON_MODULE = "rlhf_mini.kernels.triton_kernels"


def triton_available() -> bool:
    """True when the `triton` package is installed (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """Whether the Triton kernels run (or will run) in Triton's CPU interpreter.

    Triton decides this when a kernel is decorated, so once the kernels module is imported its
    own flag is what counts; before that, the environment variable does."""
    module = sys.modules.get(_TRITON_MODULE)
    if module is not None:
        return module.INTERPRET
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_kernels() -> ModuleType:
    import rlhf_mini.kernels.triton_kernels as kernels

    return kernels


def resolve_backend(backend: Backend, device: torch.device) -> Literal["triton", "reference"]:
    """Turn "auto" into a concrete backend; raise if "triton" was asked for but cannot run."""
    if backend == "reference":
        return "reference"
    if backend not in ("auto", "triton"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    if not triton_available():
        if backend == "triton":
            raise RuntimeError("backend='triton' but the `triton` package is not installed")
        return "reference"
    if device.type == "cuda":
        return "triton"
    if backend == "triton":
        if not interpreter_enabled():
            raise RuntimeError(
                f"backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before the "
                f"kernels are first imported; got tensors on {device}")
        return "triton"
    # "auto" on CPU: the interpreter is 100-1000x slower than PyTorch, so only when asked for now.
    env_asks = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return "triton" if env_asks and interpreter_enabled() else "reference"


def _check_head(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                where: str) -> None:
    if hidden.shape[-1] != weight.shape[-1] or weight.dim() != 2:
        raise ValueError(f"{where}: hidden [..., D] and weight [V, D] disagree: "
                         f"{tuple(hidden.shape)} vs {tuple(weight.shape)}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"{where}: targets {tuple(targets.shape)} must match hidden's leading "
                         f"dims {tuple(hidden.shape[:-1])}")
    if not hidden.dtype.is_floating_point:
        raise ValueError(f"{where}: hidden dtype {hidden.dtype} is not a floating-point type")
    if hidden.dtype != weight.dtype or hidden.device != weight.device:
        raise ValueError(f"{where}: hidden ({hidden.dtype}, {hidden.device}) and weight "
                         f"({weight.dtype}, {weight.device}) differ in dtype or device")


def _logprob_stats(hidden, weight, targets, ref_hidden, ref_weight, *, temperature, ignore_index,
                   with_entropy, backend, tiles, where):
    """Shared body: returns (logp, entropy, ref_logp) with hidden's leading shape."""
    _check_head(hidden, weight, targets, where)
    if ref_hidden is not None:
        _check_head(ref_hidden, ref_weight, targets, where + " (reference head)")
        if ref_weight.shape[0] != weight.shape[0]:
            raise ValueError(f"{where}: policy vocab {weight.shape[0]} != reference vocab "
                             f"{ref_weight.shape[0]}")
    if temperature <= 0:
        raise ValueError(f"{where}: temperature must be > 0, got {temperature}")
    in_vocab = (targets >= 0) & (targets < weight.shape[0])
    if not bool(((targets == ignore_index) | in_vocab).all()):  # one host sync, worth the clarity
        raise ValueError(f"{where}: targets must lie in [0, {weight.shape[0]}) or equal "
                         f"ignore_index={ignore_index}")
    lead_shape = targets.shape
    hidden2d = hidden.reshape(-1, hidden.shape[-1])
    targets1d = targets.reshape(-1)
    ref_hidden2d = None if ref_hidden is None else ref_hidden.reshape(-1, ref_hidden.shape[-1])

    # no rows: nothing to tile (the Triton grid and chunk sizes divide by N); the reference is exact
    if resolve_backend(backend, hidden.device) == "triton" and hidden2d.shape[0] > 0:
        if hidden.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"{where}: the Triton kernels take fp32, bf16 or fp16, got "
                             f"{hidden.dtype} (use backend='reference' for float64)")
        logp, entropy, ref_logp = _triton_kernels().linear_logprob_stats_triton(
            hidden2d, weight, targets1d, ref_hidden=ref_hidden2d, ref_weight=ref_weight,
            temperature=temperature, ignore_index=ignore_index, with_entropy=with_entropy,
            tiles=tiles)
    else:
        logp, entropy = linear_logprob_stats_reference(
            hidden2d, weight, targets1d, temperature=temperature, ignore_index=ignore_index,
            with_entropy=with_entropy)
        ref_logp = None
        if ref_hidden2d is not None:
            with torch.no_grad():
                ref_logp, _ = linear_logprob_stats_reference(
                    ref_hidden2d, ref_weight, targets1d, temperature=temperature,
                    ignore_index=ignore_index)
    reshape = lambda x: None if x is None else x.reshape(lead_shape)
    return reshape(logp), reshape(entropy), reshape(ref_logp)


def linear_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    backend: Backend = "auto",
    tiles=None,
) -> torch.Tensor:
    """log p(targets) under softmax(hidden @ lm_head_weightᵀ / temperature), never forming [N, V].

    hidden [..., D], lm_head_weight [V, D], targets [...] (int; `ignore_index` marks positions to
    skip, which get log-prob 0 and no gradient) -> fp32 [...]. Differentiable wrt hidden and
    lm_head_weight. `tiles` (a `triton_kernels.TileConfig`) overrides the Triton tile sizes.
    """
    logp, _, _ = _logprob_stats(hidden, lm_head_weight, targets, None, None,
                                temperature=temperature, ignore_index=ignore_index,
                                with_entropy=False, backend=backend, tiles=tiles,
                                where="linear_logprobs")
    return logp


def linear_kl(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    ref_hidden: torch.Tensor,
    ref_lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    kind: str = "k3",
    *,
    return_entropy: bool = False,
    temperature: float = 1.0,
    ignore_index: int = -100,
    backend: Backend = "auto",
    tiles=None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL(π ‖ π_ref) estimate at the sampled targets, both heads in one vocabulary pass.

    kind: "k1", "k2" or "k3" (see `reference.kl_estimator`). With return_entropy=True also returns
    the policy's full-distribution entropy per token. Shapes as in `linear_logprobs`; gradients
    reach the policy's hidden and lm_head_weight only. Ignored positions give 0.
    """
    if kind not in ("k1", "k2", "k3"):
        raise ValueError(f"linear_kl: kind must be 'k1', 'k2' or 'k3', got {kind!r}")
    logp, entropy, ref_logp = _logprob_stats(
        hidden, lm_head_weight, targets, ref_hidden.detach(), ref_lm_head_weight.detach(),
        temperature=temperature, ignore_index=ignore_index, with_entropy=return_entropy,
        backend=backend, tiles=tiles, where="linear_kl")
    kl = torch.where(targets != ignore_index, kl_estimator(logp, ref_logp, kind), 0.0)
    return (kl, entropy) if return_entropy else kl

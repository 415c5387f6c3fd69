"""Triton kernels for the LM head: fused linear + log-softmax + gather, without [N, V] logits.

Read `rlhf_mini.kernels.reference` first: it computes the same numbers in plain PyTorch. This file
does the same work tile by tile, so memory stays O(N + V·D) instead of O(N·V).

Three all-Triton kernels, no atomics (so the results are deterministic):

1. `_forward_kernel` (one program per block of rows and slice of the vocabulary): streams over
   the slice's vocabulary tiles and keeps, per row, an online log-sum-exp, the target's logit and
   (optionally) Σ p·z for the entropy. It can do a second head (the reference model) in the same
   pass. A few [n_slices, N] partial results are merged on the host; slicing the vocabulary keeps
   every SM busy when N is small.
2. `_grad_hidden_kernel` (one program per block of rows): recomputes each logits tile, turns it into
   dL/dlogits, and accumulates grad_hidden += dlogits @ W.
3. `_grad_weight_kernel` (one program per block of vocabulary rows): recomputes the same tiles and
   accumulates grad_W += dlogitsᵀ @ hidden.

Each program owns the rows of the output it writes, which is why no atomics are needed; the price
is that the backward recomputes the logits twice (once per kernel).

The two all-Triton gradient kernels are the easiest to read and hold no more than a tile of
logits, but their matmuls run well below cuBLAS and they compute the logits twice. The faster
backwards split the work between Triton and cuBLAS, one chunk of vocabulary columns at a time
(close to the idea behind Liger-Kernel's fused linear cross-entropy, which chunks rows instead):

- `backward="fused_dz"` (the default): `_dlogits_recompute_kernel` recomputes the chunk's logits
  tile by tile in registers and writes only dL/dlogits, in the input dtype; two cuBLAS matmuls
  then give grad_W for the chunk's rows and add the chunk's part of grad_hidden.
- `backward="cublas"`: a cuBLAS matmul writes the chunk's fp32 logits, `_dlogits_chunk_kernel`
  turns them into dL/dlogits, then the same two matmuls. One more [N, chunk] buffer, in fp32.

Both hold [N, chunk] values, never [N, V]. On an H200 in bf16 (V = 50257, D = 768) "fused_dz" with
16 MiB chunks ran 8.1 ms at N = 8192 with 130 MiB of peak extra memory, and "cublas" with 64 MiB
chunks 7.6 ms with 226 MiB, against 22.6 ms and 4.7 GiB for full logits
(`benchmarks/kernels.py --sweep` measures every setting). A forward done the same way, matmul
then a reduction kernel, measured slower than `_forward_kernel`, so the forward stays fused.

This module calls `@triton.jit` at import time, so `TRITON_INTERPRET=1` (Triton's CPU interpreter)
must be set before it is first imported; `rlhf_mini.kernels` imports it lazily for that reason.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Whether the kernels below were built for Triton's CPU interpreter. Decided once, at decoration.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Running max starts at -1e30, not -inf: with -inf, a row whose first tile is fully masked would
# compute exp(-inf - (-inf)) = exp(nan). Masked logits themselves are -inf, so exp() gives exactly 0.
NEG_LARGE: tl.constexpr = tl.constexpr(-1e30)


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes and launch options. `tl.dot` needs every block dimension ≥ 16 on a GPU."""

    block_n: int = 64  # rows (tokens) per program
    block_v: int = 128  # vocabulary entries per tile
    block_d: int = 64  # hidden features per inner step of the matmul
    num_warps: int = 8
    split_v: int = 0  # forward: vocabulary slices per row block (0: enough to fill the GPU)
    backward: str = "fused_dz"  # "fused_dz": chunks of dL/dlogits straight from the Triton
    #                            `_dlogits_recompute_kernel`, cuBLAS for the gradient matmuls;
    #                            "cublas": chunks of fp32 logits from cuBLAS, then
    #                            `_dlogits_chunk_kernel`; "triton": the all-Triton gradient kernels
    chunk_bytes: int = 0  # bytes of one backward chunk: of dz ("fused_dz"; 0 = 16 MiB) or of
    #                       fp32 logits ("cublas"; 0 = 64 MiB). Smaller: less memory, more time.

    def __post_init__(self) -> None:
        for name in ("block_n", "block_v", "block_d"):
            size = getattr(self, name)
            if size < 16 or size & (size - 1):
                raise ValueError(f"TileConfig.{name}={size}: must be a power of two and >= 16")
        if self.split_v < 0:
            raise ValueError(f"TileConfig.split_v={self.split_v}: must be >= 0 (0 = automatic)")
        if self.chunk_bytes < 0:
            raise ValueError(f"TileConfig.chunk_bytes={self.chunk_bytes}: must be >= 0 (0 = default)")
        if self.backward not in ("cublas", "fused_dz", "triton"):
            raise ValueError(f"TileConfig.backward={self.backward!r}: 'cublas', 'fused_dz' or "
                             "'triton'")


DEFAULT_TILES = TileConfig()


# ----------------------------------------------------------------------------------------------
# Small building blocks (inlined into the kernels by the Triton compiler)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation.

    UPCAST is set only under the CPU interpreter, whose bf16 matmul is wrong (it multiplies the raw
    bf16 bit patterns); on a GPU the tensor cores take bf16 operands directly.
    PRECISION is "ieee" for fp32 inputs so that fp32 results match PyTorch (no TF32 rounding).
    """
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _logits_tile(
    h_ptr,
    w_ptr,
    rows,
    cols,
    row_ok,
    col_ok,
    D,
    stride_h,
    stride_w,
    inv_temp,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """z[rows, cols] = (hidden[rows] @ W[cols]ᵀ) / temperature as a [BLOCK_N, BLOCK_V] fp32 tile.

    Padding columns (cols >= V) are set to -inf so that they add exactly 0 to any sum of exp(z).
    """
    acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        h = tl.load(h_ptr + rows[:, None] * stride_h + ds[None, :],
                    mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[:, None] * stride_w + ds[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        acc = _dot(h, tl.trans(w), acc, UPCAST, PRECISION)
    z = acc * inv_temp
    return tl.where(col_ok[None, :], z, float("-inf"))


@triton.jit
def _online_update(z, cols, col_ok, targets, m, s, sum_pz, z_target, WITH_ENTROPY: tl.constexpr):
    """Fold one logits tile into the running statistics of each row (the online softmax).

    With m the running max and s = Σ exp(z - m) over the tiles seen so far, a new tile with max
    m_tile gives m' = max(m, m_tile) and s' = s·exp(m - m') + Σ_tile exp(z - m'): the old sum is
    rescaled to the new max, so nothing overflows and no tile is kept. At the end
    logsumexp = m + log(s). The entropy needs E_p[z] = Σ exp(z - m)·z / s, rescaled the same way.
    """
    m_new = tl.maximum(m, tl.max(z, axis=1))
    rescale = tl.exp(m - m_new)
    p_unnormalised = tl.exp(z - m_new[:, None])  # exactly 0 on padding columns (z = -inf)
    s = s * rescale + tl.sum(p_unnormalised, axis=1)
    if WITH_ENTROPY:
        z_finite = tl.where(col_ok[None, :], z, 0.0)  # avoid 0 * -inf = nan on padding
        sum_pz = sum_pz * rescale + tl.sum(p_unnormalised * z_finite, axis=1)
    # The target's logit lives in exactly one tile; elsewhere this adds 0.
    is_target = cols[None, :] == targets[:, None]
    z_target += tl.sum(tl.where(is_target, z, 0.0), axis=1)
    return m_new, s, sum_pz, z_target


@triton.jit
def _dlogits_tile(z, cols, col_ok, targets, lse, mean_z, g_logp, g_entropy, inv_temp,
                  WITH_ENTROPY: tl.constexpr):
    """dL/d(h·Wᵀ) for one tile, from the upstream gradients of log p(target) and of the entropy.

    log p(t) = z_t - logsumexp(z)    =>  d/dz_j = onehot_j - p_j
    H = logsumexp(z) - Σ p·z         =>  d/dz_j = -p_j (z_j - E_p[z])
    and z = h·Wᵀ / temperature contributes the final factor 1/temperature.
    """
    p = tl.exp(z - lse[:, None])  # 0 on padding columns
    onehot = (cols[None, :] == targets[:, None]).to(tl.float32)
    dz = g_logp[:, None] * (onehot - p)
    if WITH_ENTROPY:
        z_finite = tl.where(col_ok[None, :], z, 0.0)
        dz -= g_entropy[:, None] * p * (z_finite - mean_z[:, None])
    return dz * inv_temp


@triton.jit
def _load_row_inputs(rows, row_ok, targets_ptr, lse_ptr, g_logp_ptr, mean_z_ptr, g_entropy_ptr,
                     WITH_ENTROPY: tl.constexpr, BLOCK_N: tl.constexpr):
    """What every backward kernel reads per row: the target id, the forward's logsumexp, the
    upstream gradient of log p(target) and, with the entropy, E_p[z] and its upstream gradient
    (zeros without)."""
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g_logp = tl.load(g_logp_ptr + rows, mask=row_ok, other=0.0)
    mean_z = tl.zeros([BLOCK_N], dtype=tl.float32)
    g_entropy = tl.zeros([BLOCK_N], dtype=tl.float32)
    if WITH_ENTROPY:
        mean_z = tl.load(mean_z_ptr + rows, mask=row_ok, other=0.0)
        g_entropy = tl.load(g_entropy_ptr + rows, mask=row_ok, other=0.0)
    return targets, lse, g_logp, mean_z, g_entropy


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _forward_kernel(
    h_ptr, w_ptr, ref_h_ptr, ref_w_ptr, targets_ptr,
    lse_ptr, z_target_ptr, mean_z_ptr, ref_lse_ptr, ref_z_target_ptr,
    N, V, D, D_REF, COLS_PER_SPLIT,
    stride_h, stride_w, stride_ref_h, stride_ref_w,
    inv_temp,
    HAS_REF: tl.constexpr, WITH_ENTROPY: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """Per row and per slice of the vocabulary: logsumexp(z), z[target], E_p[z] (entropy) and, if
    HAS_REF, the reference head's logsumexp and z[target], all in one sweep over the slice.

    Program (i, j) owns row block i and vocabulary slice j = [j·COLS_PER_SPLIT, (j+1)·COLS_PER_SPLIT)
    and writes its partial results to row j of the [n_splits, N] outputs; `fused_forward` merges
    the slices. With one slice per row block, N = 1k tokens would give 16 programs for 132 SMs."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    rows = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_ok = rows < N
    v_start = split * COLS_PER_SPLIT
    v_stop = tl.minimum(v_start + COLS_PER_SPLIT, V)
    out = split.to(tl.int64) * N + rows  # this slice's row of the [n_splits, N] outputs
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1)

    m = tl.full([BLOCK_N], NEG_LARGE, dtype=tl.float32)
    s = tl.zeros([BLOCK_N], dtype=tl.float32)
    sum_pz = tl.zeros([BLOCK_N], dtype=tl.float32)
    z_target = tl.zeros([BLOCK_N], dtype=tl.float32)
    ref_m = tl.full([BLOCK_N], NEG_LARGE, dtype=tl.float32)
    ref_s = tl.zeros([BLOCK_N], dtype=tl.float32)
    ref_z_target = tl.zeros([BLOCK_N], dtype=tl.float32)

    for v0 in range(v_start, v_stop, BLOCK_V):
        cols = (v0 + tl.arange(0, BLOCK_V)).to(tl.int64)
        col_ok = cols < v_stop
        z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, D, stride_h, stride_w,
                         inv_temp, BLOCK_N, BLOCK_V, BLOCK_D, UPCAST, PRECISION)
        m, s, sum_pz, z_target = _online_update(z, cols, col_ok, targets, m, s, sum_pz,
                                                z_target, WITH_ENTROPY)
        if HAS_REF:
            ref_z = _logits_tile(ref_h_ptr, ref_w_ptr, rows, cols, row_ok, col_ok, D_REF,
                                 stride_ref_h, stride_ref_w, inv_temp,
                                 BLOCK_N, BLOCK_V, BLOCK_D, UPCAST, PRECISION)
            ref_m, ref_s, _, ref_z_target = _online_update(
                ref_z, cols, col_ok, targets, ref_m, ref_s, sum_pz, ref_z_target, False)

    # Every slice holds at least one real column, so s > 0 and the log is finite.
    tl.store(lse_ptr + out, m + tl.log(s), mask=row_ok)
    tl.store(z_target_ptr + out, z_target, mask=row_ok)
    if WITH_ENTROPY:
        tl.store(mean_z_ptr + out, sum_pz / s, mask=row_ok)
    if HAS_REF:
        tl.store(ref_lse_ptr + out, ref_m + tl.log(ref_s), mask=row_ok)
        tl.store(ref_z_target_ptr + out, ref_z_target, mask=row_ok)


@triton.jit
def _grad_hidden_kernel(
    h_ptr, w_ptr, targets_ptr, lse_ptr, mean_z_ptr, g_logp_ptr, g_entropy_ptr, grad_h_ptr,
    N, V, D, stride_h, stride_w, stride_gh, inv_temp,
    WITH_ENTROPY: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """grad_hidden[rows] = Σ_v dlogits[rows, v] · W[v]  (grad_h_ptr: fp32, zero-initialised).

    This program owns its rows of grad_hidden, so it adds each tile's contribution with a plain
    load/add/store (the rows stay in L2 across tiles), no atomics."""
    pid = tl.program_id(0)
    rows = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_ok = rows < N
    targets, lse, g_logp, mean_z, g_entropy = _load_row_inputs(
        rows, row_ok, targets_ptr, lse_ptr, g_logp_ptr, mean_z_ptr, g_entropy_ptr,
        WITH_ENTROPY, BLOCK_N)

    for v0 in range(0, V, BLOCK_V):
        cols = (v0 + tl.arange(0, BLOCK_V)).to(tl.int64)
        col_ok = cols < V
        z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, D, stride_h, stride_w,
                         inv_temp, BLOCK_N, BLOCK_V, BLOCK_D, UPCAST, PRECISION)
        dz = _dlogits_tile(z, cols, col_ok, targets, lse, mean_z, g_logp, g_entropy, inv_temp,
                           WITH_ENTROPY)
        dz = dz.to(w_ptr.dtype.element_ty)  # bf16 operands for the tensor cores, fp32 accumulate
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            w = tl.load(w_ptr + cols[:, None] * stride_w + ds[None, :],
                        mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            out = grad_h_ptr + rows[:, None] * stride_gh + ds[None, :]
            out_ok = row_ok[:, None] & d_ok[None, :]
            acc = tl.load(out, mask=out_ok, other=0.0)
            acc = _dot(dz, w, acc, UPCAST, PRECISION)
            tl.store(out, acc, mask=out_ok)


@triton.jit
def _grad_weight_kernel(
    h_ptr, w_ptr, targets_ptr, lse_ptr, mean_z_ptr, g_logp_ptr, g_entropy_ptr, grad_w_ptr,
    N, V, D, stride_h, stride_w, stride_gw, inv_temp,
    WITH_ENTROPY: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """grad_W[cols] = Σ_n dlogits[n, cols]ᵀ · hidden[n]  (grad_w_ptr: fp32, zero-initialised).

    The mirror image of `_grad_hidden_kernel`: this program owns a tile of vocabulary rows of
    grad_W and sweeps over all token blocks."""
    pid = tl.program_id(0)
    cols = (pid * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    col_ok = cols < V

    for n0 in range(0, N, BLOCK_N):
        rows = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        row_ok = rows < N
        targets, lse, g_logp, mean_z, g_entropy = _load_row_inputs(
            rows, row_ok, targets_ptr, lse_ptr, g_logp_ptr, mean_z_ptr, g_entropy_ptr,
        WITH_ENTROPY, BLOCK_N)
        z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, D, stride_h, stride_w,
                         inv_temp, BLOCK_N, BLOCK_V, BLOCK_D, UPCAST, PRECISION)
        dz = _dlogits_tile(z, cols, col_ok, targets, lse, mean_z, g_logp, g_entropy, inv_temp,
                           WITH_ENTROPY)
        dz_t = tl.trans(dz.to(h_ptr.dtype.element_ty))  # [BLOCK_V, BLOCK_N]
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            h = tl.load(h_ptr + rows[:, None] * stride_h + ds[None, :],
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            out = grad_w_ptr + cols[:, None] * stride_gw + ds[None, :]
            out_ok = col_ok[:, None] & d_ok[None, :]
            acc = tl.load(out, mask=out_ok, other=0.0)
            acc = _dot(dz_t, h, acc, UPCAST, PRECISION)
            tl.store(out, acc, mask=out_ok)


@triton.jit
def _dlogits_chunk_kernel(
    z_ptr, dz_ptr, targets_ptr, lse_ptr, mean_z_ptr, g_logp_ptr, g_entropy_ptr,
    N, V_CHUNK, COL_OFFSET, stride_z, stride_dz, inv_temp,
    WITH_ENTROPY: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """dz[rows, cols] = dL/dlogits from a chunk of raw fp32 logits z = h·W[chunk]ᵀ (temperature
    not yet applied), for the "cublas" backward. The chunk holds vocabulary columns
    COL_OFFSET .. COL_OFFSET + V_CHUNK of every row. Memory-bound: one read of z, one write of dz."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    local_cols = (tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    row_ok = rows < N
    col_ok = local_cols < V_CHUNK
    cols = local_cols + COL_OFFSET  # vocabulary ids, compared with the targets
    ok = row_ok[:, None] & col_ok[None, :]
    targets, lse, g_logp, mean_z, g_entropy = _load_row_inputs(
        rows, row_ok, targets_ptr, lse_ptr, g_logp_ptr, mean_z_ptr, g_entropy_ptr,
        WITH_ENTROPY, BLOCK_N)
    raw = tl.load(z_ptr + rows[:, None] * stride_z + local_cols[None, :], mask=ok, other=0.0)
    z = tl.where(col_ok[None, :], raw.to(tl.float32) * inv_temp, float("-inf"))
    dz = _dlogits_tile(z, cols, col_ok, targets, lse, mean_z, g_logp, g_entropy, inv_temp,
                       WITH_ENTROPY)
    tl.store(dz_ptr + rows[:, None] * stride_dz + local_cols[None, :],
             dz.to(dz_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _dlogits_recompute_kernel(
    h_ptr, w_ptr, dz_ptr, targets_ptr, lse_ptr, mean_z_ptr, g_logp_ptr, g_entropy_ptr,
    N, V_CHUNK, COL_OFFSET, D, stride_h, stride_w, stride_dz, inv_temp,
    WITH_ENTROPY: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """dz[rows, cols] = dL/dlogits for vocabulary columns COL_OFFSET .. COL_OFFSET + V_CHUNK, for
    the "fused_dz" backward: the logits tile is recomputed in registers (as in the forward) and
    only dz is written, in the input dtype. Nothing of size [N, chunk] in fp32 is ever stored."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    local_cols = (tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    row_ok = rows < N
    col_ok = local_cols < V_CHUNK
    cols = local_cols + COL_OFFSET  # vocabulary ids: rows of W, and compared with the targets
    targets, lse, g_logp, mean_z, g_entropy = _load_row_inputs(
        rows, row_ok, targets_ptr, lse_ptr, g_logp_ptr, mean_z_ptr, g_entropy_ptr,
        WITH_ENTROPY, BLOCK_N)
    z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, D, stride_h, stride_w,
                     inv_temp, BLOCK_N, BLOCK_V, BLOCK_D, UPCAST, PRECISION)
    dz = _dlogits_tile(z, cols, col_ok, targets, lse, mean_z, g_logp, g_entropy, inv_temp,
                       WITH_ENTROPY)
    tl.store(dz_ptr + rows[:, None] * stride_dz + local_cols[None, :],
             dz.to(dz_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


# ----------------------------------------------------------------------------------------------
# Host side: launches and the autograd Function
# ----------------------------------------------------------------------------------------------
def _dot_options(dtype: torch.dtype) -> dict:
    return {"UPCAST": INTERPRET, "PRECISION": "ieee" if dtype == torch.float32 else "tf32"}


@contextmanager
def _ieee_fp32_matmuls():
    """fp32 matmuls without TF32 inside the block, like the all-Triton kernels' "ieee" dots, so
    that every scheme agrees with the reference to fp32 precision whatever the global setting."""
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result; bf16 inputs stay bf16 on the tensor cores (fp32 accumulate)."""
    if a.dtype == torch.float32:
        with _ieee_fp32_matmuls():
            return a @ b
    try:
        return torch.mm(a, b, out_dtype=torch.float32)
    except (TypeError, RuntimeError):  # older torch, or a device without out_dtype support
        return (a @ b).float()


def _mm_into_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out = a @ b written straight into `out`, a slice of a larger gradient, so there is no
    [rows, cols] temporary to copy from (bf16 inputs still accumulate in fp32 in cuBLAS)."""
    with _ieee_fp32_matmuls():
        torch.mm(a, b, out=out)


def _add_mm_fp32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b for an fp32 `acc`, in place: no [rows(a), cols(b)] temporary where cuBLAS can
    take bf16 operands with an fp32 output (CUDA); elsewhere through a temporary."""
    if a.dtype != torch.float32 and acc.is_cuda:
        try:
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
            return
        except (TypeError, RuntimeError):  # older torch: no out_dtype
            pass
    acc += _mm_fp32(a, b)


def _chunk_cols(n: int, v: int, tiles: TileConfig, element_bytes: int = 4) -> int:
    """Vocabulary columns per backward chunk, so that one chunk [n, cols] of `element_bytes`-sized
    values takes about `tiles.chunk_bytes`; a multiple of 128 when that large, for aligned matmuls."""
    # Defaults measured on an H200: "fused_dz" at 16 MiB is near Liger's memory and still fast;
    # "cublas" slows down sharply below 64 MiB chunks of fp32 logits (21 ms vs 7.6 at N = 8192).
    chunk_bytes = tiles.chunk_bytes or (1 << 24 if tiles.backward == "fused_dz" else 1 << 26)
    cols = max(1, min(v, chunk_bytes // (element_bytes * n)))
    return cols - cols % 128 if 128 <= cols < v else cols


def _vocab_splits(n: int, v: int, device: torch.device, tiles: TileConfig) -> tuple[int, int]:
    """(number of vocabulary slices, columns per slice) for `_forward_kernel`.

    `tiles.split_v` = 0 picks enough slices that the grid has about two programs per SM, each
    slice keeping at least 4 vocabulary tiles; on anything but CUDA one slice."""
    splits = tiles.split_v
    if splits == 0:
        splits = 1
        if device.type == "cuda":
            programs_per_wave = torch.cuda.get_device_properties(device).multi_processor_count
            splits = triton.cdiv(2 * programs_per_wave, triton.cdiv(n, tiles.block_n))
            splits = max(1, min(splits, v // (4 * tiles.block_v)))
    cols_per_split = triton.cdiv(triton.cdiv(v, splits), tiles.block_v) * tiles.block_v
    return triton.cdiv(v, cols_per_split), cols_per_split  # no empty slice


def fused_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ref_hidden: torch.Tensor | None,
    ref_weight: torch.Tensor | None,
    temperature: float,
    with_entropy: bool,
    tiles: TileConfig,
) -> dict[str, torch.Tensor]:
    """Launch `_forward_kernel`; returns fp32 [N] tensors lse, z_target, mean_z, ref_lse, ref_z_target.

    `targets` must already have ignored positions replaced by -1 (a column no tile contains).
    Each vocabulary slice gives its own logsumexp; they merge like the tiles inside a slice:
    lse = logsumexp_j(lse_j), and E_p[z] = Σ_j exp(lse_j - lse)·E_pj[z]. Only one slice holds the
    target, so the slices' z[target] simply add."""
    n, d = hidden.shape
    v = weight.shape[0]
    has_ref = ref_hidden is not None
    splits, cols_per_split = _vocab_splits(n, v, hidden.device, tiles)
    parts = {name: torch.zeros(splits, n, device=hidden.device, dtype=torch.float32)
             for name in ("lse", "z_target", "mean_z", "ref_lse", "ref_z_target")}
    ref_h = ref_hidden if has_ref else hidden
    ref_w = ref_weight if has_ref else weight
    grid = (triton.cdiv(n, tiles.block_n), splits)
    _forward_kernel[grid](
        hidden, weight, ref_h, ref_w, targets,
        parts["lse"], parts["z_target"], parts["mean_z"], parts["ref_lse"], parts["ref_z_target"],
        n, v, d, ref_h.shape[1], cols_per_split,
        hidden.stride(0), weight.stride(0), ref_h.stride(0), ref_w.stride(0),
        1.0 / temperature,
        HAS_REF=has_ref, WITH_ENTROPY=with_entropy,
        BLOCK_N=tiles.block_n, BLOCK_V=tiles.block_v, BLOCK_D=tiles.block_d,
        num_warps=tiles.num_warps, **_dot_options(hidden.dtype),
    )
    if splits == 1:
        return {name: part[0] for name, part in parts.items()}
    lse = torch.logsumexp(parts["lse"], dim=0)
    return {
        "lse": lse,
        "z_target": parts["z_target"].sum(0),
        "mean_z": (torch.exp(parts["lse"] - lse) * parts["mean_z"]).sum(0),
        "ref_lse": torch.logsumexp(parts["ref_lse"], dim=0),
        "ref_z_target": parts["ref_z_target"].sum(0),
    }


def _backward_chunked(hidden, weight, targets, lse, mean_z, g_logp, g_entropy, inv_temp,
                      with_entropy, need_hidden, need_weight, tiles: TileConfig):
    """The "fused_dz" and "cublas" backwards: one chunk c of vocabulary columns at a time, dz =
    dL/dz for the chunk, then grad_W[c] = dzᵀ·h and grad_h += dz·W[c] (cuBLAS matmuls).

    "fused_dz": `_dlogits_recompute_kernel` computes the chunk's logits tile by tile in registers
    and writes only dz, in the input dtype. "cublas": a cuBLAS matmul writes the chunk's fp32
    logits z = h·W[c]ᵀ and `_dlogits_chunk_kernel` turns them into dz, one more [N, chunk] buffer.

    Chunking the vocabulary rather than the rows means each chunk finishes its rows of grad_W in
    one matmul (written once, in the weight's dtype), and the only running sum is grad_h, [N, D]
    in fp32. Peak extra memory: one chunk, plus the gradients themselves."""
    n, d = hidden.shape
    v = weight.shape[0]
    fused = tiles.backward == "fused_dz"
    chunk = _chunk_cols(n, v, tiles, element_bytes=hidden.element_size() if fused else 4)
    grad_h32 = torch.zeros(n, d, device=hidden.device, dtype=torch.float32) if need_hidden else None
    grad_weight = torch.empty_like(weight) if need_weight else None
    for start in range(0, v, chunk):
        stop = min(start + chunk, v)
        w_c = weight[start:stop]
        if fused:
            dz = torch.empty(n, stop - start, device=hidden.device, dtype=hidden.dtype)
            grid = (triton.cdiv(n, tiles.block_n), triton.cdiv(stop - start, tiles.block_v))
            _dlogits_recompute_kernel[grid](
                hidden, weight, dz, targets, lse, mean_z, g_logp, g_entropy,
                n, stop - start, start, d, hidden.stride(0), weight.stride(0), dz.stride(0),
                inv_temp, WITH_ENTROPY=with_entropy,
                BLOCK_N=tiles.block_n, BLOCK_V=tiles.block_v, BLOCK_D=tiles.block_d,
                num_warps=tiles.num_warps, **_dot_options(hidden.dtype),
            )
        else:
            z = _mm_fp32(hidden, w_c.T)
            # bf16 inputs: dz goes to a bf16 buffer for the tensor cores; fp32: overwrite z in place
            dz = z if hidden.dtype == torch.float32 else torch.empty(z.shape, device=z.device,
                                                                     dtype=hidden.dtype)
            block_n, block_v = 16, 256
            grid = (triton.cdiv(n, block_n), triton.cdiv(stop - start, block_v))
            _dlogits_chunk_kernel[grid](
                z, dz, targets, lse, mean_z, g_logp, g_entropy, n, stop - start, start,
                z.stride(0), dz.stride(0), inv_temp, WITH_ENTROPY=with_entropy,
                BLOCK_N=block_n, BLOCK_V=block_v, num_warps=4,
            )
            del z
        if need_weight:  # the full sum over the N rows inside one matmul (fp32 accumulation)
            _mm_into_(grad_weight[start:stop], dz.T, hidden)
        if need_hidden:
            _add_mm_fp32_(grad_h32, dz, w_c)
    return None if grad_h32 is None else grad_h32.to(hidden.dtype), grad_weight


class FusedLinearLogprobs(torch.autograd.Function):
    """(hidden, W, targets[, ref head]) -> (log p(target), entropy, ref log p(target)), all [N] fp32.

    Forward saves only [N]-sized statistics (logsumexp and E_p[z]); backward recomputes the logits
    tile by tile. Gradients flow to hidden and W of the policy head only; ref_logp is a constant.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, ref_hidden, ref_weight, temperature: float,
                ignore_index: int, with_entropy: bool, tiles: TileConfig):
        valid = targets != ignore_index
        kernel_targets = torch.where(valid, targets, -1).to(torch.int32).contiguous()
        stats = fused_forward(hidden, weight, kernel_targets, ref_hidden, ref_weight,
                              temperature, with_entropy, tiles)
        zeros = torch.zeros_like(stats["lse"])
        logp = torch.where(valid, stats["z_target"] - stats["lse"], zeros)
        entropy = torch.where(valid, stats["lse"] - stats["mean_z"], zeros) if with_entropy else zeros
        ref_logp = torch.where(valid, stats["ref_z_target"] - stats["ref_lse"], zeros)
        ctx.save_for_backward(hidden, weight, kernel_targets, valid, stats["lse"], stats["mean_z"])
        ctx.temperature, ctx.with_entropy, ctx.tiles = temperature, with_entropy, tiles
        ctx.mark_non_differentiable(ref_logp)
        return logp, entropy, ref_logp

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy, _grad_ref_logp):
        hidden, weight, targets, valid, lse, mean_z = ctx.saved_tensors
        tiles: TileConfig = ctx.tiles
        n, d = hidden.shape
        v = weight.shape[0]
        # Ignored positions contribute nothing: zero their upstream gradients.
        g_logp = torch.where(valid, grad_logp.float(), 0.0).contiguous()
        g_entropy = torch.where(valid, grad_entropy.float(), 0.0).contiguous()
        common = dict(
            WITH_ENTROPY=ctx.with_entropy,
            BLOCK_N=tiles.block_n, BLOCK_V=tiles.block_v, BLOCK_D=tiles.block_d,
            num_warps=tiles.num_warps, **_dot_options(hidden.dtype),
        )
        inv_temp = 1.0 / ctx.temperature
        if tiles.backward in ("cublas", "fused_dz"):
            return (*_backward_chunked(hidden, weight, targets, lse, mean_z, g_logp, g_entropy,
                                       inv_temp, ctx.with_entropy, ctx.needs_input_grad[0],
                                       ctx.needs_input_grad[1], tiles),
                    None, None, None, None, None, None, None)
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_h32 = torch.zeros(n, d, device=hidden.device, dtype=torch.float32)
            _grad_hidden_kernel[(triton.cdiv(n, tiles.block_n),)](
                hidden, weight, targets, lse, mean_z, g_logp, g_entropy, grad_h32,
                n, v, d, hidden.stride(0), weight.stride(0), grad_h32.stride(0), inv_temp,
                **common,
            )
            grad_hidden = grad_h32.to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            grad_w32 = torch.zeros(v, d, device=weight.device, dtype=torch.float32)
            _grad_weight_kernel[(triton.cdiv(v, tiles.block_v),)](
                hidden, weight, targets, lse, mean_z, g_logp, g_entropy, grad_w32,
                n, v, d, hidden.stride(0), weight.stride(0), grad_w32.stride(0), inv_temp,
                **common,
            )
            grad_weight = grad_w32.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


def linear_logprob_stats_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ref_hidden: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    tiles: TileConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton path for 2-D inputs: returns (logp, entropy, ref_logp), each [N] fp32."""
    if ref_hidden is not None:
        ref_hidden, ref_weight = ref_hidden.contiguous(), ref_weight.contiguous()
    return FusedLinearLogprobs.apply(
        hidden.contiguous(), weight.contiguous(), targets, ref_hidden, ref_weight,
        float(temperature), ignore_index, with_entropy, tiles or DEFAULT_TILES,
    )

"""Log-probabilities of tokens under a causal language model, without holding all the logits.

A causal LM turns hidden states h_t into logits z_t = W h_t (W: the ``[V, D]`` output embedding)
and predicts token t+1 from position t, so

    log π(x_t | x_<t) = z_{t−1}[x_t] / τ − logsumexp_v(z_{t−1}[v] / τ)

with τ the sampling temperature. Reading the logits at t−1, not t, is the off-by-one every RLHF
codebase has to get right.

Three implementations (``impl=``) give the same numbers:

* ``"naive"`` (``naive_token_logprobs``, the first function below: read it first, it is the
  definition): the model's full ``[B, T, V]`` logits and a ``log_softmax`` over them. Simple, but
  for GPT-2's V = 50257 the fp32 logits of a 16 × 1024 batch alone are 3.3 GB, plus as much again
  for the log-softmax and its gradient.
* ``"chunked"``: run the transformer body once, keep the ``[B, T, D]`` hidden states, and apply
  the output layer, logsumexp and gather to chunks of positions. When there is more than one chunk,
  each runs under activation checkpointing, so the backward pass recomputes a chunk's logits
  instead of storing them: peak logit memory is one chunk, ``chunk_size × V``. (Rows that fit in
  one chunk keep their logits for the backward pass: that is one chunk already, and recomputing it
  would only cost time.) Only the rows that are needed (response tokens for ``sequence_logprobs``,
  real tokens for ``token_logprobs``) are computed at all.
* ``"fused"``: the same row selection, with the per-row head computation done by the Triton kernel
  ``rlhf_mini.kernels.linear_logprobs`` (GPU only), which never writes the logits to memory.

The trainers call ``token_logprobs`` and ``sequence_logprobs`` with their default, ``"chunked"``;
the tests check every path against ``naive_token_logprobs``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from rlhf_mini.models import position_ids_from_mask

__all__ = [
    "IMPLS",
    "linear_logprobs_reference",
    "naive_token_logprobs",
    "sequence_logprobs",
    "token_logprobs",
]

IMPLS = ("naive", "chunked", "fused")

# Default logit budget of one chunk: 2**25 fp32 values (128 MiB); for GPT-2's vocabulary that is
# 667 positions per chunk.
_DEFAULT_CHUNK_ELEMENTS = 2**25


# --------------------------------------------------------------------------------------------
# The plain computation: the definition the other paths are tested against
# --------------------------------------------------------------------------------------------


def naive_token_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, *,
                         temperature: float = 1.0, return_entropy: bool = False
                         ) -> Tensor | tuple[Tensor, Tensor]:
    """log π(x_t | x_<t) for every position ``[B, T]``: the full logits and a log-softmax.

    Position 0, padding, and the first token after left padding have no real prefix and get 0.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits
    log_probs = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)  # position t−1 predicts t
    picked = log_probs.gather(-1, input_ids[:, 1:].long().unsqueeze(-1)).squeeze(-1)
    zero_column = picked.new_zeros(picked.shape[0], 1)
    valid = _predictable(attention_mask)
    out = torch.where(valid, torch.cat([zero_column, picked], dim=1), 0.0)
    if not return_entropy:
        return out
    entropy = torch.cat([zero_column, -(log_probs.exp() * log_probs).sum(dim=-1)], dim=1)
    return out, torch.where(valid, entropy, 0.0)


# --------------------------------------------------------------------------------------------
# The per-row head computation (the reference for the fused kernel)
# --------------------------------------------------------------------------------------------


def linear_logprobs_reference(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-probability of ``targets`` under logits ``hidden @ weight.T / temperature``, per row.

        z_n = W h_n / τ                       (hidden [N, D], weight [V, D] → z [N, V])
        out_n = z_n[y_n] − logsumexp_v z_n[v]

    This is the plain-PyTorch reference that the fused Triton kernel must match; it materialises
    the ``[N, V]`` logits, so callers feed it chunks of rows. The logsumexp runs in fp32 whatever
    the model dtype. With ``return_entropy=True`` it also returns the entropy of each row's
    distribution, H_n = logsumexp_v z_n[v] − Σ_v softmax(z_n)[v] z_n[v].
    """
    logits = (hidden @ weight.T).float()
    if temperature != 1.0:
        logits = logits / temperature
    log_normaliser = torch.logsumexp(logits, dim=-1)
    target_logits = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    logprobs = target_logits - log_normaliser
    if not return_entropy:
        return logprobs
    probs = torch.softmax(logits, dim=-1)
    entropy = log_normaliser - (probs * logits).sum(dim=-1)
    return logprobs, entropy


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------



def _check_inputs(
    input_ids: Tensor,
    attention_mask: Tensor,
    temperature: float,
    impl: str,
    chunk_size: int | None,
) -> None:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; expected one of {', '.join(IMPLS)}")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a [B, T] tensor, got {shape}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
    if input_ids.dtype.is_floating_point:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else None
        raise ValueError(
            f"attention_mask has shape {shape} but input_ids has shape {tuple(input_ids.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")


def _output_weight(model: nn.Module) -> Tensor:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("model has no output embedding (lm_head); pass a causal LM")
    if getattr(head, "bias", None) is not None:
        raise ValueError("the chunked and fused log-probs assume an lm_head without bias")
    return head.weight


def _hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The transformer body's last hidden states ``[B, T, D]`` (after the final layer norm)."""
    out = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out[0]


def _predictable(attention_mask: Tensor) -> Tensor:
    """Positions t whose token has a real prefix: t ≥ 1 and tokens t−1 and t are not padding."""
    am = attention_mask != 0
    valid = torch.zeros_like(am)
    valid[:, 1:] = am[:, 1:] & am[:, :-1]
    return valid


def _load_fused_kernel(return_entropy: bool) -> Callable[..., Tensor]:
    """``rlhf_mini.kernels.linear_logprobs``, imported only when ``impl="fused"`` asks for it."""
    if return_entropy:
        raise ValueError("return_entropy=True is not supported with impl='fused'")
    try:
        from rlhf_mini.kernels import linear_logprobs
    except ImportError as error:
        raise ImportError(
            "impl='fused' needs rlhf_mini.kernels.linear_logprobs (a Triton kernel, GPU only), "
            "which could not be imported; use impl='chunked' instead"
        ) from error
    return linear_logprobs


def _rows_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    rows_mask: Tensor,
    temperature: float,
    chunk_size: int | None,
    impl: str,
    return_entropy: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Log-probs (and entropies) of the tokens at positions where ``rows_mask`` is true.

    Returns ``(flat_index, logprobs [N], entropy [N] | None)`` where ``flat_index`` are the
    positions in the flattened ``[B * T]`` grid, in row-major order.
    """
    kernel = _load_fused_kernel(return_entropy) if impl == "fused" else None
    weight = _output_weight(model)
    hidden = _hidden_states(model, input_ids, attention_mask)
    batch, length = input_ids.shape
    # The token at t is predicted from the hidden state at t − 1: shift the row selection left.
    selected = rows_mask[:, 1:]
    prev_hidden = hidden[:, :-1][selected]  # [N, D]
    targets = input_ids[:, 1:][selected]  # [N]
    positions = torch.arange(length, device=input_ids.device).expand(batch, length)
    flat_index = positions + length * torch.arange(batch, device=input_ids.device)[:, None]
    flat_index = flat_index[:, 1:][selected]

    n_rows = prev_hidden.shape[0]
    if impl == "fused" and n_rows > 0:  # the kernel tiles over rows; no rows take the path below
        return flat_index, kernel(prev_hidden, weight, targets, temperature=temperature), None

    if chunk_size is None:
        chunk_size = max(1, _DEFAULT_CHUNK_ELEMENTS // weight.shape[0])
    head: Callable[..., Tensor | tuple[Tensor, Tensor]] = linear_logprobs_reference
    logprob_chunks: list[Tensor] = []
    entropy_chunks: list[Tensor] = []
    for start in range(0, max(n_rows, 1), chunk_size):  # no rows: one empty chunk, still in the graph
        args = (
            prev_hidden[start : start + chunk_size],
            weight,
            targets[start : start + chunk_size],
            temperature,
            return_entropy,
        )
        if n_rows > chunk_size and torch.is_grad_enabled() and (prev_hidden.requires_grad or weight.requires_grad):
            # Save only the chunk's inputs; the backward pass recomputes its [chunk, V] logits.
            out = checkpoint(head, *args, use_reentrant=False)
        else:
            out = head(*args)
        if return_entropy:
            logprob_chunks.append(out[0])
            entropy_chunks.append(out[1])
        else:
            logprob_chunks.append(out)
    logprobs = torch.cat(logprob_chunks)
    entropy = torch.cat(entropy_chunks) if return_entropy else None
    return flat_index, logprobs, entropy


def _bucketed_rows_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    rows_mask: Tensor,
    temperature: float,
    chunk_size: int | None,
    impl: str,
    return_entropy: bool,
    length_buckets: int,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``_rows_logprobs`` over buckets of rows of similar length, each cut to the columns it uses.

    Columns where no row of a bucket has a real token are padding for all of them: dropping them
    changes no position id (they count only real tokens) and no prediction (a token right after
    padding has none), only the amount of work.
    """
    batch, length = input_ids.shape
    real = attention_mask != 0
    order = torch.argsort(real.sum(dim=1), stable=True)
    flat_parts: list[Tensor] = []
    value_parts: list[Tensor] = []
    entropy_parts: list[Tensor] = []
    for rows in torch.tensor_split(order, min(length_buckets, batch)):
        used = torch.nonzero(real[rows].any(dim=0))
        if used.numel() == 0:  # only padding: nothing to predict
            continue
        start, stop = int(used[0, 0]), int(used[-1, 0]) + 1
        flat, values, entropy = _rows_logprobs(
            model, input_ids[rows, start:stop], attention_mask[rows, start:stop],
            rows_mask[rows, start:stop], temperature, chunk_size, impl, return_entropy,
        )
        width = stop - start
        row = rows[torch.div(flat, width, rounding_mode="floor")]
        flat_parts.append(row * length + start + flat % width)
        value_parts.append(values)
        if entropy is not None:
            entropy_parts.append(entropy)
    if not value_parts:  # every row is padding: the one-pass path returns its zeros
        return _rows_logprobs(model, input_ids, attention_mask, rows_mask, temperature, chunk_size, impl,
                              return_entropy)
    entropy_out = torch.cat(entropy_parts) if return_entropy else None
    return torch.cat(flat_parts), torch.cat(value_parts), entropy_out


def _check_response_mask(response_mask: Tensor, attention_mask: Tensor) -> Tensor:
    """``response_mask`` as bool, after checking that each marked token has a real prefix."""
    if not isinstance(response_mask, Tensor) or response_mask.shape != attention_mask.shape:
        shape = tuple(response_mask.shape) if isinstance(response_mask, Tensor) else None
        raise ValueError(
            f"response_mask has shape {shape} but input_ids has shape {tuple(attention_mask.shape)}"
        )
    response = response_mask != 0
    if bool(response[:, 0].any()):
        row = int(torch.nonzero(response[:, 0])[0, 0])
        raise ValueError(
            f"response_mask marks position 0 of row {row} as a response token; it has no prefix "
            "to be predicted from"
        )
    orphan = response & ~_predictable(attention_mask)
    if bool(orphan.any()):
        row, col = (int(i) for i in torch.nonzero(orphan)[0])
        raise ValueError(
            f"response_mask marks position {col} of row {row}, which is padding or follows "
            "padding (attention_mask is 0 there or just before)"
        )
    return response


def _scatter(flat_index: Tensor, values: Tensor, shape: torch.Size) -> Tensor:
    """Place row values back on the ``[B, T]`` grid, zeros elsewhere (differentiably)."""
    out = values.new_zeros(shape[0] * shape[1])
    return out.index_put((flat_index,), values).view(shape)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    temperature: float = 1.0,
    impl: str = "chunked",
    chunk_size: int | None = None,
    return_entropy: bool = False,
    response_mask: Tensor | None = None,
    length_buckets: int = 1,
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-token log-probabilities ``[B, T]``: out[b, t] = log π(x_t | x_<t) at temperature τ.

        out[b, t] = log_softmax(z[b, t − 1] / τ)[x[b, t]]

    Position 0 has no prefix and gets 0, as do padding tokens and the first real token after left
    padding (its "prefix" is padding). Pass the temperature the tokens were sampled with: PPO's
    ratio π_θ/π_old is only right if both are scored under the sampling distribution.

    ``impl`` is ``"naive"``, ``"chunked"`` or ``"fused"`` (see the module docstring);
    ``chunk_size`` is the number of positions per chunk (default: 2**25 / V). With
    ``return_entropy=True`` returns ``(logprobs, entropy)``, the entropy of the predictive
    distribution of each position, 0 where the log-prob is 0.

    Two options save work that a trainer does not need:

    * ``response_mask`` ``[B, T]``: compute only these positions (a policy-gradient trainer's
      completion tokens); every other position gets 0. The output layer then skips the prompts.
    * ``length_buckets`` = k > 1: sort the rows by their number of real tokens, split them into k
      buckets, and run each bucket cut to the columns its rows use, so the transformer body skips
      most of the padding of a batch whose lengths vary. The values agree with one pass to float
      rounding (the attention adds up a different number of masked keys), not bit for bit.
    """
    _check_inputs(input_ids, attention_mask, temperature, impl, chunk_size)
    if not isinstance(length_buckets, int) or length_buckets < 1:
        raise ValueError(f"length_buckets must be a positive int, got {length_buckets!r}")
    valid = _predictable(attention_mask)
    if response_mask is not None:
        valid = _check_response_mask(response_mask, attention_mask)
    if impl == "naive":
        naive = naive_token_logprobs(model, input_ids, attention_mask, temperature=temperature,
                                     return_entropy=return_entropy)
        if response_mask is None:
            return naive
        if return_entropy:
            return tuple(torch.where(valid, x, 0.0) for x in naive)
        return torch.where(valid, naive, 0.0)

    if length_buckets == 1:
        flat_index, values, entropy = _rows_logprobs(
            model, input_ids, attention_mask, valid, temperature, chunk_size, impl, return_entropy
        )
    else:
        flat_index, values, entropy = _bucketed_rows_logprobs(
            model, input_ids, attention_mask, valid, temperature, chunk_size, impl, return_entropy,
            length_buckets,
        )
    out = _scatter(flat_index, values, input_ids.shape)
    if not return_entropy:
        return out
    assert entropy is not None
    return out, _scatter(flat_index, entropy, input_ids.shape)


def sequence_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_mask: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    impl: str = "chunked",
) -> Tensor:
    """Summed log-probability of each sequence's response tokens, ``[B]``.

        log π(y | x) = Σ_{t ∈ response} log π(x_t | x_<t)

    ``response_mask`` ``[B, T]`` marks the response positions of ``input_ids``. Every response
    token needs a real prefix: a response token at position 0, on padding, or right after padding
    raises ``ValueError``. The batch may be left-padded; positions are computed from
    ``attention_mask``. With ``impl="chunked"`` or ``"fused"`` only the response rows go through
    the output layer, which for DPO-style batches (long prompt, short answer) skips most of it.
    """
    _check_inputs(input_ids, attention_mask, temperature, impl, chunk_size)
    response = _check_response_mask(response_mask, attention_mask)

    if impl == "naive":
        per_token = token_logprobs(
            model, input_ids, attention_mask, temperature=temperature, impl="naive"
        )
        return torch.where(response, per_token, torch.zeros_like(per_token)).sum(dim=1)

    flat_index, values, _ = _rows_logprobs(
        model, input_ids, attention_mask, response, temperature, chunk_size, impl, False
    )
    rows = torch.div(flat_index, input_ids.shape[1], rounding_mode="floor")
    return values.new_zeros(input_ids.shape[0]).index_add(0, rows, values)

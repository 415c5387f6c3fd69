"""Sampling from a policy, and best-of-N.

``generate`` is a plain sampling loop with a KV cache, so every detail is visible: temperature
divides the logits (and the PPO scorer divides them the same way), sampling stops at EOS, and each
response is cut after its first EOS. Rows that never emit EOS are marked ``truncated``. After the
prompt, each step of a GPT-2 runs through ``gpt2_decode_step``: the cache and the attention of one
new token, written out.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import Cache, GPT2LMHeadModel, PreTrainedTokenizerBase

from rlhf_mini.batch import TokenBatch, encode_prompts
from rlhf_mini.models import position_ids_from_mask


@dataclass
class Generation:
    prompts: list[str]
    responses: list[str]
    """decoded responses, without the EOS"""
    batch: TokenBatch
    """prompt + response tokens, left-padded, with the response mask (EOS included when emitted)"""
    truncated: torch.Tensor
    """[B] bool: the response hit ``max_new_tokens`` without an EOS"""


def kv_cache_keyword(model) -> str:
    """The name under which ``model.forward`` takes (and its output returns) the KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache``; releases before it only know the
    old name, which 5.24 still accepts but warns about on every call. Asking the signature lets
    one sampling loop run on every release the course supports.
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def sample_tokens(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``probs`` ``[B, V]`` (on the CPU), drawn with probability ``probs``: ``[B]``.

    The exponential race: with E_v ~ Exp(1) independent, argmax_v p_v / E_v is token v with
    probability p_v (the smallest of the E_v / p_v, each Exp(p_v), is the Exp(Σp) of a race that v
    wins with probability p_v / Σp). This is how ``torch.multinomial`` draws one sample, and with
    the same generator it draws the same tokens. It makes E_v one at a time, as
    −log(1 − U) of a double-precision uniform U; here the uniforms come in one call and the
    logarithm runs vectorized, about twice as fast for the course's 1,024-token vocabulary.
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must be [B, V], got shape {tuple(probs.shape)}")
    lowest, highest = torch.aminmax(probs)  # one pass; a NaN anywhere makes both NaN
    if not (bool(lowest >= 0) and bool(highest < math.inf)):
        raise ValueError("probs holds NaN, inf or negative entries: check the logits (a diverged model?)")
    uniform = torch.rand(probs.shape, dtype=torch.float64, generator=generator, device=probs.device)
    exponential = torch.log1p(-uniform).neg_().to(probs.dtype)
    return (probs / exponential).argmax(dim=-1)


def decodes_gpt2(model: torch.nn.Module) -> bool:
    """Whether ``gpt2_decode_step`` runs ``model``: a GPT-2 language model (the course's policies)
    with transformers' SDPA attention, no cross-attention and no forward hooks (the step skips the
    ``forward`` of the model, its blocks and their attention, so their hooks would not run). Other
    models decode through their own ``forward`` and its cache."""
    config = model.config
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    return (isinstance(model, GPT2LMHeadModel) and getattr(config, "_attn_implementation", None) == "sdpa"
            and not config.add_cross_attention and not hooked)


def preallocate_kv(cache: Cache, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values ``[B, heads, P, d_head]`` from transformers' cache after the
    prompt, copied into buffers of ``width`` positions (prompt + new tokens) that
    ``gpt2_decode_step`` fills one column at a time."""
    kv = []
    for layer in cache.layers:
        batch, heads, prompt_width, head_dim = layer.keys.shape
        keys = layer.keys.new_empty((batch, heads, width, head_dim))
        values = layer.values.new_empty((batch, heads, width, head_dim))
        keys[:, :, :prompt_width], values[:, :, :prompt_width] = layer.keys, layer.values
        kv.append((keys, values))
    return kv


def gpt2_decode_step(model: GPT2LMHeadModel, input_ids: torch.Tensor, position_ids: torch.Tensor,
                     attention_mask: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One new token per row through GPT-2, with the keys and values of the earlier ones cached:
    the logits ``[B, 1, V]``.

    ``input_ids`` and ``position_ids`` are ``[B, 1]``; ``attention_mask`` ``[B, T]`` covers every
    position so far, the new one last; ``kv`` holds each layer's preallocated keys and values
    (``preallocate_kv``), whose column ``T − 1`` this step writes. Each block:

        q, k, v = LayerNorm(x) W_qkv                   (k and v go into the cache's column T − 1)
        x = x + softmax(q K[:T]ᵀ / √d_head, masked) V[:T] W_o    (per head)
        x = x + MLP(LayerNorm(x))

    It is transformers' own GPT-2 step (its modules, the same operations in the same order, so
    the logits are equal bit for bit), with one difference: transformers' cache concatenates each
    layer's keys and values with the new ones at every step, a copy of the whole cache, where this
    writes one column of a buffer allocated once. Dropout is left out: ``generate`` samples in eval mode.
    """
    transformer = model.transformer
    batch, width = attention_mask.shape
    may_attend = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T]: padding is never attended to
    x = transformer.wte(input_ids) + transformer.wpe(position_ids)
    for block, (keys, values) in zip(transformer.h, kv):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(x)).split(attn.embed_dim, dim=2)
        keys[:, :, width - 1] = k.view(batch, attn.num_heads, attn.head_dim)
        values[:, :, width - 1] = v.view(batch, attn.num_heads, attn.head_dim)
        q = q.view(batch, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
        # scale: 1/√d_head (transformers 5.0's attention has no ``scaling`` and leaves it to SDPA's default)
        heads = F.scaled_dot_product_attention(q, keys[:, :, :width], values[:, :, :width], attn_mask=may_attend,
                                               scale=getattr(attn, "scaling", None))
        x = x + attn.c_proj(heads.transpose(1, 2).reshape(batch, 1, attn.embed_dim))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(transformer.ln_f(x))


@torch.no_grad()
def _sample_batch(model, tokenizer, prompt_batch: TokenBatch, max_new_tokens: int,
                  temperature: float, top_k: int, generator: torch.Generator | None):
    device = next(model.parameters()).device
    ids = prompt_batch.input_ids.to(device)
    mask = prompt_batch.attention_mask.to(device)
    eos = tokenizer.eos_token_id
    B, prompt_width = ids.shape
    done = torch.zeros(B, dtype=torch.bool, device=device)
    new_tokens = torch.full((B, max_new_tokens), tokenizer.pad_token_id, dtype=torch.long, device=device)
    # the attention mask of prompt + every new token, filled in as tokens arrive (a view per step, no copy)
    full_mask = torch.cat([mask.long(), torch.zeros((B, max_new_tokens), dtype=torch.long, device=device)], 1)
    new_mask = full_mask[:, prompt_width:]
    cache, kv = None, None
    cache_keyword = kv_cache_keyword(model)
    step_ids = ids
    context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    for t in range(max_new_tokens):
        step_mask = full_mask[:, : prompt_width + t]
        if t == 0:
            positions = position_ids_from_mask(step_mask)
        else:  # the last column of position_ids_from_mask(step_mask), without the cumulative sum
            positions = (step_mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)
        if context is not None and int(positions[:, -1].max()) >= context:
            # the position embedding would be indexed past its end: say so instead of an IndexError
            raise ValueError(f"a prompt plus {t} new tokens fills the model's context of {context} positions; "
                             f"shorten the prompts (max_prompt_length) or max_new_tokens")
        positions = positions[:, -step_ids.shape[1]:]
        if kv is not None:  # a GPT-2 after the prompt
            logits = gpt2_decode_step(model, step_ids, positions, step_mask, kv)[:, -1, :]
        else:  # the prompt, in one pass (and every step of a model gpt2_decode_step does not run)
            out = model(input_ids=step_ids, attention_mask=step_mask, position_ids=positions, use_cache=True,
                        **{cache_keyword: cache})
            cache = getattr(out, cache_keyword)
            logits = out.logits[:, -1, :]
            if t == 0 and decodes_gpt2(model):
                kv, cache = preallocate_kv(cache, prompt_width + max_new_tokens), None
        logits = logits.float() / temperature
        if top_k:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        token = sample_tokens(torch.softmax(logits, dim=-1).cpu(), generator).to(device)
        token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id), token)
        new_tokens[:, t] = token
        new_mask[:, t] = (~done).long()
        done |= token == eos
        step_ids = token[:, None]
        if done.all():
            new_tokens, new_mask = new_tokens[:, : t + 1], new_mask[:, : t + 1]
            break
    return new_tokens.cpu(), new_mask.contiguous().cpu(), (~done).cpu()


def generate(model, tokenizer: PreTrainedTokenizerBase, prompts: list[str], *, max_new_tokens: int = 32,
             temperature: float = 1.0, top_k: int = 0, batch_size: int = 64, max_prompt_length: int = 96,
             seed: int | None = None, progress: bool = True) -> Generation:
    """Sample one response per prompt (prompts are model-ready text).

    Returns decoded responses and the token batch (prompt + response, left-padded) with its
    response mask, ready for scoring with ``sequence_logprobs``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not prompts:
        raise ValueError("empty batch: no prompts given")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="sampling", leave=False, disable=not progress or len(starts) < 2):
        pb = encode_prompts(tokenizer, prompts[start:start + batch_size], max_prompt_length)
        toks, tmask, truncated = _sample_batch(model, tokenizer, pb, max_new_tokens, temperature, top_k, generator)
        chunks.append((pb, toks, tmask, truncated))
    model.train(was_training)
    return _assemble(tokenizer, prompts, chunks)


def _assemble(tokenizer, prompts, chunks) -> Generation:
    rows, resp_lens, responses, truncated = [], [], [], []
    for pb, toks, tmask, trunc in chunks:
        for i in range(len(pb)):
            prompt_ids = pb.input_ids[i][pb.attention_mask[i].bool()].tolist()
            resp = toks[i][tmask[i].bool()].tolist()
            rows.append(prompt_ids + resp)
            resp_lens.append(len(resp))
            text_ids = resp[:-1] if resp and resp[-1] == tokenizer.eos_token_id else resp
            responses.append(tokenizer.decode(text_ids, skip_special_tokens=False))
        truncated.append(trunc)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    response_mask = torch.zeros_like(input_ids)
    for i, (row, n) in enumerate(zip(rows, resp_lens)):
        input_ids[i, width - len(row):] = torch.tensor(row)
        attention_mask[i, width - len(row):] = 1
        if n:
            response_mask[i, width - n:] = 1
    return Generation(list(prompts), responses, TokenBatch(input_ids, attention_mask, response_mask),
                      torch.cat(truncated))


def best_of_n_kl(n: int) -> float:
    """KL(π_BoN ‖ π) = log n − (n − 1)/n: the analytic KL of best-of-n sampling.

    Exact for continuous rewards (no ties); ties make the measured KL slightly smaller.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n

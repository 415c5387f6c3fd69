"""Turning (prompt, response) text into padded token batches with a response mask.

Batches are left-padded, so every sequence ends at the last column and generation can continue
all rows at once. ``response_mask`` marks the response tokens (including the EOS that ends each
response); losses and log-probs are computed on those positions only. Masks come from explicit
lengths, never from ``token != pad``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class TokenBatch:
    input_ids: torch.Tensor
    """[B, T] token ids, left-padded"""
    attention_mask: torch.Tensor
    """[B, T] 1 on real tokens"""
    response_mask: torch.Tensor
    """[B, T] 1 on response tokens (the EOS included)"""

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device),
                          self.response_mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Batching needs a pad token and an EOS token; say so clearly when one is missing."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token (e.g. to its EOS) first")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: responses cannot be terminated")


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str],
                 max_length: int, add_eos: bool = True) -> TokenBatch:
    """Tokenize prompt + response pairs into one left-padded batch.

    ``prompts`` are model-ready text (already formatted with the chat template where one applies).
    A pair longer than ``max_length`` tokens keeps at most ``max_length − 1`` response tokens (the
    end of a long response goes, EOS included) and the end of its prompt, with a warning.
    """
    check_tokenizer(tokenizer)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("empty batch: no prompts given")
    prompt_ids, response_ids = [], []
    for prompt, response in zip(prompts, responses):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not p:
            raise ValueError(f"prompt {prompt!r} tokenizes to nothing; a response needs a prefix")
        prompt_ids.append(p)
        response_ids.append(tokenizer(response, add_special_tokens=False)["input_ids"])
    if add_eos:
        response_ids = [r + [tokenizer.eos_token_id] for r in response_ids]
    batch, truncated = _pad_pairs(prompt_ids, response_ids, max_length, tokenizer.pad_token_id)
    if truncated:
        _warn_truncated(max_length)
    return batch


def tokenize_pairs(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str],
                   add_eos: bool = True) -> tuple[list[list[int]], list[list[int]]]:
    """The token ids of each prompt and of each response (the EOS appended), unpadded.

    A trainer tokenizes its data set once with this and pads each minibatch with
    ``collate_pairs``, which builds the batch ``encode_pairs`` would build from the text.
    """
    check_tokenizer(tokenizer)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        return [], []
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    for prompt, ids in zip(prompts, prompt_ids):
        if not ids:
            raise ValueError(f"prompt {prompt!r} tokenizes to nothing; a response needs a prefix")
    if add_eos:
        response_ids = [r + [tokenizer.eos_token_id] for r in response_ids]
    return prompt_ids, response_ids


def collate_pairs(prompt_ids: list[list[int]], response_ids: list[list[int]], max_length: int,
                  pad_token_id: int) -> TokenBatch:
    """One left-padded batch from token ids (``tokenize_pairs``), cut to ``max_length`` as
    ``encode_pairs`` cuts."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if not prompt_ids:
        raise ValueError("empty batch: no prompts given")
    if any(not p for p in prompt_ids):
        raise ValueError("a prompt has no tokens; a response needs a prefix")
    batch, truncated = _pad_pairs(prompt_ids, response_ids, max_length, pad_token_id)
    if truncated:
        _warn_truncated(max_length)
    return batch


def tokenize_preferences(tokenizer: PreTrainedTokenizerBase, prompts: list[str], chosen: list[str],
                         rejected: list[str]) -> dict[str, list[list[int]]]:
    """Token ids of each model-ready prompt and of its chosen and rejected responses (EOS appended),
    once for a whole data set: ``{"prompt": ..., "chosen": ..., "rejected": ...}``."""
    n = len(prompts)
    prompt_ids, response_ids = tokenize_pairs(tokenizer, prompts + prompts, list(chosen) + list(rejected))
    return {"prompt": prompt_ids[:n], "chosen": response_ids[:n], "rejected": response_ids[n:]}


def collate_preferences(tokens: dict[str, list[list[int]]], indices: list[int], max_length: int,
                        pad_token_id: int) -> TokenBatch:
    """The 2B rows of pairs ``indices``: the B (prompt, chosen) rows, then the B (prompt, rejected)
    rows, from ``tokenize_preferences``' ids."""
    prompts = [tokens["prompt"][i] for i in indices]
    responses = [tokens["chosen"][i] for i in indices] + [tokens["rejected"][i] for i in indices]
    return collate_pairs(prompts + prompts, responses, max_length, pad_token_id)


def _warn_truncated(max_length: int) -> None:
    # one constant message, so Python shows it once per call site rather than every batch
    warnings.warn(f"prompt + response pairs longer than max_length = {max_length} tokens are being "
                  "truncated (the end of the response, then the start of the prompt)", stacklevel=3)


def _pad_pairs(prompt_ids: list[list[int]], response_ids: list[list[int]], max_length: int,
               pad_token_id: int) -> tuple[TokenBatch, int]:
    """Cut each pair to ``max_length`` and left-pad; returns the batch and the number of pairs cut."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (a prompt token and a response token), got {max_length}")
    rows, resp_lens, truncated = [], [], 0
    for p, r in zip(prompt_ids, response_ids):
        truncated += len(p) + len(r) > max_length
        r = r[: max_length - 1]
        p = p[-(max_length - len(r)):]
        rows.append(p + r)
        resp_lens.append(len(r))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n_resp) in enumerate(zip(rows, resp_lens)):
        input_ids[i, width - len(row):] = torch.tensor(row)
        attention_mask[i, width - len(row):] = 1
        if n_resp:
            response_mask[i, width - n_resp:] = 1
    return TokenBatch(input_ids, attention_mask, response_mask), truncated


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_length: int) -> TokenBatch:
    """Left-padded prompts alone (for generation); the response mask is all zero.

    A prompt longer than ``max_length`` tokens keeps its last ``max_length`` tokens (the ones next
    to the response), with a warning."""
    check_tokenizer(tokenizer)
    if not prompts:
        raise ValueError("empty batch: no prompts given")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    full = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(len(r) > max_length for r in full):
        warnings.warn(f"prompts longer than max_length = {max_length} tokens are losing their start",
                      stacklevel=2)
    rows = [r[-max_length:] for r in full]
    if any(not r for r in rows):
        raise ValueError("a prompt tokenizes to nothing; generation needs a prefix")
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row):] = torch.tensor(row)
        attention_mask[i, width - len(row):] = 1
    return TokenBatch(input_ids, attention_mask, torch.zeros_like(input_ids))

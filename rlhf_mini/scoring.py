"""Scoring responses: with a trained reward model (the proxy) or with the world's gold reward.

A scorer is any ``scorer(prompts, responses) -> [len(prompts)]`` function of raw prompts (not
chat-formatted). PPO, best-of-N and rejection sampling take one; ``score_texts`` scores exactly as
the reward model was trained to read: the world's chat format, the response, and the EOS at which
the score is read. ``sample_pool`` and ``score_pool`` draw and score n responses per prompt, the
pool that best-of-N and rejection sampling choose from.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from rlhf_mini.batch import encode_pairs
from rlhf_mini.models import ScalarHeadModel
from rlhf_mini.sampling import generate

Scorer = Callable[[list[str], list[str]], np.ndarray]
"""``scorer(prompts, responses) -> [len(prompts)]`` scores; prompts are raw (not chat-formatted)."""


def score_texts(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world, prompts: list[str],
                responses: list[str], batch_size: int = 64, max_length: int | None = None) -> np.ndarray:
    """Reward-model scores of raw ``prompts`` (formatted with ``world.format_prompt``) and responses.

    Batched, without gradients, in eval mode; returns a float array of shape ``[len(prompts)]``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("empty batch: no prompts given")
    max_length = max_length or reward_model.config.n_positions
    device = next(reward_model.parameters()).device
    was_training = reward_model.training
    reward_model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            text = [world.format_prompt(p) for p in prompts[start:start + batch_size]]
            batch = encode_pairs(tokenizer, text, list(responses[start:start + batch_size]), max_length).to(device)
            out.append(reward_model.score(batch.input_ids, batch.attention_mask).float().cpu())
    reward_model.train(was_training)
    return torch.cat(out).numpy()


def gold_scorer(world) -> Scorer:
    """Score with the world's hidden gold reward (an oracle, for comparison)."""
    return world.gold_rewards


def reward_model_scorer(rm, tokenizer, world, batch_size: int | None = None) -> Scorer:
    """Score with a trained reward model (the proxy) through ``score_texts``."""

    def score(prompts: list[str], responses: list[str]) -> np.ndarray:
        if batch_size is None:
            return np.asarray(score_texts(rm, tokenizer, world, prompts, responses), dtype=float)
        return np.concatenate([
            np.asarray(score_texts(rm, tokenizer, world, prompts[i:i + batch_size],
                                   responses[i:i + batch_size]), dtype=float)
            for i in range(0, len(prompts), batch_size)])

    return score


def sample_pool(policy, tokenizer, world, prompts: list[str], n: int, *, max_new_tokens: int = 32,
                temperature: float = 1.0, top_k: int = 0, batch_size: int = 256, seed: int = 0,
                progress: bool = True) -> list[list[str]]:
    """``n`` independent samples per prompt, ``[P][n]``; all P·n rows are generated in big batches."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not prompts:
        raise ValueError("no prompts given")
    formatted = [world.format_prompt(p) for p in prompts for _ in range(n)]
    gen = generate(policy, tokenizer, formatted, max_new_tokens=max_new_tokens, temperature=temperature,
                   top_k=top_k, batch_size=batch_size, seed=seed, progress=progress)
    return [gen.responses[i * n:(i + 1) * n] for i in range(len(prompts))]


def score_pool(scorer: Scorer, prompts: list[str], samples: list[list[str]]) -> np.ndarray:
    """``[P, n]`` scores of a ``[P][n]`` pool, in one call to ``scorer``."""
    flat_prompts = [p for p, row in zip(prompts, samples) for _ in row]
    flat_responses = [r for row in samples for r in row]
    scores = np.asarray(scorer(flat_prompts, flat_responses), dtype=float)
    if scores.shape != (len(flat_prompts),):
        raise ValueError(f"scorer returned shape {scores.shape}, expected ({len(flat_prompts)},)")
    return scores.reshape(len(prompts), -1)

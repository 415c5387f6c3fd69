"""Pretraining the course's base language model on the course corpus.

The corpus mixes the three task worlds' text: atlas entries and forum transcripts (assistant),
worked arithmetic, and reviews. A byte-level BPE is trained on it, then a GPT-2 of the profile's
shape learns next-token prediction, L = −Σ_t log p(x_t | x_<t), with AdamW and a cosine schedule.
Everything is seeded, so the same profile always gives the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_mini.config import Profile, get_device
from rlhf_mini.models import EOS_TOKEN, new_policy, train_tokenizer
from rlhf_mini.worlds import WORLDS, get_world


@dataclass
class PretrainResult:
    model: torch.nn.Module
    tokenizer: object
    metrics: list[dict[str, float]]


def course_corpus(profile: Profile, seed: int = 0) -> list[str]:
    """``profile.corpus_docs`` documents from each world, shuffled together."""
    rng = np.random.default_rng(seed)
    docs: list[str] = []
    for name in sorted(WORLDS):
        docs.extend(get_world(name).corpus(profile.corpus_docs, rng))
    order = rng.permutation(len(docs))
    return [docs[i] for i in order]


def _token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    ids = tokenizer([d + EOS_TOKEN for d in docs], add_special_tokens=False)["input_ids"]
    return torch.tensor([t for row in ids for t in row], dtype=torch.long)


def pretrain_base_model(profile: Profile, seed: int = 0, progress: bool = True) -> PretrainResult:
    """Train the tokenizer and the base model; return them with the loss curve."""
    torch.manual_seed(seed)
    docs = course_corpus(profile, seed)
    n_val = max(len(docs) // 50, 1)
    tokenizer = train_tokenizer(docs[n_val:], profile.vocab_size)
    train_stream = _token_stream(tokenizer, docs[n_val:])
    val_stream = _token_stream(tokenizer, docs[:n_val])
    device = get_device()
    model = new_policy(profile, tokenizer, seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.pretrain_lr, betas=(0.9, 0.95),
                                  weight_decay=0.1)
    warmup = max(profile.pretrain_steps // 20, 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_frac = (step - warmup) / max(profile.pretrain_steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    gen = torch.Generator().manual_seed(seed)
    seq, bs = profile.pretrain_seq, profile.pretrain_batch
    metrics = []
    model.train()
    bar = tqdm(range(profile.pretrain_steps), desc="pretraining base model", disable=not progress)
    for step in bar:
        starts = torch.randint(0, len(train_stream) - seq - 1, (bs,), generator=gen)
        x = torch.stack([train_stream[s:s + seq] for s in starts]).to(device)
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        row = {"step": step, "loss": loss.item()}
        if step % 100 == 0 or step == profile.pretrain_steps - 1:
            row["val_loss"] = validation_loss(model, val_stream, seq, bs)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row['val_loss']:.3f}")
        metrics.append(row)
    model.eval()
    return PretrainResult(model.cpu(), tokenizer, metrics)


@torch.no_grad()
def validation_loss(model, stream: torch.Tensor, seq: int, batch: int, max_batches: int = 8) -> float:
    """Mean next-token loss on held-out text (perplexity = exp of it)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = min(max_batches, (len(stream) - 1) // (seq * batch))
    if n == 0:
        return float("nan")
    losses = []
    for b in range(n):
        chunk = stream[b * seq * batch:(b + 1) * seq * batch].view(batch, seq).to(device)
        losses.append(model(input_ids=chunk, labels=chunk).loss.item())
    model.train(was_training)
    return float(np.mean(losses))

"""A tiny GPT-2 for a user's own text, so that ``--data`` works offline without a hub model.

A byte-level BPE is trained on the data's text and a small GPT-2 learns next-token prediction on
it, L = −Σ_t log p(x_t | x_<t), for a few hundred steps: enough to read the text's words, in a
minute or two on a laptop. The artifact is keyed by a hash of the text itself (and the config and
code), like every zoo artifact, so a second run on the same file loads it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlhf_mini import models, training
from rlhf_mini.config import get_device, get_profile
from rlhf_mini.models import EOS_TOKEN, new_policy, train_tokenizer
from rlhf_mini.training import lr_at, optimizer_step
from rlhf_mini.zoo import cached


@dataclass(frozen=True)
class TextModelConfig:
    """The shape and the short pretraining run of a GPT-2 for one data set's text."""

    vocab_size: int = 1024
    """BPE vocabulary (a small corpus may stop with fewer merges)"""
    n_layer: int = 2
    """transformer blocks"""
    n_embd: int = 128
    """width"""
    n_head: int = 4
    """attention heads"""
    n_ctx: int = 256
    """longest sequence in tokens"""
    max_steps: int = 300
    """pretraining steps"""
    batch_size: int = 16
    """windows per step"""
    seq_len: int = 128
    """tokens per window"""
    learning_rate: float = 3e-3
    """peak AdamW learning rate (cosine decay to a tenth)"""
    seed: int = 0
    """seeds the initialisation and the windows"""


def text_digest(texts: list[str]) -> str:
    """A hash of the texts, in order."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def pretrain_on_texts(texts: list[str], config: TextModelConfig, progress: bool = True):
    """Train the tokenizer and the GPT-2 on ``texts``; return ``(model, tokenizer, metrics)``."""
    torch.manual_seed(config.seed)
    tokenizer = train_tokenizer(texts, config.vocab_size)
    ids = tokenizer([t + EOS_TOKEN for t in texts], add_special_tokens=False)["input_ids"]
    stream = torch.tensor([t for row in ids for t in row], dtype=torch.long)
    seq = min(config.seq_len, len(stream) - 1)
    if seq < 8:
        raise ValueError(f"the data holds {len(stream)} tokens, too little text to pretrain a model on")
    shape = get_profile("cpu").replace(n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head,
                                       n_ctx=config.n_ctx)
    device = get_device()
    model = new_policy(shape, tokenizer, config.seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(config.seed)
    metrics = []
    model.train()
    bar = tqdm(range(config.max_steps), desc="pretraining a GPT-2 on the data's text", disable=not progress)
    for step in bar:
        starts = torch.randint(0, len(stream) - seq, (config.batch_size,), generator=gen)
        x = torch.stack([stream[s:s + seq] for s in starts]).to(device)
        lr = lr_at(step, learning_rate=config.learning_rate, warmup_steps=max(1, config.max_steps // 20),
                   max_steps=config.max_steps, min_lr_ratio=0.1)
        loss = model(input_ids=x, labels=x).loss
        optimizer_step(optimizer, loss, model.parameters(), 1.0, lr)
        metrics.append({"step": step + 1, "loss": float(loss.detach()), "lr": lr})
        bar.set_postfix(loss=f"{metrics[-1]['loss']:.3f}")
    return model.cpu().eval(), tokenizer, metrics


def text_model_path(texts: list[str], config: TextModelConfig | None = None, progress: bool = True) -> Path:
    """The folder of the GPT-2 pretrained on ``texts`` and its tokenizer (built on first use)."""
    config = config or TextModelConfig()

    def build(folder: Path) -> None:
        model, tokenizer, metrics = pretrain_on_texts(texts, config, progress)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    key = {"texts": text_digest(texts), "n_texts": len(texts), **asdict(config)}
    return cached("text-gpt2", key, [sys.modules[__name__], models, training], build)

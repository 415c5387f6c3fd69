"""Supervised fine-tuning (SFT): teach the base model to answer in the chat format.

The base model has read forum transcripts of mixed quality; SFT continues training on careful
demonstrations ``(x, y)`` and counts the loss on the response tokens only (InstructGPT, Ouyang et
al. 2022, §3.5; the "completion-only" loss of TRL):

    L(θ) = − Σ_i Σ_{t ∈ resp(i)} log π_θ(y_t | x, y_<t)  /  Σ_i |resp(i)|

``resp(i)`` holds the response tokens of example ``i`` and its closing EOS (so the model learns to
stop); the prompt (system prompt, user turn, ``<|assistant|>`` tag) and the padding carry no loss:
they are the condition, not the target. The mean is over all response tokens of the batch, so a
long answer weighs more than a short one, as in a plain language-model loss.

Everything else is the plainest loop that works, from ``rlhf_mini.training``: AdamW, linear
warm-up then cosine decay (``lr_at``), gradient clipping, one optimizer step per minibatch. A
checkpoint folder holds the model (``save_pretrained``), the tokenizer, and ``trainer_state.pt``
(optimizer state, step, metrics, torch RNG state), so a resumed run continues with exactly the
next step's loss.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf_mini import distributed
from rlhf_mini.batch import TokenBatch, check_tokenizer, encode_pairs
from rlhf_mini.config import Profile
from rlhf_mini.losses import response_nll
from rlhf_mini.models import position_ids_from_mask
from rlhf_mini.training import (
    batch_indices,
    load_checkpoint,
    lr_at,
    optimizer_step,
    save_checkpoint,
)
from rlhf_mini.worlds import get_world


@dataclass
class SFTConfig:
    """Supervised fine-tuning on demonstrations, loss on the response tokens only."""

    task: str = "assistant"
    """the world whose ``format_prompt`` turns a raw prompt into model-ready text"""
    max_steps: int = 150
    """optimizer steps (one minibatch each)"""
    batch_size: int = 32
    """examples per minibatch"""
    learning_rate: float = 1e-3
    """peak AdamW learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay (off: a short fine-tune on a small model does not need it)"""
    warmup_steps: int = 10
    """steps of linear learning-rate warm-up from 0"""
    min_lr_ratio: float = 0.1
    """the cosine decay ends at ``learning_rate * min_lr_ratio``"""
    max_grad_norm: float = 1.0
    """clip the global gradient norm to this value"""
    max_length: int = 96
    """longest prompt + response in tokens (the prompt is cut from the left first)"""
    n_examples: int = 2000
    """demonstrations drawn from the world for the cached getter"""
    seed: int = 0
    """seeds the demonstrations and the minibatch order"""

    @classmethod
    def from_profile(cls, profile: Profile, task: str = "assistant") -> SFTConfig:
        """Sizes read from a profile.

        The CPU profile asks for ``sft_steps=300``; half of that is enough here: the demonstrations
        are short and repetitive, the held-out response loss flattens after about 100 steps at
        batch 32, and 150 steps fit the chapter's time budget. The learning rate is a third of the
        pretraining rate (a fine-tune should move the weights less than pretraining did).
        """
        return cls(task=task, max_steps=max(1, profile.sft_steps // 2), batch_size=profile.batch_size,
                   learning_rate=profile.pretrain_lr / 3, max_length=profile.n_ctx,
                   n_examples=max(profile.n_preference_pairs, profile.batch_size))


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def sft_loss(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """The SFT loss of one token batch (left-padded; positions restart at each row's first token)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids_from_mask(batch.attention_mask))
    return response_nll(out.logits, batch.input_ids, batch.response_mask)


def encode_examples(tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, str]], task: str,
                    max_length: int) -> TokenBatch:
    """Format each raw prompt with the world's chat template and tokenize prompt + response + EOS."""
    world = get_world(task)
    prompts = [world.format_prompt(e["prompt"]) for e in examples]
    return encode_pairs(tokenizer, prompts, [e["response"] for e in examples], max_length, add_eos=True)


def _check_examples(examples: list[dict[str, str]]) -> None:
    if not examples:
        raise ValueError("no SFT examples given: pass a non-empty list of {'prompt', 'response'} dicts")
    for i, e in enumerate(examples):
        for key in ("prompt", "response"):
            if not isinstance(e.get(key), str):
                raise ValueError(f"SFT example {i}: field '{key}' is missing or not a string")


@torch.no_grad()
def evaluate_sft(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, str]],
                 task: str = "assistant", max_length: int = 96, batch_size: int = 64) -> float:
    """Mean response NLL over ``examples`` (token-weighted), in eval mode."""
    _check_examples(examples)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = encode_examples(tokenizer, examples[start:start + batch_size], task, max_length).to(device)
        n_tok = int(batch.response_mask[:, 1:].sum())
        total += float(sft_loss(model, batch)) * n_tok
        count += n_tok
    model.train(was_training)
    return total / count


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


def train_sft(config: SFTConfig, model, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, str]],
              *, eval_examples: list[dict[str, str]] | None = None, checkpoint_dir: str | Path | None = None,
              checkpoint_every: int = 0, resume_from: str | Path | None = None,
              progress: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """Fine-tune ``model`` on ``examples`` (dicts with raw ``prompt`` and ``response``).

    Returns the model (trained in place) and the per-step metrics: ``loss`` (mean response NLL of
    the minibatch), ``lr``, ``grad_norm``, ``tokens`` (response tokens in the minibatch) and, at the
    end when ``eval_examples`` are given, ``eval/loss``. With ``checkpoint_dir`` and
    ``checkpoint_every`` a checkpoint is written every that many steps; ``resume_from`` continues
    from one (weights, optimizer, step and metrics).
    """
    _check_examples(examples)
    check_tokenizer(tokenizer)
    if config.max_steps < 1 or config.batch_size < 1:
        raise ValueError(f"max_steps and batch_size must be >= 1, got {config.max_steps} and {config.batch_size}")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    start, metrics = 0, []
    if resume_from is not None:
        state = load_checkpoint(resume_from, {"": model}, optimizer)
        start, metrics = state["step"], list(state["metrics"])
    model.train()
    # under torchrun, DDP: each rank its shard of the minibatch, and the gradients of the ranks'
    # token-mean losses averaged (as transformers' Trainer does); one process: sft_loss itself
    loss_fn = distributed.wrap(model, sft_loss)
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.max_steps), desc="SFT", disable=not progress or not distributed.is_main(),
               leave=False)
    for step in bar:
        idx = distributed.shard(batch_indices(step, len(examples), config.batch_size, config.seed))
        batch = encode_examples(tokenizer, [examples[i] for i in idx], config.task, config.max_length).to(device)
        lr = lr_at(step, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                   max_steps=config.max_steps, min_lr_ratio=config.min_lr_ratio)
        loss = loss_fn(batch)
        grad_norm = optimizer_step(optimizer, loss, model.parameters(), config.max_grad_norm, lr)
        metrics.append({"step": step + 1, "loss": distributed.mean(float(loss.detach())), "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens": int(batch.response_mask[:, 1:].sum()),
                        "elapsed": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if (checkpoint_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0
                and distributed.is_main()):
            save_checkpoint(Path(checkpoint_dir) / f"step-{step + 1}", {"": model},
                            {"step": step + 1, "metrics": metrics, "config": asdict(config)},
                            optimizer=optimizer, tokenizer=tokenizer)
    if eval_examples:
        metrics[-1]["eval/loss"] = evaluate_sft(model, tokenizer, eval_examples, config.task, config.max_length)
    model.eval()
    return model, metrics

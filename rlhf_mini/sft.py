"""Supervised fine-tuning (SFT): teach the base model to answer in the chat format.

The base model has read forum transcripts of mixed quality; SFT continues training on careful
demonstrations ``(x, y)`` and counts the loss on the response tokens only (InstructGPT, Ouyang et
al. 2022, §3.5; the "completion-only" loss of TRL):

    L(θ) = − Σ_i Σ_{t ∈ resp(i)} log π_θ(y_t | x, y_<t)  /  Σ_i |resp(i)|

``resp(i)`` holds the response tokens of example ``i`` and its closing EOS (so the model learns to
stop); the prompt (system prompt, user turn, ``<|assistant|>`` tag) and the padding carry no loss:
they are the condition, not the target. The mean is over all response tokens of the batch, so a
long answer weighs more than a short one, as in a plain language-model loss.

Everything else is the plainest loop that works: AdamW, linear warm-up then cosine decay (computed
by hand each step), gradient clipping, one optimizer step per minibatch. A checkpoint folder holds
the model (``save_pretrained``), the tokenizer, and ``trainer_state.pt`` (optimizer state, step,
metrics, torch RNG state), so a resumed run continues with exactly the next step's loss.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf_mini.batch import TokenBatch, check_tokenizer, encode_pairs
from rlhf_mini.config import Profile, get_device, get_profile
from rlhf_mini.losses import masked_mean
from rlhf_mini.models import position_ids_from_mask

TRAINER_STATE = "trainer_state.pt"


@dataclass
class SFTConfig:
    """Supervised fine-tuning on demonstrations, loss on the response tokens only."""

    task: str = "assistant"
    """the world whose ``format_prompt`` turns a raw prompt into model-ready text"""
    steps: int = 150
    """optimizer steps (one minibatch each)"""
    batch_size: int = 32
    """examples per minibatch"""
    lr: float = 1e-3
    """peak AdamW learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay (off: a short fine-tune on a small model does not need it)"""
    warmup_steps: int = 10
    """steps of linear learning-rate warm-up from 0"""
    min_lr_ratio: float = 0.1
    """the cosine decay ends at ``lr * min_lr_ratio``"""
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
        return cls(task=task, steps=max(1, profile.sft_steps // 2), batch_size=profile.batch_size,
                   lr=profile.pretrain_lr / 3, max_length=profile.n_ctx,
                   n_examples=max(profile.n_preference_pairs, profile.batch_size))


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def response_nll(logits: torch.Tensor, labels: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``labels`` at the response positions.

    ``logits[:, t]`` predicts token ``t + 1``, so the targets are ``labels[:, 1:]`` and the mask is
    ``response_mask[:, 1:]``. A label outside the mask never reaches the result (it is removed by
    ``masked_mean`` with ``torch.where``), so prompt and padding tokens carry neither loss nor
    gradient.
    """
    if logits.shape[:2] != labels.shape or labels.shape != response_mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must agree on [B, T]")
    targets = labels[:, 1:]
    mask = response_mask[:, 1:].bool()
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                          reduction="none").view_as(targets)
    return masked_mean(nll, mask)


def sft_loss(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """The SFT loss of one token batch (left-padded; positions restart at each row's first token)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids_from_mask(batch.attention_mask))
    return response_nll(out.logits, batch.input_ids, batch.response_mask)


def encode_examples(tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, str]], task: str,
                    max_length: int) -> TokenBatch:
    """Format each raw prompt with the world's chat template and tokenize prompt + response + EOS."""
    from rlhf_mini.worlds import get_world

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


def lr_at(step: int, config: SFTConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The example indices of minibatch ``step``: a fresh permutation each epoch.

    A pure function of (step, seed), so a resumed run sees exactly the minibatches it would have.
    """
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch_size:
        return perm
    return perm[k * batch_size:(k + 1) * batch_size]


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
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(folder: str | Path, model, tokenizer, optimizer: torch.optim.Optimizer, step: int,
                    metrics: list[dict[str, Any]], config: Any) -> Path:
    """Write the model, tokenizer and trainer state (optimizer, step, metrics, RNG) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "metrics": metrics,
                "config": asdict(config), "torch_rng": torch.get_rng_state()}, folder / TRAINER_STATE)
    return folder


def load_trainer_state(folder: str | Path) -> dict[str, Any]:
    """The ``trainer_state.pt`` of a checkpoint folder.

    Loaded onto the CPU, so that a run saved on a GPU resumes on a machine without one: the RNG
    state must be a CPU tensor, and ``optimizer.load_state_dict`` moves the optimizer's moments to
    the parameters' device.
    """
    path = Path(folder) / TRAINER_STATE
    if not path.is_file():
        raise ValueError(f"{folder}: not a checkpoint folder (no {TRAINER_STATE})")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_sft_checkpoint(folder: str | Path):
    """``(model, tokenizer)`` from an SFT checkpoint or a finished SFT artifact folder."""
    from rlhf_mini.models import load_pretrained

    model, tokenizer = load_pretrained(folder)
    return model.to(get_device()), tokenizer


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
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {config.steps} and {config.batch_size}")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    start, metrics = 0, []
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        from transformers import AutoModelForCausalLM

        weights = AutoModelForCausalLM.from_pretrained(str(resume_from)).state_dict()
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, metrics = state["step"], list(state["metrics"])
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.steps), desc="SFT", disable=not progress, leave=False)
    for step in bar:
        idx = batch_indices(step, len(examples), config.batch_size, config.seed)
        batch = encode_examples(tokenizer, [examples[i] for i in idx], config.task, config.max_length).to(device)
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = sft_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        metrics.append({"step": step + 1, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(grad_norm),
                        "tokens": int(batch.response_mask[:, 1:].sum()),
                        "elapsed": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if checkpoint_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save_checkpoint(Path(checkpoint_dir) / f"step-{step + 1}", model, tokenizer, optimizer,
                            step + 1, metrics, config)
    if eval_examples:
        metrics[-1]["eval/loss"] = evaluate_sft(model, tokenizer, eval_examples, config.task, config.max_length)
    model.eval()
    return model, metrics


# --------------------------------------------------------------------------------------------
# The zoo artifact
# --------------------------------------------------------------------------------------------


def sft_policy_path(task: str = "assistant", profile: Profile | None = None) -> Path:
    """The folder of the cached SFT policy for ``task`` (built on first use from the base model)."""
    from rlhf_mini import batch, losses, models, zoo
    from rlhf_mini.worlds import get_world

    profile = profile or get_profile()
    config = SFTConfig.from_profile(profile, task)
    world = get_world(task)  # fails early on an unknown task
    base_path = zoo.base_model_path(profile)

    def build(folder: Path) -> None:
        from rlhf_mini.utils import set_seed

        set_seed(config.seed)
        model, tok = zoo.base_model(profile)
        examples = world.demonstrations(config.n_examples, seed=config.seed)
        held_out = world.demonstrations(256, seed=config.seed + 1)
        model, metrics = train_sft(config, model, tok, examples, eval_examples=held_out)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    key = {"task": task, "base": base_path.name, **asdict(config)}
    return zoo.cached(f"sft-{task}-{profile.name}", key, [sys.modules[__name__], batch, losses, models], build)


def sft_policy(task: str = "assistant", profile: Profile | None = None):
    """The SFT policy for ``task`` and its tokenizer: the base model fine-tuned on the world's
    demonstrations (cached).

    Every world is treated alike: the sentiment world's "demonstrations" are its own reviews (of all
    star ratings), so its SFT policy learns the review format, not a positive slant; the
    arithmetic world's demonstrations are worked solutions.
    """
    from rlhf_mini.models import load_pretrained

    model, tok = load_pretrained(sft_policy_path(task, profile))
    return model.to(get_device()).eval(), tok


def sft_metrics(task: str = "assistant", profile: Profile | None = None) -> list[dict[str, Any]]:
    """The per-step metrics of the cached SFT run."""
    return json.loads((sft_policy_path(task, profile) / "metrics.json").read_text())

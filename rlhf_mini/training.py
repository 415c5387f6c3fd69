"""The training toolkit every trainer shares: the learning-rate schedule, the minibatch order, one
optimizer step, and one checkpoint format.

* ``lr_at``: linear warm-up from 0, then constant or a cosine decay to ``min_lr_ratio`` of the peak.
* ``batch_indices``: minibatch ``step`` is a pure function of ``(seed, step)``, a fresh permutation
  each epoch, so a resumed run sees exactly the minibatches the uninterrupted one would have.
* ``optimizer_step``: set the learning rate, backpropagate, clip the global gradient norm, step.
* ``save_checkpoint`` / ``load_checkpoint``: the models (``save_pretrained``, one subfolder each or
  the folder itself), the tokenizer, and ``trainer_state.pt`` (optimizer, torch RNG and whatever
  the trainer keeps: step, metrics, config). Loading restores all of it, so a resumed run has the
  same next-step loss as the uninterrupted run.
* ``by_length`` and ``fused_gelu``: two ways to do less work per step with the same numbers (up to
  float rounding): skip most of a batch's padding, and run GPT-2's activation as one kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import NewGELUActivation

TRAINER_STATE = "trainer_state.pt"
SCHEDULES = ("constant", "cosine")


def lr_at(step: int, *, learning_rate: float, warmup_steps: int, max_steps: int, schedule: str = "cosine",
          min_lr_ratio: float = 0.0) -> float:
    """Linear warm-up to ``learning_rate`` over ``warmup_steps``, then constant or cosine decay.

        warm-up:  lr_s = η · (s + 1) / warmup_steps
        cosine:   lr_s = η · (ρ + (1 − ρ) · ½ (1 + cos(π · p))),   p = (s − warmup) / (max_steps − warmup)

    with ρ = ``min_lr_ratio`` (the cosine ends at η · ρ on the last step).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return learning_rate * (step + 1) / warmup_steps
    if schedule == "constant":
        return learning_rate
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return learning_rate * (min_lr_ratio + (1 - min_lr_ratio) * cosine)


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


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: Iterable[torch.nn.Parameter],
                   max_grad_norm: float, lr: float | None = None) -> torch.Tensor:
    """One update: set the learning rate (when given), backpropagate ``loss``, clip the global
    gradient norm of ``params`` to ``max_grad_norm``, step. Returns the norm before clipping."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    return grad_norm


def by_length(fn: Callable[..., torch.Tensor], input_ids: torch.Tensor, attention_mask: torch.Tensor,
              *masks: torch.Tensor, rows_per_group: int = 16) -> torch.Tensor:
    """``fn(input_ids, attention_mask, *masks)``, one value per row, computed on groups of rows of
    similar length, each group cut to its own longest row; the values come back in the original order.

    A left-padded batch is as wide as its longest row: in a DPO or reward-model batch, which mixes
    short and long answers, about 40 % of the positions are padding, and the model's every layer
    computes on them. Rows never interact, so each row's value is the same (up to float rounding)
    when it is computed in a narrower batch. A batch that is not left-padded runs whole.
    """
    if input_ids.shape[0] <= rows_per_group or not bool(attention_mask[:, -1].all()):
        return fn(input_ids, attention_mask, *masks)
    lengths = attention_mask.sum(1)
    order = torch.argsort(lengths, stable=True)
    values = []
    for rows in order.split(rows_per_group):
        width = int(lengths[rows].max())  # left padding: the real tokens are the last `width` columns
        values.append(fn(input_ids[rows, -width:], attention_mask[rows, -width:], *(m[rows, -width:] for m in masks)))
    return torch.cat(values)[torch.argsort(order)]


class _TanhGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


@contextmanager
def fused_gelu(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, GPT-2's activation runs as one kernel; the model is restored on exit.

        gelu_new(x) = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))

    transformers writes it as seven elementwise operations, each a pass over the ``[B, T, 4D]``
    MLP activations whose result autograd keeps for the backward pass: on a CPU, with the course's
    small models, more time than the matrix products. ``F.gelu(x, approximate="tanh")`` is the same
    function (equal up to float rounding) in one pass. Weights and config are untouched, so a model
    saved inside the block is the model saved outside it.
    """
    swapped = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is NewGELUActivation]
    for parent, name, _ in swapped:
        setattr(parent, name, _TanhGELU())
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def save_checkpoint(folder: str | Path, models: dict[str, Any], state: dict[str, Any], *,
                    optimizer: torch.optim.Optimizer | None = None, tokenizer=None) -> Path:
    """Write ``models`` (``{"": model}`` saves into ``folder`` itself, ``{"value": v}`` into
    ``folder/value``), the tokenizer, and ``trainer_state.pt``: ``state``, the optimizer and the
    torch RNG state."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for sub, model in models.items():
        model.save_pretrained(folder / sub)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    torch.save({**state, "optimizer": None if optimizer is None else optimizer.state_dict(),
                "torch_rng": torch.get_rng_state()}, folder / TRAINER_STATE)
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


def load_checkpoint(folder: str | Path, models: dict[str, Any], optimizer: torch.optim.Optimizer | None = None,
                    state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint's weights into ``models`` (same keys as at saving) and ``optimizer``,
    restore the torch RNG state, and return the trainer state. ``state``, when the caller has
    already read it with ``load_trainer_state`` (to check it first), is not read again."""
    state = load_trainer_state(folder) if state is None else state
    for sub, model in models.items():
        model.load_state_dict(type(model).from_pretrained(str(Path(folder) / sub)).state_dict())
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state

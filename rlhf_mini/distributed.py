"""More than one process: PyTorch's DistributedDataParallel under ``torchrun``.

    torchrun --nproc_per_node=2 -m rlhf_mini reward --data pairs.jsonl.gz --out runs/rm

``torchrun`` starts one process per device and gives each one ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; ``setup`` joins them in a process group (gloo on the CPU, NCCL on GPUs). A trainer
then changes in three places only:

* every rank draws the same global minibatch of B indices (``training.batch_indices``) and keeps
  its own slice, ``shard``: rows r, r + W, r + 2W, … on rank r of W;
* the loss goes through ``wrap``, a ``DistributedDataParallel`` module, which averages the
  gradients over the ranks during ``backward``. Each rank's loss is the mean over its B/W rows, so
  the average is the gradient of the mean over all B rows:

      ∇L = (1/W) Σ_r ∇ (W/B) Σ_{i ∈ shard r} ℓ_i = (1/B) Σ_i ∇ℓ_i

  the same update as one process with batch B (up to the order of floating-point sums);
* rank 0 alone shows the progress bar and writes metrics and checkpoints (``is_main``).

Outside ``torchrun`` (or with one process) every helper is the identity, so the loops run as
before. When one rank fails, ``torchrun`` stops the others and reports the failing rank's error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rlhf_mini.config import get_device

TIMEOUT_ENV = "RLHF_MINI_DIST_TIMEOUT"


def world_size() -> int:
    """The number of processes W (1 outside ``torchrun``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank r in 0 … W − 1 (0 outside ``torchrun``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0, the one that writes files and shows progress."""
    return rank() == 0


def setup() -> torch.device:
    """Join the process group when started by ``torchrun`` with more than one process, and return
    this process's device (``cuda:LOCAL_RANK`` on GPUs, else the CPU).

    A collective that waits longer than ``$RLHF_MINI_DIST_TIMEOUT`` seconds (default 600) fails
    instead of hanging.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    if torch.cuda.is_available() and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return get_device()


def cleanup() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: Any) -> Any:
    """This rank's slice of a global minibatch: rows r, r + W, … (all of it with one process)."""
    w = world_size()
    if w == 1:
        return indices
    if len(indices) % w:
        raise ValueError(f"a minibatch of {len(indices)} rows does not split evenly over {w} processes: "
                         f"use a batch size that is a multiple of {w} (and at most the number of examples)")
    return indices[rank()::w]


class _Call(nn.Module):
    """``forward(*args) = fn(model, *args)``: lets DDP see a loss computed through any of the
    model's methods (``score``, the chunked log-probs) as one forward pass."""

    def __init__(self, model: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.model, *args, **kwargs)


def wrap(model: nn.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A callable equal to ``fn(model, *args)`` whose gradients are averaged over the ranks
    (``DistributedDataParallel``); with one process, ``fn`` bound to ``model`` and nothing else."""
    if world_size() == 1:
        return lambda *args, **kwargs: fn(model, *args, **kwargs)
    device = next(model.parameters()).device
    return DistributedDataParallel(_Call(model, fn), device_ids=[device.index] if device.type == "cuda" else None)


def mean(value: float) -> float:
    """The mean of a logged number over the ranks (for metrics; the gradients are DDP's)."""
    if world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()

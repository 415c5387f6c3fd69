"""Device and scale profiles.

One named profile sets the model size, batch sizes and step counts for every chapter:

    RLHF_MINI_PROFILE=cpu   a tiny GPT-2 (2 layers, 128 wide, 1k vocabulary): each chapter in minutes
    RLHF_MINI_PROFILE=gpu   the GPT-2-small shape (12 layers, 768 wide)

Unset, the profile follows the hardware: ``gpu`` when CUDA is present, ``cpu`` otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

PROFILE_ENV = "RLHF_MINI_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Every size and count a chapter may need, in one place."""

    name: str
    # model shape
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    n_ctx: int
    # pretraining the base model on the course corpus
    corpus_docs: int
    """documents per world in the pretraining corpus"""
    pretrain_steps: int
    pretrain_batch: int
    pretrain_seq: int
    pretrain_lr: float
    lr_scale: float
    """multiplies the learning rates of PPO, DPO and rejection sampling, which were tuned on the cpu
    profile: Adam's best rate falls roughly as a model widens, so the gpu profile's is the ratio of
    the two pretraining rates (SFT, reward-model and verifier rates follow ``pretrain_lr`` directly)"""
    # the chapters' stages
    batch_size: int
    """minibatch size for SFT, reward-model and DPO steps"""
    sft_steps: int
    reward_steps: int
    dpo_steps: int
    rl_steps: int
    """PPO iterations (each one a rollout of ``rollout_batch`` prompts)"""
    rollout_batch: int
    n_preference_pairs: int
    n_eval_prompts: int
    max_new_tokens: int

    def replace(self, **changes: object) -> Profile:
        """A copy with some fields changed, e.g. ``profile.replace(rl_steps=10)``."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "cpu": Profile(
        name="cpu",
        n_layer=2,
        n_embd=128,
        n_head=4,
        vocab_size=1024,
        n_ctx=128,
        corpus_docs=12_000,
        pretrain_steps=600,
        pretrain_batch=32,
        pretrain_seq=64,
        pretrain_lr=3e-3,
        lr_scale=1.0,
        batch_size=32,
        sft_steps=300,
        reward_steps=300,
        dpo_steps=150,
        rl_steps=60,
        rollout_batch=64,
        n_preference_pairs=2_000,
        n_eval_prompts=256,
        max_new_tokens=32,
    ),
    "gpu": Profile(
        name="gpu",
        n_layer=12,
        n_embd=768,
        n_head=12,
        vocab_size=4096,  # an upper bound: the course corpus yields about 2.1k BPE entries
        # (its templated worlds run out of merges there), so the gpu models' vocabulary is that
        n_ctx=256,
        corpus_docs=60_000,
        pretrain_steps=3_000,
        pretrain_batch=64,
        pretrain_seq=128,
        pretrain_lr=6e-4,
        lr_scale=0.2,
        batch_size=64,
        sft_steps=600,
        reward_steps=600,
        dpo_steps=400,
        rl_steps=150,
        rollout_batch=128,
        n_preference_pairs=8_000,
        n_eval_prompts=512,
        max_new_tokens=48,
    ),
}


def get_device() -> torch.device:
    """CUDA when present, the CPU otherwise. Nothing in the course requires CUDA.

    On CUDA, fp32 matmuls may use TF32 tensor cores: several times faster for GPT-2-small
    training, at a precision (10-bit mantissa products, fp32 sums) that training does not notice.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


def get_profile(name: str | None = None) -> Profile:
    """The named profile; by default ``$RLHF_MINI_PROFILE``, else ``gpu`` on CUDA and ``cpu`` otherwise."""
    name = name or os.environ.get(PROFILE_ENV) or ("gpu" if torch.cuda.is_available() else "cpu")
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r} (from {PROFILE_ENV} or the profile argument); "
            f"choose one of {sorted(PROFILES)}"
        ) from None

"""The cached artifacts of chapter 13 (RL with verifiable rewards): the arithmetic policy it starts
from, and the GRPO-family runs from it (the ``grpo`` stage), each against one of ``rlhf_mini.verifiers``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from rlhf_mini import batch, grpo, logprobs, losses, models, sampling, sft, training, verifiers
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.grpo import RECIPES, GRPOConfig, sample_correct, train_grpo
from rlhf_mini.sft import SFTConfig, train_sft
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.worlds.arithmetic import ArithmeticWorld
from rlhf_mini.zoo import base_model_path, cached, cached_base_model, load_policy

START_SFT = {"cpu": dict(max_steps=1000, n_examples=16_000), "gpu": dict(max_steps=1500, n_examples=32_000)}
"""the starting policy: the arithmetic SFT recipe of ``zoo.sft`` trained longer, on more worked
solutions, so that it is right often enough (about a third of its samples on the cpu profile) for
a group of 8 to hold both right and wrong answers"""

CHAPTER_RECIPE = {"cpu": dict(num_generations=8, prompts_per_step=16, max_steps=30, num_iterations=4, learning_rate=1e-4),
                  "gpu": dict(num_generations=16, prompts_per_step=32, max_steps=60, num_iterations=4, learning_rate=1e-4)}
"""the ``grpo`` stage's runs (before ``from_profile`` scales the learning rate)"""

N_TRAIN_PROMPTS = 4000
N_EVAL_PROMPTS = {"cpu": 256, "gpu": 512}


def start_policy_path(profile: Profile | None = None) -> Path:
    """The folder of the starting policy (``START_SFT``; built from the base model on first use)."""
    profile = profile or get_profile()
    base = SFTConfig.from_profile(profile, "arithmetic")
    config = SFTConfig(**{**asdict(base), **START_SFT[profile.name]})
    world = get_world("arithmetic")

    def build(folder: Path) -> None:
        set_seed(config.seed)
        model, tok = cached_base_model(profile)
        model, metrics = train_sft(config, model, tok, world.demonstrations(config.n_examples, seed=config.seed))
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    key = {"base": base_model_path(profile).name, **asdict(config)}
    return cached(f"grpo-start-arithmetic-{profile.name}", key, [sft, batch, losses, models, training], build)


def start_policy(profile: Profile | None = None):
    """The policy chapter 13's runs start from, and its tokenizer."""
    return load_policy(start_policy_path(profile))


def eval_prompts(profile: Profile | None = None) -> list[str]:
    """The held-out (test-split) problems every run is scored on."""
    profile = profile or get_profile()
    return ArithmeticWorld().prompts(N_EVAL_PROMPTS[profile.name], seed=0, split="test")


def heldout_accuracy(policy, tokenizer, profile: Profile | None = None, n: int = 4, seed: int = 123) -> float:
    """Exact-match accuracy of n samples (temperature 1) per held-out problem."""
    profile = profile or get_profile()
    r = sample_correct(policy, tokenizer, ArithmeticWorld(), eval_prompts(profile), verifiers.exact_match, n,
                       max_new_tokens=profile.max_new_tokens, seed=seed)
    return float(r.mean())


def grpo_config(profile: Profile | None = None, method: str = "grpo", **overrides: object) -> GRPOConfig:
    """The chapter's ``GRPOConfig`` for ``method`` (a key of ``grpo.RECIPES``), then ``overrides``."""
    profile = profile or get_profile()
    if method not in RECIPES:
        raise ValueError(f"method must be one of {sorted(RECIPES)}, got {method!r}")
    unknown = set(overrides) - {f.name for f in fields(GRPOConfig)}
    if unknown:
        raise ValueError(f"unknown GRPOConfig field(s): {sorted(unknown)}")
    return GRPOConfig.from_profile(profile, **{**CHAPTER_RECIPE[profile.name], **RECIPES[method], **overrides})


def grpo_policy_path(profile: Profile | None = None, method: str = "grpo", verifier: str = "exact_match",
                     eval_every: int = 15, **overrides: object) -> Path:
    """The folder of a cached run: the start policy trained with ``method`` against ``verifier``
    (a key of ``verifiers.VERIFIERS``), held-out accuracy measured every ``eval_every`` steps."""
    profile = profile or get_profile()
    config = grpo_config(profile, method, **overrides)
    if verifier not in verifiers.VERIFIERS:
        raise ValueError(f"verifier must be one of {sorted(verifiers.VERIFIERS)}, got {verifier!r}")
    start = start_policy_path(profile)

    def build(folder: Path) -> None:
        set_seed(config.seed)
        world = get_world("arithmetic")
        policy, tok = load_policy(start)
        prompts = world.prompts(N_TRAIN_PROMPTS, seed=config.seed, split="train")
        log_fns = {name: fn for name, fn in verifiers.VERIFIERS.items() if name != verifier}
        policy, metrics = train_grpo(config, policy, tok, world, prompts, verifiers.VERIFIERS[verifier],
                                     log_fns=log_fns, eval_every=eval_every,
                                     eval_fn=lambda p: {"accuracy": heldout_accuracy(p, tok, profile)})
        policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics, default=float))

    key = {"start": start.name, "verifier": verifier, "eval_every": eval_every, "grpo": asdict(config)}
    modules = [sys.modules[__name__], grpo, verifiers, logprobs, losses, models, sampling, training]
    return cached(f"grpo-{method}-arithmetic-{profile.name}", key, modules, build)


def grpo_policy(profile: Profile | None = None, method: str = "grpo", verifier: str = "exact_match",
                **overrides: object):
    """A cached chapter-13 policy and its tokenizer (see ``grpo_policy_path``)."""
    return load_policy(grpo_policy_path(profile, method, verifier, **overrides))


def grpo_metrics(profile: Profile | None = None, method: str = "grpo", verifier: str = "exact_match",
                 **overrides: object) -> list[dict]:
    """The per-step metrics of a cached run (TRL's names; ``eval/accuracy`` every few steps)."""
    rows = json.loads((grpo_policy_path(profile, method, verifier, **overrides) / "metrics.json").read_text())
    return [{k: (np.nan if v is None else v) for k, v in row.items()} for row in rows]

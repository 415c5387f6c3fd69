"""The cached SFT policy of each world: the base model fine-tuned on the world's demonstrations."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_mini import batch, losses, models, sft, training
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.sft import SFTConfig, train_sft
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import base_model_path, cached, cached_base_model, load_policy


def sft_policy_path(task: str = "assistant", profile: Profile | None = None) -> Path:
    """The folder of the cached SFT policy for ``task`` (built on first use from the base model)."""
    profile = profile or get_profile()
    config = SFTConfig.from_profile(profile, task)
    world = get_world(task)  # fails early on an unknown task
    base_path = base_model_path(profile)

    def build(folder: Path) -> None:
        set_seed(config.seed)
        model, tok = cached_base_model(profile)
        examples = world.demonstrations(config.n_examples, seed=config.seed)
        held_out = world.demonstrations(256, seed=config.seed + 1)
        model, metrics = train_sft(config, model, tok, examples, eval_examples=held_out)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    key = {"task": task, "base": base_path.name, **asdict(config)}
    modules = [sys.modules[__name__], sft, batch, losses, models, training]
    return cached(f"sft-{task}-{profile.name}", key, modules, build)


def sft_policy(task: str = "assistant", profile: Profile | None = None):
    """The SFT policy for ``task`` and its tokenizer: the base model fine-tuned on the world's
    demonstrations (cached).

    Every world is treated alike: the sentiment world's "demonstrations" are its own reviews (of all
    star ratings), so its SFT policy learns the review format, not a positive slant; the
    arithmetic world's demonstrations are worked solutions.
    """
    return load_policy(sft_policy_path(task, profile))


def sft_metrics(task: str = "assistant", profile: Profile | None = None) -> list[dict[str, Any]]:
    """The per-step metrics of the cached SFT run."""
    return json.loads((sft_policy_path(task, profile) / "metrics.json").read_text())

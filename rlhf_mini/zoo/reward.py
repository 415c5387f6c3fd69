"""The cached reward model of each world: a Bradley–Terry head on the SFT policy's body, trained on
the shipped preference pairs and centred on SFT samples; and the same recipe on other pairs."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlhf_mini import data, losses, models, reward, scoring, training
from rlhf_mini.config import Profile, get_device, get_profile
from rlhf_mini.data import preference_file
from rlhf_mini.models import ScalarHeadModel
from rlhf_mini.reward import (
    RewardConfig,
    center_on_policy_samples,
    preference_records,
    train_reward_model,
)
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import cached, load_scalar_model
from rlhf_mini.zoo.sft import sft_policy, sft_policy_path


def reward_model_path(task: str = "assistant", profile: Profile | None = None) -> Path:
    """The folder of the cached reward model for ``task`` (built on first use from the SFT policy)."""
    profile = profile or get_profile()
    config = RewardConfig.from_profile(profile, task)
    world = get_world(task)
    train_file, test_file = preference_file(task, "train"), preference_file(task, "test")
    sft_path = sft_policy_path(task, profile)

    def build(folder: Path) -> None:
        set_seed(config.seed)
        policy, tok = sft_policy(task, profile)
        model = ScalarHeadModel.from_language_model(policy, seed=config.seed).to(get_device())
        train, test = data.load_preferences(train_file), data.load_preferences(test_file)
        model, metrics = train_reward_model(config, model, tok, train, eval_pairs=test)
        prompts = world.prompts(profile.n_eval_prompts, seed=config.seed + 7, split="train")
        norm = center_on_policy_samples(model, tok, world, policy, prompts, profile.max_new_tokens, config.seed)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "normalization.json").write_text(json.dumps(norm))

    digest = hashlib.sha256(train_file.read_bytes() + test_file.read_bytes()).hexdigest()[:16]
    key = {"task": task, "sft": sft_path.name, "data": digest, "n_eval_prompts": profile.n_eval_prompts,
           "max_new_tokens": profile.max_new_tokens, **asdict(config)}
    modules = [sys.modules[__name__], reward, scoring, losses, models, training]
    return cached(f"reward-{task}-{profile.name}", key, modules, build)


def cached_reward_model(task: str = "assistant", profile: Profile | None = None
                        ) -> tuple[ScalarHeadModel, PreTrainedTokenizerBase]:
    """The reward model for ``task`` and its tokenizer (cached): a Bradley–Terry head on the SFT
    policy's body, trained on ``data/{task}_prefs_train.jsonl``, centred on SFT samples."""
    return load_scalar_model(reward_model_path(task, profile))


def cached_reward_model_on_pairs(pairs: Any, config: RewardConfig, profile: Profile | None = None,
                                 name: str = "pairs", progress: bool = True) -> ScalarHeadModel:
    """Chapter 7's recipe on other pairs, cached by their content: a Bradley–Terry head on the
    SFT policy's body for ``config.task``, seeded by ``config.seed``, trained on ``pairs``.

    For chapters that compare reward models trained on different labels: each trains once, and a
    rerun of the chapter loads it. Unlike ``cached_reward_model`` it is not centred on SFT samples.
    """
    profile = profile or get_profile()
    records = preference_records(pairs)

    def build(folder: Path) -> None:
        set_seed(config.seed)
        policy, tok = sft_policy(config.task, profile)
        model = ScalarHeadModel.from_language_model(policy, seed=config.seed)
        model, metrics = train_reward_model(config, model, tok, records, progress=progress)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()[:16]
    key = {"sft": sft_policy_path(config.task, profile).name, "pairs": digest, "n_pairs": len(records),
           **asdict(config)}
    modules = [sys.modules[__name__], reward, scoring, losses, models, training]
    folder = cached(f"reward-{name}-{profile.name}", key, modules, build)
    return load_scalar_model(folder)[0]


def reward_model_metrics(task: str = "assistant", profile: Profile | None = None) -> list[dict[str, Any]]:
    """The per-step metrics of the cached reward-model run (with held-out evaluations)."""
    return json.loads((reward_model_path(task, profile) / "metrics.json").read_text())

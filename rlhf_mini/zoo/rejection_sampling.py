"""The cached rejection-sampling policy: chapter 10's recipe, from the SFT policy with the reward
model as the selector."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_mini import (
    batch,
    eval,
    logprobs,
    losses,
    models,
    rejection_sampling,
    reward,
    sampling,
    scoring,
    training,
)
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.rejection_sampling import RSConfig, train_rejection_sampling
from rlhf_mini.scoring import reward_model_scorer
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import cached, load_policy
from rlhf_mini.zoo.reward import cached_reward_model, reward_model_path
from rlhf_mini.zoo.sft import sft_policy, sft_policy_path

CHAPTER_RECIPE = {"rounds": 2, "prompts_per_round": 256, "n_samples": 8, "sft_steps": 40}
"""chapter 10's run: two rounds of best-of-8 under the reward model, 40 SFT steps each"""


def rs_policy_path(task: str = "assistant", profile: Profile | None = None, **overrides: Any) -> Path:
    """The folder of the cached rejection-sampling policy (built from the SFT policy on first use).

    The recipe is ``CHAPTER_RECIPE`` with the reward model as the selector; ``overrides`` go to
    ``RSConfig``.
    """
    profile = profile or get_profile()
    config = RSConfig.from_profile(profile, **{**CHAPTER_RECIPE, **overrides})

    def build(folder: Path) -> None:
        world = get_world(task)
        set_seed(config.seed)
        policy, tokenizer = sft_policy(task, profile)
        ref = models.reference_copy(policy)
        for param in policy.parameters():
            param.requires_grad_(True)
        rm, rm_tokenizer = cached_reward_model(task, profile)
        result = train_rejection_sampling(config, policy, ref, tokenizer, world,
                                          reward_model_scorer(rm, rm_tokenizer, world))
        result.policy.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))

    key = {"task": task, "sft": sft_policy_path(task, profile).name,
           "reward": reward_model_path(task, profile).name, **asdict(config)}
    modules = [sys.modules[__name__], rejection_sampling, batch, eval, logprobs, losses, models, sampling,
               scoring, reward, training]
    return cached(f"rs-{task}-{profile.name}", key, modules, build)


def rs_policy(task: str = "assistant", profile: Profile | None = None, **overrides: Any):
    """The rejection-sampling fine-tuned policy of ``task`` and its tokenizer (cached)."""
    return load_policy(rs_policy_path(task, profile, **overrides))


def rs_metrics(task: str = "assistant", profile: Profile | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The per-round metrics of the cached run that ``rs_policy`` returns."""
    return json.loads((rs_policy_path(task, profile, **overrides) / "metrics.json").read_text())

"""The cached PPO policies: chapter 9's recipes, trained from the SFT policy with the reward model
as the scorer and the start of the value model."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from rlhf_mini import batch, logprobs, losses, models, ppo, reward, sampling, scoring, sft, training
from rlhf_mini.config import get_profile
from rlhf_mini.ppo import PPOConfig, train_ppo, value_model_from_reward_model
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import cached, load_policy
from rlhf_mini.zoo.reward import cached_reward_model, reward_model_path
from rlhf_mini.zoo.sft import sft_policy, sft_policy_path

CHAPTER_RECIPE = dict(adaptive_kl=True, beta=0.15, target_kl=1.5, kl_horizon=250, learning_rate=2e-4,
                      ppo_epochs=2, max_steps=40)
"""chapter 9's main run, also the ``ppo`` and ``eval`` stages' PPO policy: an adaptive β that holds the
KL near 1.5 nats. ``PPOConfig``'s own defaults (a fixed β = 0.05 for 60 iterations) let the KL grow past
6 nats on the cpu profile's assistant world, where the gold reward falls below the SFT policy's."""

NO_KL_RECIPE = dict(beta=0.0, learning_rate=5e-4, ppo_epochs=2, max_steps=40)
"""chapter 9's reward-hacking run: no KL penalty at all, and a higher learning rate, so the policy
leaves the reference and exploits the reward model within the chapter's 40 iterations."""


def ppo_policy_path(task: str = "assistant", profile=None, **overrides: object) -> Path:
    """The folder of the cached PPO run of ``task``; ``overrides`` go to ``PPOConfig``."""
    profile = profile or get_profile()
    unknown = set(overrides) - {f.name for f in fields(PPOConfig)}
    if unknown:
        raise ValueError(f"unknown PPOConfig field(s): {sorted(unknown)}")
    ppo_config = PPOConfig.from_profile(profile, **overrides)

    def build(folder: Path) -> None:
        world = get_world(task)
        policy, tokenizer = sft_policy(task, profile)
        rm, _ = cached_reward_model(task, profile)
        value = value_model_from_reward_model(rm)
        prompts = world.prompts(2_000, seed=ppo_config.seed, split="train")
        ref = models.reference_copy(policy)
        rm.eval()
        policy, metrics = train_ppo(ppo_config, policy, ref, rm, value, tokenizer, world, prompts)
        policy.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    upstream = {"sft": sft_policy_path(task, profile).name, "reward": reward_model_path(task, profile).name}
    keyed = {"task": task, "profile": vars(profile), "ppo": asdict(ppo_config), **upstream}
    modules = [sys.modules[__name__], ppo, batch, logprobs, losses, models, sampling, scoring, sft, reward,
               training]
    return cached(f"ppo-{task}-{profile.name}", keyed, modules, build)


def ppo_policy(task: str = "assistant", profile=None, **overrides: object):
    """The PPO-trained policy of ``task`` (cached): ``(GPT2LMHeadModel, tokenizer)``.

    Starts from ``zoo.sft.sft_policy``, with the value model from ``zoo.reward.cached_reward_model``;
    ``overrides`` go to ``PPOConfig`` (e.g. ``beta=0.1``). The metrics are in ``ppo_metrics``.
    """
    return load_policy(ppo_policy_path(task, profile, **overrides))


def ppo_metrics(task: str = "assistant", profile=None, **overrides: object) -> list[dict]:
    """The per-iteration metrics of the cached run that ``ppo_policy`` returns."""
    return json.loads((ppo_policy_path(task, profile, **overrides) / "metrics.json").read_text())

"""The cached DPO policies: the SFT policy trained with DPO on labelled pairs of its own samples,
for one round or several (iterative DPO); and offline DPO on the shipped labeller pairs, the data
the reward model (and so PPO) learned from."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rlhf_mini import batch, data, dpo, logprobs, losses, models, sampling, training
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.dpo import (
    DPOConfig,
    label_response_pairs,
    precompute_ref_logps,
    sample_response_pairs,
    train_dpo,
)
from rlhf_mini.models import reference_copy
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import cached, load_policy
from rlhf_mini.zoo.sft import sft_policy, sft_policy_path


def train_on_policy_dpo(config: DPOConfig, task: str, profile: Profile, n_prompts: int,
                        prefer: Callable[[str, str, str], bool] | None = None, *,
                        start_from: str | Path | None = None, round_index: int = 1):
    """The zoo's DPO recipe: two samples per prompt for ``n_prompts`` train prompts
    (``round_samples``), labelled (``dpo.label_response_pairs``), then ``train_dpo``.

    Round 1 starts from the SFT policy. A later round (``round_index`` > 1, iterative or "online"
    DPO) starts from the policy saved at ``start_from``, samples fresh pairs from *it* on fresh
    prompts, and uses it as the reference. ``prefer`` labels the pairs (default: the gold reward).
    Returns ``(DPOResult, tokenizer, pairs)``.
    """
    world = get_world(task)
    set_seed(config.seed)
    if start_from is None:
        policy, tok = sft_policy(task, profile)
    else:
        policy, tok = load_policy(start_from)
        policy.requires_grad_(True)
    ref = reference_copy(policy)
    prompts, responses = round_samples(config, task, profile, n_prompts, start_from=start_from,
                                       round_index=round_index)
    pairs = label_response_pairs(world, prompts, responses, prefer)
    return train_dpo(config, policy, ref, tok, pairs, world), tok, pairs


def round_samples(config: DPOConfig, task: str, profile: Profile, n_prompts: int, *,
                  start_from: str | Path | None = None, round_index: int = 1) -> tuple[list[str], list[str]]:
    """A DPO round's train prompts and two sampled responses per prompt (``dpo.sample_response_pairs``)
    of its start policy: the SFT policy, or the policy saved at ``start_from``.

    Cached: the runs that label the same samples differently (gold here, the judges and the simulated
    human of ``zoo.rlaif``) sample them once.
    """
    world = get_world(task)
    offset = 10 * (round_index - 1)   # each round its own prompts and samples
    prompt_seed, sample_seed = config.seed + 3 + offset, config.seed + 5 + offset
    prompts = world.prompts(n_prompts, seed=prompt_seed, split="train")
    start = Path(start_from) if start_from is not None else sft_policy_path(task, profile)

    def build(folder: Path) -> None:
        policy, tok = load_policy(start)
        responses = sample_response_pairs(policy, tok, world, prompts, max_new_tokens=profile.max_new_tokens,
                                          seed=sample_seed)
        (folder / "responses.json").write_text(json.dumps(responses))

    key = {"task": task, "start": start.name, "n_prompts": n_prompts, "prompt_seed": prompt_seed,
           "sample_seed": sample_seed, "max_new_tokens": profile.max_new_tokens}
    folder = cached(f"dpo-samples-{task}-{profile.name}", key, [sys.modules[__name__], dpo, models, sampling], build)
    return prompts, json.loads((folder / "responses.json").read_text())


def dpo_policy_path(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5,
                    loss_type: str = "sigmoid", rounds: int = 1, seed: int = 0) -> Path:
    """The folder of the cached DPO policy (built from the SFT policy on first use).

    ``rounds`` > 1 is iterative DPO: round k starts from round k − 1's policy, which also serves as
    its reference, and trains on fresh gold-labelled pairs of that policy's own samples.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    profile = profile or get_profile()
    config = DPOConfig.from_profile(profile, beta=beta, loss_type=loss_type, seed=seed)
    previous = dpo_policy_path(task, profile, beta, loss_type, rounds - 1, seed) if rounds > 1 else None
    start = previous.name if previous is not None else sft_policy_path(task, profile).name
    # ~1,600 prompts per round on the cpu profile; ties are dropped, ~90 % remain
    n_prompts = int(profile.n_preference_pairs * 0.8)

    def build(folder: Path) -> None:
        result, tok, _ = train_on_policy_dpo(config, task, profile, n_prompts, start_from=previous,
                                             round_index=rounds)
        result.policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))

    key = {"task": task, "start": start, "round": rounds, "pairs": "on-policy, gold-labelled",
           "n_prompts": n_prompts, "max_new_tokens": profile.max_new_tokens, **asdict(config)}
    modules = [sys.modules[__name__], dpo, batch, data, logprobs, losses, models, sampling, training]
    return cached(f"dpo-{task}-{profile.name}", key, modules, build)


def dpo_policy(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5,
               loss_type: str = "sigmoid", rounds: int = 1, seed: int = 0):
    """The DPO policy for ``task`` and its tokenizer (cached): the SFT policy trained with DPO on
    gold-labelled pairs of its own samples (``dpo.on_policy_pairs``), for ``rounds`` rounds. ``seed``
    picks the prompts, the sampled pairs and the minibatch order."""
    return load_policy(dpo_policy_path(task, profile, beta, loss_type, rounds, seed))


def dpo_metrics(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5,
                loss_type: str = "sigmoid", rounds: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """The per-step metrics of the cached DPO run (of its last round)."""
    return json.loads((dpo_policy_path(task, profile, beta, loss_type, rounds, seed) / "metrics.json").read_text())


def offline_dpo_policy_path(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5,
                            seed: int = 0) -> Path:
    """The folder of the cached offline DPO policy: the SFT policy trained with DPO for one epoch on
    the shipped labeller pairs ``data/{task}_prefs_train.jsonl``, the pairs the reward model of
    ``zoo.reward`` learned from (so DPO and PPO see the same preference data). Built on first use."""
    profile = profile or get_profile()
    train_file = data.preference_file(task, "train")
    n_pairs = len(data.load_preferences(train_file))
    # one epoch: each labelled pair is seen once (63 steps of 32 pairs on the cpu profile)
    config = DPOConfig.from_profile(profile, beta=beta, seed=seed,
                                    max_steps=-(-n_pairs // profile.batch_size))

    def build(folder: Path) -> None:
        set_seed(config.seed)
        world = get_world(task)
        policy, tok = sft_policy(task, profile)
        ref = reference_copy(policy)
        pairs = data.load_preferences(train_file)
        ref_logps = offline_ref_logps(task, profile, config)   # one pass of π_ref, shared by every β
        result = train_dpo(config, policy.requires_grad_(True), ref, tok, pairs, world, ref_logps=ref_logps)
        result.policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))

    digest = hashlib.sha256(train_file.read_bytes()).hexdigest()[:16]
    key = {"task": task, "start": sft_policy_path(task, profile).name, "pairs": "shipped, labeller-labelled",
           "data": digest, **asdict(config)}
    modules = [sys.modules[__name__], dpo, batch, data, logprobs, losses, models, training]
    return cached(f"dpo-offline-{task}-{profile.name}", key, modules, build)


def offline_ref_logps(task: str, profile: Profile, config: DPOConfig) -> dict[str, torch.Tensor]:
    """log π_ref of the shipped labeller pairs under the SFT policy (``dpo.precompute_ref_logps``),
    cached: the offline runs of a β sweep share one reference, so they share this pass."""
    train_file = data.preference_file(task, "train")

    def build(folder: Path) -> None:
        ref, tok = sft_policy(task, profile)
        ref_logps = precompute_ref_logps(ref, tok, get_world(task), data.load_preferences(train_file),
                                         config.max_length, config.ref_batch_size, progress=False)
        torch.save(ref_logps, folder / "ref_logps.pt")

    key = {"task": task, "ref": sft_policy_path(task, profile).name,
           "data": hashlib.sha256(train_file.read_bytes()).hexdigest()[:16],
           "max_length": config.max_length, "ref_batch_size": config.ref_batch_size}
    folder = cached(f"dpo-offline-ref-logps-{task}-{profile.name}", key,
                    [sys.modules[__name__], dpo, batch, data, logprobs, models, training], build)
    return torch.load(folder / "ref_logps.pt")


def offline_dpo_policy(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5, seed: int = 0):
    """The offline DPO policy for ``task`` and its tokenizer (cached): DPO from the SFT policy on the
    shipped labeller pairs, the reward model's training data (``offline_dpo_policy_path``)."""
    return load_policy(offline_dpo_policy_path(task, profile, beta, seed))


def offline_dpo_metrics(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5,
                        seed: int = 0) -> list[dict[str, Any]]:
    """The per-step metrics of the cached offline DPO run."""
    return json.loads((offline_dpo_policy_path(task, profile, beta, seed) / "metrics.json").read_text())

"""The cached RLAIF policy: DPO on pairs of the SFT policy's samples labelled by chapter 14's
constitutional judge, with the same prompts, seeds, β and steps as ``zoo.dpo.dpo_policy``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_mini import (
    batch,
    constitution,
    data,
    dpo,
    logprobs,
    losses,
    models,
    rlaif,
    sampling,
    training,
)
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.constitution import ConstitutionalJudge, label_agreement
from rlhf_mini.dpo import DPOConfig
from rlhf_mini.rlaif import HONESTY_THRESHOLD, JUDGE_TEMPERATURE, ai_judge
from rlhf_mini.zoo import base_model_path, cached, cached_base_model, load_policy
from rlhf_mini.zoo.dpo import train_on_policy_dpo
from rlhf_mini.zoo.sft import sft_policy_path


def cached_ai_judge(profile: Profile | None = None, seed: int = 0) -> ConstitutionalJudge:
    """The constitutional judge of chapter 14, reading honesty from the cached base model."""
    base, tok = cached_base_model(profile or get_profile())
    return ai_judge(base, tok, seed=seed)


def rlaif_policy_path(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> Path:
    """The folder of the cached RLAIF policy (built from the SFT policy on first use)."""
    if task != "assistant":
        raise ValueError(f"the constitution is written for the assistant world; got task={task!r}")
    profile = profile or get_profile()
    config = DPOConfig.from_profile(profile, beta=beta)
    n_prompts = int(profile.n_preference_pairs * 0.8)   # the same prompts as zoo.dpo.dpo_policy

    def build(folder: Path) -> None:
        judge = cached_ai_judge(profile, seed=config.seed)
        result, tok, pairs = train_on_policy_dpo(config, task, profile, n_prompts, prefer=judge.compare)
        result.policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))
        (folder / "labels.json").write_text(json.dumps({"n_pairs": len(pairs), **label_agreement(pairs)}))

    key = {"task": task, "sft": sft_policy_path(task, profile).name, "base": base_model_path(profile).name,
           "pairs": "on-policy, AI-labelled", "judge_temperature": JUDGE_TEMPERATURE,
           "honesty_threshold": HONESTY_THRESHOLD, "n_prompts": n_prompts, **asdict(config)}
    modules = [sys.modules[__name__], rlaif, constitution, dpo, batch, data, logprobs, losses, models, sampling,
               training]
    return cached(f"rlaif-{task}-{profile.name}", key, modules, build)


def rlaif_policy(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5):
    """The RLAIF policy and its tokenizer (cached): DPO on AI-labelled pairs of the SFT policy's samples."""
    return load_policy(rlaif_policy_path(task, profile, beta))


def rlaif_metrics(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> dict[str, Any]:
    """The DPO step metrics (``steps``) and the AI labels' agreement with gold (``labels``)."""
    folder = rlaif_policy_path(task, profile, beta)
    return {"steps": json.loads((folder / "metrics.json").read_text()),
            "labels": json.loads((folder / "labels.json").read_text())}

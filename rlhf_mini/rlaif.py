"""RLAIF: the DPO recipe with an AI judge in place of the human labeler (Bai et al. 2022; Lee et al. 2023).

Constitutional AI's second phase replaces human comparisons with a model's verdicts against a
written constitution. Here the judge is ``constitution.ConstitutionalJudge`` over the default
constitution (harmless, helpful, polite, concise, and honest, the last one read from the
pretrained base model's confidence in each claim). Its sampled verdict labels pairs of the SFT
policy's own samples,

    y_a, y_b ~ π_SFT(·|x),    y_a ≻ y_b  with probability  σ((U_AI(x, y_a) − U_AI(x, y_b)) / T),

and DPO trains on them exactly as ``dpo.dpo_policy`` does on gold-labelled pairs: same prompts,
same seeds, same β and steps. The only difference between the two policies is who labelled the
data, so comparing them measures what AI feedback costs or gains. The gold values stay in the
records, so the agreement of the AI labels with gold is measured, never assumed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_mini.config import Profile, get_profile

JUDGE_TEMPERATURE = 0.25
"""the judge's Bradley–Terry temperature (chapter 13's)"""
HONESTY_THRESHOLD = -2.0
"""mean token log-prob below which a claim counts as unsure (chapter 13's)"""


def ai_judge(profile: Profile | None = None, seed: int = 0):
    """The constitutional judge of chapter 13, with the base model as the honesty reader."""
    from rlhf_mini import constitution
    from rlhf_mini.worlds import get_world
    from rlhf_mini.zoo import base_model

    base, tok = base_model(profile or get_profile())
    confidence = constitution.LMConfidence(base, tok, get_world("assistant").format_prompt,
                                           threshold=HONESTY_THRESHOLD)
    return constitution.ConstitutionalJudge(constitution.default_constitution(confidence),
                                            temperature=JUDGE_TEMPERATURE, seed=seed)


def rlaif_policy_path(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> Path:
    """The folder of the cached RLAIF policy (built from the SFT policy on first use)."""
    from rlhf_mini import batch, constitution, dpo, logprobs, losses, models, sampling, sft, zoo

    if task != "assistant":
        raise ValueError(f"the constitution is written for the assistant world; got task={task!r}")
    profile = profile or get_profile()
    config = dpo.DPOConfig.from_profile(profile, beta=beta)
    n_prompts = int(profile.n_preference_pairs * 0.8)   # the same prompts as dpo.dpo_policy

    def build(folder: Path) -> None:
        from rlhf_mini.constitution import label_agreement

        judge = ai_judge(profile, seed=config.seed)
        result, tok, pairs = dpo.train_on_policy_dpo(config, task, profile, n_prompts, prefer=judge.compare)
        result.policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))
        (folder / "labels.json").write_text(json.dumps({"n_pairs": len(pairs), **label_agreement(pairs)}))

    key = {"task": task, "sft": sft.sft_policy_path(task, profile).name, "base": zoo.base_model_path(profile).name,
           "pairs": "on-policy, AI-labelled", "judge_temperature": JUDGE_TEMPERATURE,
           "honesty_threshold": HONESTY_THRESHOLD, "n_prompts": n_prompts, **asdict(config)}
    modules = [sys.modules[__name__], constitution, dpo, batch, logprobs, losses, models, sampling]
    return zoo.cached(f"rlaif-{task}-{profile.name}", key, modules, build)


def rlaif_policy(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5):
    """The RLAIF policy and its tokenizer (cached): DPO on AI-labelled pairs of the SFT policy's samples."""
    from rlhf_mini.dpo import load_dpo_checkpoint

    return load_dpo_checkpoint(rlaif_policy_path(task, profile, beta))


def rlaif_metrics(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> dict[str, Any]:
    """The DPO step metrics (``steps``) and the AI labels' agreement with gold (``labels``)."""
    folder = rlaif_policy_path(task, profile, beta)
    return {"steps": json.loads((folder / "metrics.json").read_text()),
            "labels": json.loads((folder / "labels.json").read_text())}

"""The cached RLAIF policies and judges of chapter 14.

* ``rlaif_policy``: DPO on pairs of the SFT policy's samples labelled by the rubric judge
  (``constitution.ConstitutionalJudge``), with the same prompts, seeds, β and steps as
  ``zoo.dpo.dpo_policy``;
* ``human_label_policy``: the same pairs labelled by the simulated human labeler instead (the
  synthetic-data comparison: same pairs, same budget, only the labels differ);
* ``model_judge``: a small GPT-2 reward model that reads the principle's text, trained on
  comparisons the rubrics labelled under several principles and wordings (``rlaif.ModelJudge``);
* ``model_judge_policy``: the same DPO recipe on the same pairs labelled by that model judge.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_mini import (
    batch,
    constitution,
    data,
    dpo,
    labelers,
    logprobs,
    losses,
    models,
    reward,
    rlaif,
    sampling,
    scoring,
    training,
)
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.constitution import (
    WORDINGS,
    ConstitutionalJudge,
    label_agreement,
    principle_comparisons,
)
from rlhf_mini.dpo import DPOConfig
from rlhf_mini.labelers import SimulatedLabeler
from rlhf_mini.models import ScalarHeadModel
from rlhf_mini.reward import RewardConfig, train_reward_model
from rlhf_mini.rlaif import HONESTY_THRESHOLD, JUDGE_TEMPERATURE, ModelJudge, ai_judge
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import base_model_path, cached, cached_base_model, load_policy, load_scalar_model
from rlhf_mini.zoo import dpo as dpo_zoo
from rlhf_mini.zoo.dpo import round_samples, train_on_policy_dpo
from rlhf_mini.zoo.sft import sft_policy, sft_policy_path

MODEL_JUDGE_PAIRS = 6000
"""rubric-labelled comparisons the model judge trains on (the principles in turn)"""
MODEL_JUDGE_STEPS = 300
"""its optimizer steps (batch 32 on the cpu profile: 1.6 epochs)"""


def build_seconds(folder: Path) -> float | None:
    """How long the artifact in ``folder`` took to build, the artifacts it starts from already cached
    (wall-clock seconds on the machine that built it; ``None`` when the artifact did not record it)."""
    path = folder / "build.json"
    return json.loads(path.read_text())["seconds"] if path.exists() else None


def _timed(build: Callable[[Path], None]) -> Callable[[Path], None]:
    # records the build's wall-clock time next to the artifact (``build_seconds``)
    def timed(folder: Path) -> None:
        start = time.perf_counter()
        build(folder)
        (folder / "build.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    return timed


def cached_ai_judge(profile: Profile | None = None, seed: int = 0) -> ConstitutionalJudge:
    """The rubric judge of chapter 14, reading honesty from the cached base model."""
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
        (folder / "pairs.json").write_text(json.dumps(pairs))

    key = {"task": task, "sft": sft_policy_path(task, profile).name, "base": base_model_path(profile).name,
           "pairs": "on-policy, AI-labelled", "judge_temperature": JUDGE_TEMPERATURE,
           "honesty_threshold": HONESTY_THRESHOLD, "n_prompts": n_prompts, **asdict(config)}
    modules = [sys.modules[__name__], dpo_zoo, rlaif, constitution, dpo, batch, data, logprobs, losses, models, sampling,
               training]
    return cached(f"rlaif-{task}-{profile.name}", key, modules, _timed(build))


def rlaif_policy(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5):
    """The RLAIF policy and its tokenizer (cached): DPO on rubric-labelled pairs of the SFT policy's samples."""
    return load_policy(rlaif_policy_path(task, profile, beta))


def rlaif_metrics(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> dict[str, Any]:
    """The DPO step metrics (``steps``) and the rubric judge's labels' agreement with gold (``labels``)."""
    folder = rlaif_policy_path(task, profile, beta)
    return {"steps": json.loads((folder / "metrics.json").read_text()),
            "labels": json.loads((folder / "labels.json").read_text())}


def rlaif_pairs(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> list[dict[str, Any]]:
    """The rubric-labelled pairs that trained the RLAIF policy (gold values kept for checking)."""
    return json.loads((rlaif_policy_path(task, profile, beta) / "pairs.json").read_text())


# --------------------------------------------------------------------------------------------
# the same pairs, labelled by the simulated human: the synthetic-data comparison
# --------------------------------------------------------------------------------------------


def human_label_policy_path(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> Path:
    """The folder of the DPO policy trained on the RLAIF policy's pairs, labelled by the simulated
    human (``labelers.SimulatedLabeler``: the gold utility with Bradley–Terry noise at temperature
    0.5, the labeler of the shipped preference files) instead of the rubric judge."""
    if task != "assistant":
        raise ValueError(f"the constitution is written for the assistant world; got task={task!r}")
    profile = profile or get_profile()
    config = DPOConfig.from_profile(profile, beta=beta)
    n_prompts = int(profile.n_preference_pairs * 0.8)   # the RLAIF policy's prompts and samples
    world = get_world(task)

    def build(folder: Path) -> None:
        human = SimulatedLabeler(seed=config.seed)
        result, tok, pairs = train_on_policy_dpo(config, task, profile, n_prompts,
                                                 prefer=lambda p, a, b: human.compare(world, p, a, b))
        result.policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))
        (folder / "labels.json").write_text(json.dumps({"n_pairs": len(pairs), **label_agreement(pairs)}))
        (folder / "pairs.json").write_text(json.dumps(pairs))

    key = {"task": task, "sft": sft_policy_path(task, profile).name, "pairs": "on-policy, human-labelled",
           "labeler_temperature": SimulatedLabeler.temperature, "n_prompts": n_prompts, **asdict(config)}
    modules = [sys.modules[__name__], dpo_zoo, labelers, dpo, batch, data, logprobs, losses, models, sampling, training]
    return cached(f"dpo-human-labels-{task}-{profile.name}", key, modules, _timed(build))


def human_label_policy(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5):
    """The DPO policy on human-labelled pairs and its tokenizer (cached)."""
    return load_policy(human_label_policy_path(task, profile, beta))


def human_label_pairs(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5
                      ) -> list[dict[str, Any]]:
    """The human-labelled pairs that trained ``human_label_policy``: the RLAIF policy's pairs."""
    return json.loads((human_label_policy_path(task, profile, beta) / "pairs.json").read_text())


# --------------------------------------------------------------------------------------------
# a judge that reads the principle
# --------------------------------------------------------------------------------------------


def model_judge_config(profile: Profile) -> RewardConfig:
    """Chapter 7's reward-model recipe, with the steps that teach it to read the principle."""
    return RewardConfig(task="assistant", max_steps=MODEL_JUDGE_STEPS, batch_size=profile.batch_size,
                        learning_rate=profile.pretrain_lr / 3, max_length=profile.n_ctx, eval_every=0)


def model_judge_path(profile: Profile | None = None) -> Path:
    """The folder of the model judge: a reward model on the SFT policy's body, trained on
    ``MODEL_JUDGE_PAIRS`` rubric-labelled comparisons under the principles of
    ``constitution.JUDGE_PRINCIPLES``, each record's prompt starting with one of the principle's
    training wordings (``constitution.WORDINGS``; ``HELD_OUT_WORDINGS`` are never shown)."""
    profile = profile or get_profile()
    config = model_judge_config(profile)
    world = get_world("assistant")

    def build(folder: Path) -> None:
        records = principle_comparisons(world, MODEL_JUDGE_PAIRS, seed=config.seed)
        set_seed(config.seed)
        policy, tok = sft_policy("assistant", profile)
        model = ScalarHeadModel.from_language_model(policy, seed=config.seed)
        model, metrics = train_reward_model(config, model, tok, records)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    key = {"sft": sft_policy_path("assistant", profile).name, "n_pairs": MODEL_JUDGE_PAIRS, **asdict(config)}
    modules = [sys.modules[__name__], constitution, reward, scoring, losses, models, training]
    return cached(f"model-judge-{profile.name}", key, modules, _timed(build))


def model_judge(principles: list[str] | None = None, profile: Profile | None = None, seed: int = 0) -> ModelJudge:
    """The cached model judge, reading ``principles`` (texts; default: the first wording of each
    principle of the default constitution without honesty: harmless, helpful, polite, concise)."""
    model, tok = load_scalar_model(model_judge_path(profile))
    texts = principles or [WORDINGS[p.name][0] for p in constitution.default_constitution()]
    return ModelJudge(model, tok, get_world("assistant"), texts, seed=seed)


def model_judge_policy_path(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5) -> Path:
    """The folder of the DPO policy on the RLAIF policy's pairs, labelled by the model judge
    (reading the default constitution's texts) instead of the rubric judge."""
    if task != "assistant":
        raise ValueError(f"the constitution is written for the assistant world; got task={task!r}")
    profile = profile or get_profile()
    config = DPOConfig.from_profile(profile, beta=beta)
    n_prompts = int(profile.n_preference_pairs * 0.8)
    judge_path = model_judge_path(profile)

    def build(folder: Path) -> None:
        judge = model_judge(profile=profile, seed=config.seed)
        prompts, responses = round_samples(config, task, profile, n_prompts)
        judge.precompute(prompts, responses[0::2], responses[1::2])   # batched: one verdict per pair below
        result, tok, pairs = train_on_policy_dpo(config, task, profile, n_prompts, prefer=judge.compare)
        result.policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))
        (folder / "labels.json").write_text(json.dumps({"n_pairs": len(pairs), **label_agreement(pairs)}))
        (folder / "pairs.json").write_text(json.dumps(pairs))

    key = {"task": task, "sft": sft_policy_path(task, profile).name, "judge": judge_path.name,
           "pairs": "on-policy, model-judge-labelled", "n_prompts": n_prompts, **asdict(config)}
    modules = [sys.modules[__name__], dpo_zoo, rlaif, dpo, batch, data, logprobs, losses, models, sampling, training]
    return cached(f"rlaif-model-judge-{task}-{profile.name}", key, modules, _timed(build))


def model_judge_policy(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5):
    """The DPO policy on model-judge-labelled pairs and its tokenizer (cached)."""
    return load_policy(model_judge_policy_path(task, profile, beta))


def model_judge_pairs(task: str = "assistant", profile: Profile | None = None, beta: float = 0.5
                      ) -> list[dict[str, Any]]:
    """The model-judge-labelled pairs that trained ``model_judge_policy``."""
    return json.loads((model_judge_policy_path(task, profile, beta) / "pairs.json").read_text())

"""The cached artifacts of chapter 13 (RL with verifiable rewards): the arithmetic policy it starts
from, and the GRPO-family runs from it (the ``grpo`` stage), each against one of ``rlhf_mini.verifiers``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from rlhf_mini import (
    batch,
    grpo,
    logprobs,
    losses,
    models,
    ppo,
    prm,
    sampling,
    scoring,
    sft,
    training,
    verifiers,
)
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.eval import evaluate_policy
from rlhf_mini.grpo import RECIPES, GRPOConfig, RewardFn, sample_correct, train_grpo
from rlhf_mini.ppo import PPOConfig, train_ppo, value_model_from_reward_model
from rlhf_mini.sft import SFTConfig, train_sft
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.worlds.arithmetic import ArithmeticWorld
from rlhf_mini.zoo import base_model_path, cached, cached_base_model, load_policy
from rlhf_mini.zoo.prm import cached_verifier, verifier_path

START_SFT = {"cpu": dict(max_steps=1000, n_examples=16_000), "gpu": dict(max_steps=1500, n_examples=32_000)}
"""the starting policy: the arithmetic SFT recipe of ``zoo.sft`` trained longer, on more worked
solutions, so that it is right often enough (27–29 % of its samples on the cpu profile) for a
group of 8 to hold both right and wrong answers"""

CHAPTER_RECIPE = {"cpu": dict(num_generations=8, prompts_per_step=32, max_steps=200, num_iterations=2, learning_rate=1e-4),
                  "gpu": dict(num_generations=16, prompts_per_step=64, max_steps=200, num_iterations=2, learning_rate=1e-4)}
"""the chapter's main run (before ``from_profile`` scales the learning rate). Larger learning rates,
or more optimizer steps per batch, moved the policy further and raised held-out accuracy less; on
the cpu profile the held-out accuracy keeps rising from step 100 to step 200"""

LESSON_STEPS = {"cpu": 60, "gpu": 100}
"""the shorter runs that compare a recipe with the main run over its first steps (Dr. GRPO, DAPO, the
loose verifier): with the same seed, step k of every run draws the same prompts"""


def lesson_run(profile: Profile | None = None) -> dict[str, object]:
    """The arguments (``grpo_policy_path``'s) of a lesson run: ``LESSON_STEPS`` steps, held-out accuracy
    measured once, at the end, and no KL to the start policy logged. The lessons read neither a
    lesson run's accuracy curve nor its KL, and skipping them leaves its training unchanged (the
    evaluation samples with its own generator; the KL is a forward pass of the reference)."""
    profile = profile or get_profile()
    steps = LESSON_STEPS[profile.name]
    return {"max_steps": steps, "eval_every": steps, "log_kl": False}

N_TRAIN_PROMPTS = 4000
N_EVAL_PROMPTS = {"cpu": 1024, "gpu": 2048}
"""held-out problems: enough that a paired gain of 2 points has a 95% interval clear of zero"""
N_CURVE_PROMPTS = {"cpu": 256, "gpu": 512}
"""the first held-out problems, scored every ``eval_every`` steps of a run for its accuracy curve"""


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
    """The held-out problems every run is scored on: drawn like the training problems, but found
    neither in the start policy's SFT data nor in any run's prompt pool (``train_prompts``).

    Unseen problems matter here: the SFT data holds nearly every two-operation problem, and a
    policy can raise its accuracy on problems it has seen by memorising their answers."""
    profile = profile or get_profile()
    world = ArithmeticWorld()
    seen = set(world.prompts(START_SFT[profile.name]["n_examples"], seed=0, split="train"))
    candidates = dict.fromkeys(world.prompts(40 * N_EVAL_PROMPTS[profile.name], seed=10_007, split="train"))
    return [p for p in candidates if p not in seen][: N_EVAL_PROMPTS[profile.name]]


def train_prompts(profile: Profile | None = None, seed: int = 0) -> list[str]:
    """A run's prompt pool: ``N_TRAIN_PROMPTS`` training-split problems (seeded by the run's seed),
    without the held-out ones. Only prompts: RL needs no worked solutions, only a verifier."""
    held_out = set(eval_prompts(profile))
    pool = ArithmeticWorld().prompts(N_TRAIN_PROMPTS, seed=seed + 1, split="train")
    return [p for p in pool if p not in held_out]


def heldout_accuracy(policy, tokenizer, profile: Profile | None = None, n: int = 4, seed: int = 123,
                     n_problems: int | None = None) -> float:
    """Exact-match accuracy of n samples (temperature 1) per held-out problem (``eval_prompts``; its
    first ``n_problems`` only, when given)."""
    profile = profile or get_profile()
    problems = eval_prompts(profile)[:n_problems]
    r = sample_correct(policy, tokenizer, ArithmeticWorld(), problems, verifiers.exact_match, n,
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
                     eval_every: int = 20, **overrides: object) -> Path:
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
        prompts = train_prompts(profile, config.seed)
        log_fns = {name: fn for name, fn in verifiers.VERIFIERS.items() if name != verifier}
        eval_seconds = [0.0]
        seconds_at_step: dict[int, float] = {}  # training time (evaluations excluded) at each evaluation

        def evaluate(p) -> dict[str, float]:
            began_eval = time.perf_counter()
            step = min((len(seconds_at_step) + 1) * eval_every, config.max_steps)
            seconds_at_step[step] = began_eval - began - eval_seconds[0]
            out = {"accuracy": heldout_accuracy(p, tok, profile, n_problems=N_CURVE_PROMPTS[profile.name])}
            eval_seconds[0] += time.perf_counter() - began_eval
            return out

        # a run longer than the lesson runs keeps its policy at their length, so that a comparison
        # at equal steps (the PPO race) needs no second run
        lesson_steps = LESSON_STEPS[profile.name]
        checkpoint_every = lesson_steps if config.max_steps > lesson_steps else 0
        began = time.perf_counter()
        policy, metrics = train_grpo(config, policy, tok, world, prompts, verifiers.VERIFIERS[verifier],
                                     log_fns=log_fns, eval_every=eval_every, eval_fn=evaluate,
                                     checkpoint_dir=folder / "checkpoints", checkpoint_every=checkpoint_every)
        seconds = time.perf_counter() - began - eval_seconds[0]
        # only the lesson-length policy is read again (the final one is saved below); on the gpu profile
        # every other checkpoint would be a GPT-2 small and its optimizer state kept for nothing
        for other in (folder / "checkpoints").glob("step_*"):
            if other.name != f"step_{lesson_steps}":
                shutil.rmtree(other)
        policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics, default=float))
        (folder / "run.json").write_text(json.dumps({"train_seconds": seconds, "train_seconds_at_step": seconds_at_step}))

    key = {"start": start.name, "verifier": verifier, "eval_every": eval_every, "grpo": asdict(config)}
    modules = [sys.modules[__name__], grpo, verifiers, logprobs, losses, models, sampling, training]
    return cached(f"grpo-{method}-arithmetic-{profile.name}", key, modules, build)


def grpo_policy(profile: Profile | None = None, method: str = "grpo", verifier: str = "exact_match",
                **overrides: object):
    """A cached chapter-13 policy and its tokenizer (see ``grpo_policy_path``)."""
    return load_policy(grpo_policy_path(profile, method, verifier, **overrides))


def run_seconds(folder: Path, step: int | None = None) -> float:
    """The wall time a cached run spent training (its held-out evaluations not counted): in all, or
    up to ``step`` (a step at which a GRPO run evaluated)."""
    run = json.loads((folder / "run.json").read_text())
    if step is None:
        return float(run["train_seconds"])
    at_step = run.get("train_seconds_at_step", {})
    if str(step) not in at_step:
        raise ValueError(f"{folder / 'run.json'}: no training time recorded at step {step} "
                         f"(recorded at steps {sorted(int(k) for k in at_step)})")
    return float(at_step[str(step)])


def grpo_checkpoint(profile: Profile | None = None, method: str = "grpo", verifier: str = "exact_match",
                    step: int | None = None, **overrides: object):
    """The policy of a cached run at ``step`` (default ``LESSON_STEPS``; a run longer than the lesson
    runs keeps it) and its tokenizer."""
    profile = profile or get_profile()
    step = LESSON_STEPS[profile.name] if step is None else step
    folder = grpo_policy_path(profile, method, verifier, **overrides) / "checkpoints" / f"step_{step}"
    if not folder.is_dir():
        raise ValueError(f"{folder}: no checkpoint at step {step}; a run longer than "
                         f"{LESSON_STEPS[profile.name]} steps keeps its policy at that step only")
    return load_policy(folder)


def grpo_metrics(profile: Profile | None = None, method: str = "grpo", verifier: str = "exact_match",
                 **overrides: object) -> list[dict]:
    """The per-step metrics of a cached run (TRL's names; ``eval/accuracy`` every few steps)."""
    rows = json.loads((grpo_policy_path(profile, method, verifier, **overrides) / "metrics.json").read_text())
    return [{k: (np.nan if v is None else v) for k, v in row.items()} for row in rows]


def orm_reward_fn(profile: Profile | None = None) -> RewardFn:
    """Chapter 12's outcome reward model as a reward function: the learned probability that a
    solution's final answer is right, ``σ(logit)`` read at its EOS. A model, not a program: it can
    be wrong, and a policy trained against it can find where."""
    orm, tok = cached_verifier("orm", profile)
    world = ArithmeticWorld()

    def reward_fn(prompts: list[str], completions: list[str]) -> list[float]:
        probs = prm.step_probabilities(orm, tok, world, list(prompts), list(completions))
        return [float(x) for x in prm.solution_scores(probs, "orm")]

    return reward_fn


PPO_RECIPE = {"cpu": dict(rollout_batch=256, mini_batch=64, ppo_epochs=2, learning_rate=1e-4, beta=0.02,
                          max_steps=LESSON_STEPS["cpu"]),
              "gpu": dict(rollout_batch=1024, mini_batch=256, ppo_epochs=2, learning_rate=1e-4, beta=0.02,
                          max_steps=LESSON_STEPS["gpu"])}
"""PPO against the ORM from the same start policy, with as many sampled completions per step as the
``grpo`` stage's runs (prompts × G), for as many steps as the lesson runs: it has hacked the ORM by
then, and the main GRPO run keeps its policy at that step (``grpo_checkpoint``) for the comparison"""


def ppo_orm_policy_path(profile: Profile | None = None, **overrides: object) -> Path:
    """The folder of PPO trained from the start policy against the learned ORM (``orm_reward_fn``),
    with the ORM as the start of its value model. ``run.json`` holds the wall time of training."""
    profile = profile or get_profile()
    config = PPOConfig.from_profile(profile, **{**PPO_RECIPE[profile.name], **overrides})
    start = start_policy_path(profile)

    def build(folder: Path) -> None:
        set_seed(config.seed)
        world = get_world("arithmetic")
        policy, tok = load_policy(start)
        orm, _ = cached_verifier("orm", profile)
        value = value_model_from_reward_model(orm)
        prompts = train_prompts(profile, config.seed)
        ref = models.reference_copy(policy)
        began = time.perf_counter()
        # GELU as one kernel in all three models, as the GRPO runs it is compared with do
        with training.fused_gelu(policy), training.fused_gelu(ref), training.fused_gelu(value):
            policy, metrics = train_ppo(config, policy, ref, orm, value, tok, world, prompts,
                                        score_fn=orm_reward_fn(profile))
        seconds = time.perf_counter() - began
        policy.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "run.json").write_text(json.dumps({"train_seconds": seconds}))

    key = {"start": start.name, "orm": verifier_path("orm", profile).name, "ppo": asdict(config)}
    modules = [sys.modules[__name__], ppo, prm, logprobs, losses, models, sampling, scoring, training]
    return cached(f"grpo-ppo-orm-arithmetic-{profile.name}", key, modules, build)


def heldout_eval(policy, tokenizer, profile: Profile | None = None, seed: int = 0) -> dict:
    """Exact match and KL to the start policy (nats per completion) on one sample per held-out problem."""
    profile = profile or get_profile()
    start, _ = start_policy(profile)
    r = evaluate_policy(policy, start, tokenizer, ArithmeticWorld(), eval_prompts(profile),
                        max_new_tokens=profile.max_new_tokens, seed=seed)
    return {"accuracy": float(r["gold"]), "kl": float(r["kl"]), "length": float(r["length"])}

"""The larger stages of ``python -m rlhf_mini``: bon, rs, rlaif, grpo and eval, and the stages on a
user's own data (``--data``: reward, sft, dpo).

Each returns a summary and writes ``metrics.json`` into ``out``; a stage that trains a policy also
copies that policy's cached zoo checkpoint there (``copy_artifact``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer, GPT2LMHeadModel

from rlhf_mini import distributed
from rlhf_mini.best_of_n import BestOfNConfig, best_of_n, best_of_n_sweep
from rlhf_mini.config import Profile
from rlhf_mini.constitution import ai_label_pairs, label_agreement
from rlhf_mini.data import (
    PreferenceDataError,
    load_preferences,
    load_preferences_with_report,
    preference_file,
    write_jsonl,
)
from rlhf_mini.dpo import DPOConfig, precompute_ref_logps, train_dpo
from rlhf_mini.eval import (
    arena_leaderboard,
    battle_prompts,
    gold_battles,
    gold_win_rate,
    judge_win_rate,
    mt_bench,
)
from rlhf_mini.models import ScalarHeadModel, load_pretrained, reference_copy
from rlhf_mini.reward import RewardConfig, pair_scores, train_reward_model
from rlhf_mini.sampling import generate
from rlhf_mini.scoring import reward_model_scorer
from rlhf_mini.sft import SFTConfig, evaluate_sft, train_sft
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import cached_base_model
from rlhf_mini.zoo.dpo import dpo_policy
from rlhf_mini.zoo.grpo import grpo_policy_path
from rlhf_mini.zoo.own_data import TextModelConfig, text_model_path
from rlhf_mini.zoo.ppo import CHAPTER_RECIPE as PPO_RECIPE
from rlhf_mini.zoo.ppo import ppo_policy
from rlhf_mini.zoo.rejection_sampling import rs_policy, rs_policy_path
from rlhf_mini.zoo.reward import cached_reward_model
from rlhf_mini.zoo.rlaif import cached_ai_judge, rlaif_metrics, rlaif_policy, rlaif_policy_path
from rlhf_mini.zoo.sft import sft_policy


def _write(out: Path, metrics: Any) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    return {"metrics_file": str(out / "metrics.json")}


def copy_artifact(folder: Path, out: Path) -> dict:
    """Copy a cached artifact's checkpoint and metrics into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.name in ("DONE", "config.json.zoo"):
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    metrics_file = out / "metrics.json"
    return {"artifact": folder.name, "metrics_file": str(metrics_file) if metrics_file.exists() else None}


def best_of_n_stage(task: str, profile: Profile, out: Path, ns: list[int]) -> dict:
    """Best-of-N from the SFT policy under the reward model: proxy, gold and KL for each N.

    A ``BestOfNConfig`` sweep with a pool of twice the largest N; ``out`` gets ``metrics.json``
    and the scored pool (``pool.jsonl``).
    """
    world = get_world(task)
    policy, tokenizer = sft_policy(task, profile)
    rm, rm_tokenizer = cached_reward_model(task, profile)
    config = BestOfNConfig.from_profile(profile, ns=tuple(ns), pool_size=2 * max(ns))
    sweep = best_of_n_sweep(config, policy, tokenizer, world, reward_model_scorer(rm, rm_tokenizer, world))
    for row in sweep.metrics:
        print(f"N={row['n']:>3}: proxy {row['proxy']:+.3f}  gold {row['gold']:+.3f}  "
              f"KL {row['kl_measured']:.3f} (analytic {row['kl_analytic']:.3f})")
    sweep.save(out)
    return {"metrics_file": str(out / "metrics.json")}


def rejection_sampling_stage(task: str, profile: Profile, out: Path) -> dict:
    """Rejection-sampling fine-tuning from the SFT policy under the reward model: chapter 10's recipe
    (``zoo.rejection_sampling.CHAPTER_RECIPE``, two rounds of best-of-8), the policy ``eval`` ranks."""
    return copy_artifact(rs_policy_path(task, profile), out)


def rlaif_stage(task: str, profile: Profile, out: Path) -> dict:
    """The RLAIF policy, and how well its rubric judge agrees with gold.

    Copies the cached RLAIF policy (DPO on the SFT policy's samples, labelled by chapter 14's
    constitutional judge; ``zoo.rlaif.rlaif_policy``) with its DPO metrics into ``out``, then relabels
    the shipped preference pairs with the same judge into ``{task}_ai_labels.jsonl``. ``metrics.json``
    holds the DPO steps, the judge's agreement with gold on its own training pairs and on the
    shipped pairs.
    """
    info = copy_artifact(rlaif_policy_path(task, profile), out)
    records = list(load_preferences(preference_file(task, "train")))
    labelled = ai_label_pairs(cached_ai_judge(profile), records)
    write_jsonl(labelled, out / f"{task}_ai_labels.jsonl")
    metrics = rlaif_metrics(task, profile)
    agreement = {"policy_pairs": metrics["labels"], "shipped_pairs": label_agreement(labelled)}
    print(json.dumps(agreement, indent=1))
    _write(out, {"steps": metrics["steps"], "agreement": agreement, "n_pairs": len(labelled)})
    return info


def grpo_stage(profile: Profile, out: Path, method: str, steps: int | None) -> dict:
    """RL with verifiable rewards from the arithmetic SFT policy, against the exact-match verifier:
    chapter 13's run with ``method`` (grpo, dr_grpo, dapo, rloo, reinforce, batch_mean) and, when
    given, ``steps`` training steps. Copies the policy and ``metrics.json`` (TRL's names) into ``out``."""
    overrides = {} if steps is None else {"max_steps": steps}
    info = copy_artifact(grpo_policy_path(profile, method=method, **overrides), out)
    last = json.loads((out / "metrics.json").read_text())[-1]
    print(json.dumps({k: last[k] for k in ("step", "reward", "kl", "completion_length", "eval/accuracy")
                      if k in last}, indent=1, default=float), file=sys.stderr)
    return info


def eval_stage(task: str, profile: Profile, out: Path, args: argparse.Namespace) -> dict:
    """Every policy the other stages make, on one leaderboard, judged by the gold reward.

    The contestants: base, SFT, PPO (the ``ppo`` stage's run: chapter 9's recipe, with the same
    ``--kl-coef``), best-of-N under the reward model (N the largest ``--n``), rejection sampling
    (chapter 10's recipe), DPO (the ``dpo`` stage's run, with the same ``--beta`` and
    ``--loss-type``) and, on the assistant world, RLAIF. Those not cached yet are trained first.
    All of them answer the same held-out prompts. The metrics hold, as chapter 15 computes them:

    * ``win_rate_vs_sft``: each one's gold win rate against SFT, with a bootstrap interval;
    * ``leaderboard``: the Bradley-Terry arena of all pairwise gold battles (intervals resampled
      by prompt);
    * ``ai_judge_vs_sft`` (assistant world): the AlpacaEval-style win rate against SFT judged by
      chapter 14's rubric judge (the constitution's rubrics), raw and length-controlled, with its length
      coefficient;
    * ``mt_bench``: two-turn 1-10 scores of each policy (best-of-N, not a single model, is left out)
      on the first 120 prompts.
    """
    world = get_world(task)
    prompts = world.prompts(profile.n_eval_prompts, seed=0, split="test")
    ppo_overrides = {} if args.kl_coef is None else {"beta": args.kl_coef}
    sft, tokenizer = sft_policy(task, profile)
    policies = {"base": cached_base_model(profile), "sft": (sft, tokenizer),
                "ppo": ppo_policy(task, profile, **{**PPO_RECIPE, **ppo_overrides}),
                "rs": rs_policy(task, profile),
                "dpo": dpo_policy(task, profile, beta=args.beta, loss_type=args.loss_type)}
    if task == "assistant":  # the constitution is written for the assistant world
        policies["rlaif"] = rlaif_policy(task, profile)
    responses = {name: generate(model, tok, [world.format_prompt(p) for p in prompts],
                                max_new_tokens=profile.max_new_tokens, seed=1).responses
                 for name, (model, tok) in policies.items()}
    n = max(args.n)
    rm, rm_tokenizer = cached_reward_model(task, profile)
    rm_score = reward_model_scorer(rm, rm_tokenizer, world)
    responses[f"best-of-{n}"] = best_of_n(sft, tokenizer, world, prompts, n, rm_score,
                                          max_new_tokens=profile.max_new_tokens, seed=2).responses
    win_rates = {name: gold_win_rate(world, prompts, responses[name], responses["sft"])
                 for name in responses if name != "sft"}
    board = arena_leaderboard(gold_battles(world, prompts, responses), list(responses),
                              groups=battle_prompts(len(prompts), len(responses)))
    board["gold"] = [float(world.gold_rewards(prompts, responses[name]).mean()) for name in board["policy"]]
    print(board.round(3).to_string(index=False))
    metrics = {"n_prompts": len(prompts), "win_rate_vs_sft": win_rates, "leaderboard": board.to_dict(orient="records")}
    if task == "assistant":  # the constitution is written for the assistant world
        judge = cached_ai_judge(profile)
        metrics["ai_judge_vs_sft"] = {}
        for name in win_rates:
            raw = judge_win_rate(judge, prompts, responses[name], responses["sft"], n_boot=200)
            lc = judge_win_rate(judge, prompts, responses[name], responses["sft"], length_controlled=True, n_boot=200)
            metrics["ai_judge_vs_sft"][name] = {"raw": raw, "length_controlled": lc}

    def responder(model, tok):
        return lambda contexts: generate(model, tok, contexts, max_new_tokens=profile.max_new_tokens, seed=3,
                                         max_prompt_length=160, progress=False).responses

    metrics["mt_bench"] = {}
    for name, (model, tok) in policies.items():
        scores = mt_bench(world, responder(model, tok), prompts[:120], n_boot=200)
        metrics["mt_bench"][name] = {k: scores[k] for k in ("turn1", "turn2", "overall", "turn1_ci", "turn2_ci")}
    return _write(out, metrics)


def run(stage: str, task: str, profile: Profile, out: Path, args: argparse.Namespace) -> dict:
    if stage == "bon":
        return best_of_n_stage(task, profile, out, args.n)
    if stage == "rs":
        return rejection_sampling_stage(task, profile, out)
    if stage == "rlaif":
        return rlaif_stage(task, profile, out)
    if stage == "eval":
        return eval_stage(task, profile, out, args)
    if stage == "grpo":
        return grpo_stage(profile, out, args.loss_type, args.grpo_steps)
    raise ValueError(f"unknown stage {stage!r}")


# --------------------------------------------------------------------------------------------
# --data: the user's own preference pairs (reward, sft, dpo), on one process or under torchrun
# --------------------------------------------------------------------------------------------


def split_held_out(records: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """A seeded random split into (train, held-out); the held-out part has at least one pair."""
    if len(records) < 2:
        raise PreferenceDataError(f"{len(records)} pair(s) loaded; training with a held-out split needs at least 2")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--eval-fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(records))
    n_eval = min(len(records) - 1, max(1, round(fraction * len(records))))
    return [records[i] for i in order[n_eval:]], [records[i] for i in order[:n_eval]]


def count_truncated(tokenizer, records: list[dict[str, Any]], max_length: int) -> dict[str, int]:
    """How many pairs exceed ``max_length`` tokens (prompt + the longer reply + EOS), so lose the
    start of their prompt (``batch.encode_pairs`` cuts from the left), and how many replies alone
    are too long, so lose their end."""
    prompts = tokenizer([r["prompt"] for r in records], add_special_tokens=False)["input_ids"]
    longest = [max(len(c), len(r)) + 1 for c, r in zip(
        tokenizer([r["chosen"] for r in records], add_special_tokens=False)["input_ids"],
        tokenizer([r["rejected"] for r in records], add_special_tokens=False)["input_ids"])]
    return {"prompts_truncated_left": sum(len(p) + n > max_length for p, n in zip(prompts, longest)),
            "replies_truncated": sum(n > max_length - 1 for n in longest)}


def _tokenizer(name_or_path: str):
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except OSError as err:
        raise SystemExit(f"--model {name_or_path}: cannot load its tokenizer with from_pretrained ({err})") from None


def _backbone(args: argparse.Namespace, train: list[dict[str, Any]], progress: bool):
    """``--model`` through ``from_pretrained``, or a tiny GPT-2 pretrained on the training text."""
    if args.model:
        try:
            return (*load_pretrained(args.model), str(args.model))
        except OSError as err:
            raise SystemExit(f"--model {args.model}: cannot load it with from_pretrained ({err})") from None
    texts = [r["prompt"] + r["chosen"] for r in train] + [r["rejected"] for r in train]
    path = text_model_path(texts, TextModelConfig(max_steps=args.pretrain_steps), progress=progress)
    return (*load_pretrained(path), str(path))


def _eval_reward(model, tokenizer, records: list[dict[str, Any]]) -> dict[str, float]:
    """Held-out Bradley–Terry metrics in TRL's names (``eval_`` prefix and ``accuracy``)."""
    chosen, rejected = pair_scores(model, tokenizer, get_world("text"), records)
    gap = chosen - rejected
    return {"accuracy": float(np.mean(gap > 0)), "eval_accuracy": float(np.mean(gap > 0)),
            "eval_loss": float(np.mean(np.logaddexp(0.0, -gap))), "eval_rewards/chosen": float(chosen.mean()),
            "eval_rewards/rejected": float(rejected.mean()), "eval_rewards/margins": float(gap.mean())}


def own_data_stage(stage: str, out: Path, args: argparse.Namespace) -> dict:
    """Train ``stage`` (``reward``, ``sft`` or ``dpo``) on ``--data``, holding out ``--eval-fraction``.

    Under ``torchrun`` every process joins a DistributedDataParallel group and trains on its
    shard of each minibatch; rank 0 writes ``metrics.json`` and the ``save_pretrained`` checkpoint.
    """
    device = distributed.setup()
    main = distributed.is_main()
    try:
        with warnings.catch_warnings():
            if not main:  # one copy of the data's warnings, not one per process
                warnings.simplefilter("ignore")
            tokenizer = _tokenizer(args.model) if args.model else None
            dataset, report = load_preferences_with_report(args.data, tokenizer=tokenizer, progress=main)
        records = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in dataset]
        del dataset
        train, held_out = split_held_out(records, args.eval_fraction, args.seed)
        set_seed(args.seed)
        lm, tokenizer, backbone = _backbone(args, train, progress=main)
        if not isinstance(lm, GPT2LMHeadModel):
            raise SystemExit(f"--model {args.model}: a {type(lm).__name__}; the course's trainers take GPT-2 models")
        max_length = args.max_length or min(lm.config.n_positions, 512)
        truncated = count_truncated(tokenizer, train + held_out, max_length)
        if main and truncated["prompts_truncated_left"]:
            print(f"{truncated['prompts_truncated_left']} of {len(records)} pairs are longer than {max_length} "
                  f"tokens: their prompts lose their start ({truncated['replies_truncated']} replies are too long "
                  "on their own and lose their end)", file=sys.stderr)
        summary: dict[str, Any] = {"data": str(args.data), "n_train": len(train), "n_eval": len(held_out),
                                   "data_report": report.counts(), **truncated, "max_length": max_length,
                                   "model": args.model or "tiny GPT-2 pretrained on the data", "backbone": backbone,
                                   "world_size": distributed.world_size()}
        common = {"max_steps": args.max_steps, "batch_size": args.batch_size, "max_length": max_length,
                  "seed": args.seed}
        if stage == "reward":
            model = ScalarHeadModel.from_language_model(lm.to(device), seed=args.seed)
            config = RewardConfig(task="text", learning_rate=args.learning_rate or 1e-3, eval_every=0, **common)
            model, steps = train_reward_model(config, model, tokenizer, train, progress=main)
            summary.update(_eval_reward(model, tokenizer, held_out))
        elif stage == "sft":
            model = lm.to(device)
            config = SFTConfig(task="text", learning_rate=args.learning_rate or 1e-3, **common)
            model, steps = train_sft(config, model, tokenizer, [{"prompt": r["prompt"], "response": r["chosen"]}
                                                                for r in train], progress=main)
            summary["eval_loss"] = evaluate_sft(model, tokenizer, [{"prompt": r["prompt"], "response": r["chosen"]}
                                                                   for r in held_out], "text", max_length)
        else:
            model = lm.to(device)
            config = DPOConfig(beta=args.beta, loss_type=args.loss_type, learning_rate=args.learning_rate or 1e-4,
                               ref_batch_size=32, **common)
            ref = reference_copy(model)
            steps = train_dpo(config, model, ref, tokenizer, train, get_world("text"), progress=main).metrics
            policy_lp = precompute_ref_logps(model, tokenizer, get_world("text"), held_out, max_length, 32, False)
            ref_lp = precompute_ref_logps(ref, tokenizer, get_world("text"), held_out, max_length, 32, False)
            chosen = config.beta * (policy_lp["chosen"] - ref_lp["chosen"])
            rejected = config.beta * (policy_lp["rejected"] - ref_lp["rejected"])
            summary.update({"accuracy": float((chosen > rejected).float().mean()),
                            "eval_rewards/chosen": float(chosen.mean()), "eval_rewards/rejected": float(rejected.mean()),
                            "eval_rewards/margins": float((chosen - rejected).mean())})
        summary["train_loss"] = float(np.mean([s["loss"] for s in steps[-10:]]))
        summary["steps"] = steps
        if main:
            out.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(out)  # safetensors
            tokenizer.save_pretrained(out)
            _write(out, summary)
            shown = {k: v for k, v in summary.items() if k != "steps"}
            print(json.dumps(shown, indent=1, default=float), file=sys.stderr)
    finally:
        distributed.cleanup()
    return {"metrics_file": str(out / "metrics.json"), "world_size": summary["world_size"]}

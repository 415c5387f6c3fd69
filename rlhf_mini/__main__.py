"""Run one stage of the course from the shell, with a progress bar.

    python -m rlhf_mini sft    --task assistant --profile cpu --out runs/sft
    python -m rlhf_mini reward --task assistant --out runs/reward
    python -m rlhf_mini ppo    --task assistant --out runs/ppo --kl-coef 0.05
    python -m rlhf_mini bon    --task assistant --out runs/bon
    python -m rlhf_mini rs     --task assistant --out runs/rs
    python -m rlhf_mini dpo    --task assistant --out runs/dpo --beta 0.5 --loss-type sigmoid
    python -m rlhf_mini prm    --out runs/prm            (arithmetic; also trains the ORM)
    python -m rlhf_mini prm    --out runs/prm-copy --mistakes miscopy
    python -m rlhf_mini rlaif  --out runs/rlaif
    python -m rlhf_mini grpo   --task arithmetic --out runs/grpo --loss-type dr_grpo   (chapter 13)
    python -m rlhf_mini eval   --task assistant --out runs/eval   (the policies of all the stages, judged)

On your own preference pairs (any format ``data.load_preferences`` reads), one process or many:

    python -m rlhf_mini reward --data pairs.jsonl.gz --out runs/my-rm --max-steps 40
    python -m rlhf_mini dpo    --data pairs.jsonl.gz --model runs/my-sft --out runs/my-dpo
    torchrun --nproc_per_node=2 -m rlhf_mini reward --data pairs.jsonl.gz --out runs/my-rm

Each writes ``metrics.json`` into ``--out``; training stages also write their checkpoint there
(``save_pretrained``: load it with ``rlhf_mini.models.load_pretrained(out)``, or
``ScalarHeadModel.from_pretrained(out)`` for reward models and verifiers). A stage trains through
the same cached zoo artifact a notebook uses, so running it twice, or after a chapter, is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlhf_mini import cli_stages, distributed
from rlhf_mini.cli_stages import copy_artifact
from rlhf_mini.config import get_profile
from rlhf_mini.data import PreferenceDataError
from rlhf_mini.grpo import RECIPES as GRPO_RECIPES
from rlhf_mini.worlds import WORLDS
from rlhf_mini.zoo.dpo import dpo_policy_path
from rlhf_mini.zoo.ppo import CHAPTER_RECIPE, ppo_policy_path
from rlhf_mini.zoo.prm import verifier_path
from rlhf_mini.zoo.reward import reward_model_path
from rlhf_mini.zoo.sft import sft_policy_path

STAGES = ("sft", "reward", "ppo", "bon", "rs", "dpo", "prm", "rlaif", "grpo", "eval")
# PPO, best-of-N, rejection sampling and RLAIF sample from the policy inside their loops; they stay
# on the course's worlds and one process
OWN_DATA_STAGES = ("reward", "sft", "dpo")
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")
GRPO_METHODS = tuple(GRPO_RECIPES)


def _write_metrics(out: Path, metrics: object) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=1, default=float))
    return path


def run_stage(stage: str, task: str, profile_name: str | None, out: Path, args: argparse.Namespace) -> dict:
    profile = get_profile(profile_name)
    if stage == "sft":
        return copy_artifact(sft_policy_path(task, profile), out)
    if stage == "reward":
        return copy_artifact(reward_model_path(task, profile), out)
    if stage == "ppo":
        overrides = {} if args.kl_coef is None else {"beta": args.kl_coef}
        return copy_artifact(ppo_policy_path(task, profile, **{**CHAPTER_RECIPE, **overrides}), out)
    if stage == "dpo":
        return copy_artifact(dpo_policy_path(task, profile, beta=args.beta, loss_type=args.loss_type), out)
    if stage == "prm":
        info = copy_artifact(verifier_path("prm", profile, mistakes=args.mistakes), out / "prm")
        copy_artifact(verifier_path("orm", profile, mistakes=args.mistakes), out / "orm")
        metrics = {kind: json.loads((out / kind / "metrics.json").read_text())
                   for kind in ("prm", "orm") if (out / kind / "metrics.json").exists()}
        _write_metrics(out, metrics)
        return info
    return cli_stages.run(stage, task, profile, out, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--task", default=None, help="assistant, sentiment or arithmetic "
                        "(default: assistant; arithmetic for prm)")
    parser.add_argument("--profile", choices=["cpu", "gpu"], default=None,
                        help="default: $RLHF_MINI_PROFILE, else gpu with CUDA and cpu without")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json and the checkpoint")
    parser.add_argument("--beta", type=float, default=0.5, help="dpo and eval: the KL strength β")
    parser.add_argument("--loss-type", default=None, choices=[*DPO_LOSS_TYPES, *GRPO_METHODS],
                        help=f"dpo and eval: one of {', '.join(DPO_LOSS_TYPES)} (default sigmoid); grpo: the method, "
                        f"one of {', '.join(GRPO_METHODS)} (default grpo)")
    parser.add_argument("--grpo-steps", type=int, default=None, help="grpo: training steps (default: chapter 13's)")
    parser.add_argument("--kl-coef", type=float, default=None,
                        help="ppo and eval: initial KL coefficient β of chapter 9's adaptive recipe")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                        help="bon: values of N; eval: the largest is its best-of-N contestant")
    own = parser.add_argument_group("your own data (reward, sft, dpo)")
    own.add_argument("--data", default=None, help="a preference file, save_to_disk folder or hub name "
                     "(see rlhf_mini.data.load_preferences); trains on it instead of a course world")
    own.add_argument("--model", default=None, help="with --data: a GPT-2 to start from (a local folder or a hub "
                     "name, through from_pretrained); default: a tiny GPT-2 pretrained on the data's text")
    own.add_argument("--max-steps", type=int, default=100, help="with --data: optimizer steps")
    own.add_argument("--batch-size", type=int, default=16, help="with --data: pairs per step, over all processes")
    own.add_argument("--learning-rate", type=float, default=None,
                     help="with --data: peak rate (default 1e-3 for reward and sft, 1e-4 for dpo)")
    own.add_argument("--max-length", type=int, default=None,
                     help="with --data: tokens per prompt + reply (default: the model's context, at most 512)")
    own.add_argument("--eval-fraction", type=float, default=0.1, help="with --data: pairs held out for metrics")
    own.add_argument("--pretrain-steps", type=int, default=300,
                     help="with --data and no --model: pretraining steps of the tiny GPT-2")
    own.add_argument("--seed", type=int, default=0, help="with --data: seeds the split, the model and the order")
    parser.add_argument("--mistakes", choices=["miscalculation", "miscopy"], default="miscalculation",
                        help="prm: the slips of the solutions the verifiers train on (chapter 12)")
    args = parser.parse_args(argv)
    if args.loss_type is None:
        args.loss_type = "grpo" if args.stage == "grpo" else "sigmoid"
    allowed = GRPO_METHODS if args.stage == "grpo" else DPO_LOSS_TYPES
    if args.loss_type not in allowed:
        parser.error(f"--loss-type for the {args.stage} stage must be one of {', '.join(allowed)}, got {args.loss_type!r}")
    if args.grpo_steps is not None and args.grpo_steps < 1:
        parser.error(f"--grpo-steps must be >= 1, got {args.grpo_steps}")
    if args.data is not None:
        if args.stage not in OWN_DATA_STAGES:
            parser.error(f"--data works with the {', '.join(OWN_DATA_STAGES)} stages, not {args.stage!r}")
        if args.max_steps < 1 or args.batch_size < 1:
            parser.error(f"--max-steps and --batch-size must be >= 1, got {args.max_steps} and {args.batch_size}")
        try:
            info = cli_stages.own_data_stage(args.stage, args.out, args)
        except PreferenceDataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if distributed.is_main():
            print(json.dumps({"stage": args.stage, "data": args.data, "out": str(args.out), **info}, indent=1))
        return 0
    if args.model is not None:
        parser.error("--model goes with --data (the course's worlds train their own models)")
    task = args.task or ("arithmetic" if args.stage in ("prm", "grpo") else "assistant")
    if task not in WORLDS:
        parser.error(f"--task must be one of {sorted(WORLDS)}, got {task!r}")
    # the verifiers' world; the constitution's world
    only = {"prm": "arithmetic", "grpo": "arithmetic", "rlaif": "assistant"}
    if args.stage in only and task != only[args.stage]:
        parser.error(f"the {args.stage} stage works on --task {only[args.stage]} only, got {task!r}")
    if args.stage == "bon" and min(args.n) < 1:
        parser.error(f"--n values must be >= 1, got {args.n}")
    info = run_stage(args.stage, task, args.profile, args.out, args)
    print(json.dumps({"stage": args.stage, "task": task, "out": str(args.out), **info}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

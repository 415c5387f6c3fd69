"""The course's DPO and reward-model steps against TRL's, on the same model, data and batches.

    pip install -e ".[bench]"            # TRL, for this script only (never a course dependency)
    python benchmarks/vs_trl.py                       # DPO and reward model, 20 timed steps each
    python benchmarks/vs_trl.py --tasks dpo --steps 40 --no-memory

Both sides start from the same weights (the zoo's cpu-profile base model and its tokenizer), see
the same shipped preference pairs in the same minibatches (``training.batch_indices``; TRL's
collator is fed the rows ours uses), and run the same optimizer settings (AdamW, constant learning
rate, gradient clipping at 1.0). TRL runs at its fastest on the CPU: fp32 (its default there is
bf16), no gradient checkpointing (its default is on), its default fused AdamW. One *step* is what
each trainer does per minibatch: collate the batch (ours tokenizes and pads; TRL pads the rows it
tokenized up front), forward, backward, clip, optimizer step, and the logged metrics.

The sides alternate step by step (ours, TRL, ours, TRL, ...), so a load spike on a shared machine
hits both; the ratio printed is the median over steps of ours/TRL within each round. On a machine
that runs more processes than it has cores, use ``--threads 1``: there every multi-threaded torch
operation waits for a second core to be scheduled, a cost per operation rather than per FLOP, and
the side that runs more (smaller) operations loses time that an unloaded machine would not charge. What each
side computes per step:

* DPO, ``precomputed``: the reference log-probs log π_ref(y|x) are computed once, before training
  (ours always does this, ``dpo.precompute_ref_logps``; TRL with ``precompute_ref_log_probs=True``),
  so a step is one policy forward and backward over the 2B chosen and rejected rows. TRL also
  computes per-token entropy, mean logits and top-1 accuracy in its fused LM head, for its logs.
* DPO, ``reference each step``: TRL's default (``precompute_ref_log_probs=False``) runs the frozen
  reference model forward on every batch. Ours never does, so for a like-for-like figure the ours
  column here adds the same reference forward (``logprobs.sequence_logprobs`` under ``no_grad``).
* Reward model: one forward and backward of the scalar-head model over the 2B rows and the
  Bradley–Terry loss. Ours is ``models.ScalarHeadModel`` (head with a bias), TRL's
  ``GPT2ForSequenceClassification`` (no bias); the bias cancels in the loss, so both start from the
  same body and head weights and compute the same loss.

Losses of the first steps are checked to agree (same inputs, same weights, same optimizer): step 1
to a relative 1e-5, the later steps to 1e-3 (two float32 implementations drift apart at rounding
level, and AdamW's first steps amplify rounding in tiny gradients).

Peak memory (``--no-memory`` skips it): each side runs in its own process, and the number is the
growth of the process's peak resident set (VmHWM) over the training steps, beyond its RSS after
setup, with glibc told to map every block over 1 MiB fresh (see ``benchmarks/training.py``). It
counts everything a step allocates (activations, gradients, AdamW's moments on the first step,
allocator overhead), not tensors alone.

GRPO against ``GRPOTrainer`` is measured only once the course has a GRPO trainer
(``rlhf_mini.grpo``); otherwise the table says so.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's one-off reference pass draws a bar

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from rlhf_mini import zoo  # noqa: E402
from rlhf_mini.batch import collate_preferences, tokenize_preferences  # noqa: E402
from rlhf_mini.config import get_profile  # noqa: E402
from rlhf_mini.data import preference_pairs  # noqa: E402
from rlhf_mini.dpo import (  # noqa: E402
    DPOConfig,
    _logps,
    dpo_batch_loss,
    precompute_ref_logps,
    tokenize_preference_pairs,
)
from rlhf_mini.losses import bradley_terry_loss  # noqa: E402
from rlhf_mini.models import ScalarHeadModel, reference_copy  # noqa: E402
from rlhf_mini.reward import RewardConfig, _scores  # noqa: E402
from rlhf_mini.training import batch_indices, fused_gelu, optimizer_step  # noqa: E402
from rlhf_mini.worlds import get_world  # noqa: E402

TASKS = ("dpo", "reward", "grpo")
SIDES = {"dpo": ("ours", "trl", "ours+ref", "trl+ref"), "reward": ("ours", "trl")}
FIRST_STEP_RTOL, LATER_STEPS_RTOL = 1e-5, 1e-3


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


# --------------------------------------------------------------------------------------------
# Shared set-up: one model, one tokenizer, one list of pairs, one minibatch order
# --------------------------------------------------------------------------------------------


class Setup:
    def __init__(self, n_pairs: int, batch_size: int, seed: int = 0):
        self.profile = get_profile("cpu")
        self.base, self.tokenizer = zoo.cached_base_model(self.profile)
        self.base.eval()
        self.world = get_world("assistant")
        self.pairs = [{k: p[k] for k in ("prompt", "chosen", "rejected")}
                      for p in preference_pairs("assistant", n_pairs)]
        self.batch_size, self.seed = batch_size, seed

    def indices(self, step: int) -> list[int]:
        return [int(i) for i in batch_indices(step, len(self.pairs), self.batch_size, self.seed)]

    def text_dataset(self):
        from datasets import Dataset
        return Dataset.from_list([{"prompt": self.world.format_prompt(p["prompt"]), "chosen": p["chosen"],
                                   "rejected": p["rejected"]} for p in self.pairs])


def _trl_args(cls, out: str, **kw):
    """TRL's config at its fastest on the CPU: fp32, no checkpointing, no logging or saving."""
    fields = set(cls.__dataclass_fields__)
    kw.update(output_dir=out, use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
              logging_strategy="no", disable_tqdm=True, lr_scheduler_type="constant", warmup_steps=0,
              weight_decay=0.0, max_grad_norm=1.0, seed=0, dataloader_num_workers=0)
    for name in ("gradient_checkpointing", "activation_checkpointing"):
        if name in fields:
            kw[name] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return cls(**kw)


class TRLSide:
    """One TRL trainer driven a step at a time: its own collator, ``training_step``, clipping,
    optimizer and scheduler, as ``Trainer.train``'s inner loop does (without its dataloader, so
    that the minibatches are ours)."""

    def __init__(self, trainer, steps: int, same_activation: bool = False):
        self.trainer = trainer
        if same_activation:  # --trl-fused-gelu: TRL's model with ours' one-kernel GELU
            self._gelu = fused_gelu(trainer.model)
            self._gelu.__enter__()
            if getattr(trainer, "ref_model", None) is not None:
                self._ref_gelu = fused_gelu(trainer.ref_model)
                self._ref_gelu.__enter__()
        trainer.create_optimizer_and_scheduler(num_training_steps=steps)
        self.model = trainer.model
        self.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop

    def step(self, rows: list[int]) -> float:
        t = self.trainer
        examples = [t.train_dataset[i] for i in rows]
        inputs = t.data_collator(examples)
        loss = t.training_step(self.model, inputs)
        t._get_grad_norm(self.model, grad_norm=t._clip_grad_norm(self.model))
        t.optimizer.step()
        t.lr_scheduler.step()
        self.model.zero_grad()
        return float(loss)

    def batch_tokens(self, rows: list[int]) -> list[list[int]]:
        """The real (unpadded) token rows of a collated batch, for the same-inputs check."""
        inputs = self.trainer.data_collator([self.trainer.train_dataset[i] for i in rows])
        return [ids[m.bool()].tolist() for ids, m in zip(inputs["input_ids"], inputs["attention_mask"])]


# --------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------


class OursDPO:
    """``dpo.train_dpo``'s loop body, one step at a time (constant learning rate here): the pairs
    tokenized once, each step padding its rows, the policy inside ``training.fused_gelu``."""

    def __init__(self, s: Setup, lr: float, beta: float, reference_each_step: bool):
        self.s = s
        self.config = DPOConfig(beta=beta, learning_rate=lr, batch_size=s.batch_size, warmup_steps=0)
        self.policy = copy.deepcopy(s.base).train()
        self.policy.requires_grad_(True)
        self.ref = reference_copy(s.base)
        self.reference_each_step = reference_each_step
        t0 = time.perf_counter()
        self.ids = tokenize_preference_pairs(s.tokenizer, s.world, s.pairs)
        self.ref_logps = None if reference_each_step else precompute_ref_logps(
            self.ref, s.tokenizer, s.world, s.pairs, self.config.max_length, progress=False)
        self.setup_s = time.perf_counter() - t0
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=lr, weight_decay=0.0)
        for model in (self.policy, self.ref):  # train_dpo's `with fused_gelu(policy):`, for the whole run
            fused_gelu(model).__enter__()

    def batch(self, rows: list[int]):
        return collate_preferences(self.ids, rows, self.config.max_length, self.s.tokenizer.pad_token_id)

    def step(self, rows: list[int]) -> float:
        batch = self.batch(rows)
        if self.reference_each_step:
            with torch.no_grad():
                summed, _ = _logps(self.ref, batch)
            b = len(rows)
            ref = {"chosen": summed[:b], "rejected": summed[b:]}
        else:
            ref = {k: v[torch.as_tensor(rows)] for k, v in self.ref_logps.items()}
        loss, stats = dpo_batch_loss(self.config, self.policy, batch, ref)
        optimizer_step(self.optimizer, loss, self.policy.parameters(), self.config.max_grad_norm,
                       self.config.learning_rate)
        return stats["loss"]

    def batch_tokens(self, rows: list[int]) -> list[list[int]]:
        b = self.batch(rows)
        return [ids[m.bool()].tolist() for ids, m in zip(b.input_ids, b.attention_mask)]


def trl_dpo(s: Setup, lr: float, beta: float, reference_each_step: bool, steps: int, out: str,
            same_activation: bool) -> TRLSide:
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer
    args = _trl_args(TRLDPOConfig, out, per_device_train_batch_size=s.batch_size, learning_rate=lr, beta=beta,
                     loss_type=["sigmoid"], max_length=DPOConfig.max_length,
                     precompute_ref_log_probs=not reference_each_step, disable_dropout=True)
    policy = copy.deepcopy(s.base).train()
    policy.requires_grad_(True)
    ref = reference_copy(s.base) if reference_each_step else None
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=s.text_dataset(),
                         processing_class=s.tokenizer)
    side = TRLSide(trainer, steps, same_activation)
    side.setup_s = time.perf_counter() - t0
    return side


# --------------------------------------------------------------------------------------------
# Reward model
# --------------------------------------------------------------------------------------------


class OursReward:
    """``reward.train_reward_model``'s loop body, one step at a time (constant learning rate here):
    the pairs tokenized once, each step padding its rows, the model inside ``training.fused_gelu``."""

    def __init__(self, s: Setup, lr: float):
        self.s = s
        self.config = RewardConfig(learning_rate=lr, batch_size=s.batch_size)
        self.model = ScalarHeadModel.from_language_model(s.base, seed=0).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
        t0 = time.perf_counter()
        self.ids = tokenize_preferences(s.tokenizer, [s.world.format_prompt(p["prompt"]) for p in s.pairs],
                                        [p["chosen"] for p in s.pairs], [p["rejected"] for p in s.pairs])
        self.setup_s = time.perf_counter() - t0
        fused_gelu(self.model).__enter__()  # train_reward_model's `with fused_gelu(model):`, for the whole run

    def batch(self, rows: list[int]):
        return collate_preferences(self.ids, rows, self.config.max_length, self.s.tokenizer.pad_token_id)

    def step(self, rows: list[int]) -> float:
        batch = self.batch(rows)
        scores = _scores(self.model, batch.input_ids, batch.attention_mask)
        b = len(rows)
        loss = bradley_terry_loss(scores[:b], scores[b:])
        optimizer_step(self.optimizer, loss, self.model.parameters(), self.config.max_grad_norm,
                       self.config.learning_rate)
        c, r = scores[:b].detach(), scores[b:].detach()
        # the metrics train_reward_model logs
        _ = [float(loss.detach()), float(c.mean()), float(r.mean()), float((c - r).mean()), float((c > r).float().mean())]
        return float(loss.detach())

    def batch_tokens(self, rows: list[int]) -> list[list[int]]:
        b = self.batch(rows)
        return [ids[m.bool()].tolist() for ids, m in zip(b.input_ids, b.attention_mask)]


def trl_reward(s: Setup, lr: float, steps: int, out: str, same_activation: bool,
               ours: OursReward | None = None) -> TRLSide:
    from transformers import GPT2ForSequenceClassification
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer
    args = _trl_args(TRLRewardConfig, out, per_device_train_batch_size=s.batch_size, learning_rate=lr,
                     adam_beta2=0.95, max_length=RewardConfig.max_length, disable_dropout=True)
    config = copy.deepcopy(s.base.config)
    config.num_labels = 1
    model = GPT2ForSequenceClassification(config)
    model.transformer.load_state_dict(s.base.transformer.state_dict())
    head = (ours or OursReward(s, lr)).model.head  # the same initial head weights as ours
    with torch.no_grad():
        model.score.weight.copy_(head.weight)
    model.train()
    t0 = time.perf_counter()
    trainer = RewardTrainer(model=model, args=args, train_dataset=s.text_dataset(), processing_class=s.tokenizer)
    side = TRLSide(trainer, steps, same_activation)
    side.setup_s = time.perf_counter() - t0
    return side


# --------------------------------------------------------------------------------------------
# Timing, alternating, and the checks
# --------------------------------------------------------------------------------------------


def build(task: str, side: str, s: Setup, steps: int, out: str, cache: dict, same_activation: bool = False):
    if task == "dpo":
        lr, beta = DPOConfig.learning_rate, DPOConfig.beta
        each = side.endswith("+ref")
        if side.startswith("ours"):
            return OursDPO(s, lr, beta, each)
        return trl_dpo(s, lr, beta, each, steps, os.path.join(out, side), same_activation)
    lr = RewardConfig.from_profile(s.profile).learning_rate
    if side == "ours":
        cache["ours_rm"] = OursReward(s, lr)
        return cache["ours_rm"]
    return trl_reward(s, lr, steps, os.path.join(out, side), same_activation, cache.get("ours_rm"))


def run_task(task: str, s: Setup, warmup: int, steps: int, out: str, same_activation: bool) -> dict:
    names = SIDES[task]
    cache: dict = {}
    sides = {name: build(task, name, s, warmup + steps, out, cache, same_activation) for name in names}
    # Same inputs: every side's collated batch holds the same token rows (padding aside).
    rows = s.indices(0)
    tokens = {name: sorted(map(tuple, side.batch_tokens(rows))) for name, side in sides.items()}
    same_inputs = all(t == tokens[names[0]] for t in tokens.values())
    times = {name: [] for name in names}
    losses = {name: [] for name in names}
    for step in range(warmup + steps):
        rows = s.indices(step)
        for name in names:
            t0 = time.perf_counter()
            loss = sides[name].step(rows)
            dt = time.perf_counter() - t0
            losses[name].append(loss)
            if step >= warmup:
                times[name].append(dt)
    return {"times": times, "losses": losses, "same_inputs": same_inputs,
            "setup_s": {name: getattr(side, "setup_s", 0.0) for name, side in sides.items()}}


def memory_worker(task: str, side: str, n_pairs: int, batch_size: int, steps: int, same_activation: bool) -> dict:
    s = Setup(n_pairs, batch_size)
    with tempfile.TemporaryDirectory() as out:
        trainer = build(task, side, s, steps, out, {}, same_activation)
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        before = _rss_kib("VmRSS")
        for step in range(steps):
            trainer.step(s.indices(step))
        peak = _rss_kib("VmHWM")
    return {"peak_mib": (peak - before) / 1024}


def measure_memory(task: str, side: str, args) -> float | None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    cmd = [sys.executable, __file__, "--memory-worker", task, side, "--pairs", str(args.pairs),
           "--batch-size", str(args.batch_size), "--threads", str(torch.get_num_threads())]
    cmd += ["--trl-fused-gelu"] if args.trl_fused_gelu else []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        print(f"memory of {task}/{side} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def _agree(a: list[float], b: list[float], n: int) -> tuple[bool, float]:
    worst = 0.0
    ok = True
    for i, (x, y) in enumerate(zip(a[:n], b[:n])):
        rel = abs(x - y) / max(abs(y), 1e-12)
        worst = max(worst, rel)
        ok &= rel <= (FIRST_STEP_RTOL if i == 0 else LATER_STEPS_RTOL)
    return ok, worst


def report(task: str, result: dict, memory: dict, check_steps: int) -> list[str]:
    t, losses = result["times"], result["losses"]
    lines = []
    pairs = [("ours", "trl", "reference log-probs precomputed" if task == "dpo" else "scalar head, BT loss")]
    if task == "dpo":
        pairs.append(("ours+ref", "trl+ref", "reference forward every step (TRL's default)"))
    for ours, trl, what in pairs:
        ratios = [a / b for a, b in zip(t[ours], t[trl])]
        ok, worst = _agree(losses[ours], losses[trl], check_steps)
        mem = (f"{memory[ours]:8.1f} {memory[trl]:8.1f}" if memory.get(ours) is not None
               and memory.get(trl) is not None else f"{'-':>8} {'-':>8}")
        lines.append(f"{task:<7}{what:<48}{1e3 * statistics.median(t[ours]):9.1f} "
                     f"{1e3 * statistics.median(t[trl]):9.1f} {statistics.median(ratios):7.2f}   {mem}   "
                     f"{'yes' if ok else 'NO'} ({worst:.1e})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (their losses are checked)")
    parser.add_argument("--pairs", type=int, default=512, help="preference pairs in the training set")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the cpu profile's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--trl-fused-gelu", action="store_true",
                        help="give TRL's models ours' one-kernel GELU too (training.fused_gelu)")
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch_size = args.batch_size or get_profile("cpu").batch_size
    warnings.filterwarnings("ignore", category=UserWarning)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    try:
        from datasets.utils.logging import disable_progress_bar
        disable_progress_bar()
    except ImportError:
        pass

    if args.memory_worker:
        task, side = args.memory_worker
        print(json.dumps(memory_worker(task, side, args.pairs, args.batch_size, 4, args.trl_fused_gelu)))
        return
    if importlib.util.find_spec("trl") is None:
        sys.exit("TRL is not installed: pip install -e '.[bench]' (or pip install -c constraints.txt trl)")
    import transformers
    import trl

    s = Setup(args.pairs, args.batch_size)
    check_steps = min(5, args.warmup + args.steps)
    lines, notes = [], []
    with tempfile.TemporaryDirectory() as out:
        for task in args.tasks:
            if task == "grpo":
                if importlib.util.find_spec("rlhf_mini.grpo") is None:
                    lines.append(f"{'grpo':<7}{'not measured: the course has no GRPO trainer yet':<48}")
                else:
                    lines.append(f"{'grpo':<7}{'not measured: GRPO vs GRPOTrainer is not in this script yet':<48}")
                continue
            print(f"{task}: {args.warmup} warm-up + {args.steps} timed steps per side, alternating ...", flush=True)
            result = run_task(task, s, args.warmup, args.steps, out, args.trl_fused_gelu)
            memory = {} if args.no_memory else {side: measure_memory(task, side, args) for side in SIDES[task]}
            lines += report(task, result, memory, check_steps)
            notes.append(f"{task}: same token rows on both sides: {'yes' if result['same_inputs'] else 'NO'}; "
                         "one-off set-up (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["setup_s"].items()))
            notes.append(f"{task}: first losses  " + "  ".join(
                f"{k} " + " ".join(f"{x:.6f}" for x in v[:3]) for k, v in result["losses"].items()))

    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, TRL {trl.__version__}; "
          f"CPU, {torch.get_num_threads()} threads; cpu-profile GPT-2 ({s.base.config.n_layer} layers, "
          f"{s.base.config.n_embd} wide, vocabulary {s.base.config.vocab_size}); {args.batch_size} pairs per step "
          f"({2 * args.batch_size} rows)")
    print(f"\n{'task':<7}{'what each side computes per step':<48}{'ours ms':>9} {'TRL ms':>9} "
          f"{'ours/TRL':>7}   {'peak MiB':>8} {'(TRL)':>8}   losses agree (worst rel. diff, "
          f"first {check_steps} steps)")
    for line in lines:
        print(line)
    print()
    for note in notes:
        print(note)
    print("Times are medians over the timed steps; ours/TRL is the median of the per-round ratios. Peak MiB: "
          "growth of peak RSS over 4 steps, one process per side. On a loaded machine the absolute times "
          "move; the ratio, measured step by step in one process, is the figure to compare.")


if __name__ == "__main__":
    main()

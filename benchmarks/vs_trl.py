"""The course's DPO, reward-model and GRPO steps against TRL's, on the same model, data and batches.

    pip install -e ".[bench]"            # TRL, for this script only (never a course dependency)
    python benchmarks/vs_trl.py                       # DPO and reward model 20 timed steps each, GRPO 10
    python benchmarks/vs_trl.py --tasks dpo --steps 40 --no-memory
    python benchmarks/vs_trl.py --tasks grpo --threads 1 --num-generations 4

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
  same body and head weights and compute the same loss. TRL's head scores every position and then
  picks the last real token; ours runs the last block's query, attention output and MLP at that
  token only (``ScalarHeadModel.score``), the same value up to float rounding.

Losses of the first steps are checked to agree (same inputs, same weights, same optimizer): step 1
to a relative 1e-5, the later steps to 1e-3 (two float32 implementations drift apart at rounding
level, and AdamW's first steps amplify rounding in tiny gradients).

Peak memory (``--no-memory`` skips it): each side runs in its own process, and the number is the
growth of the process's peak resident set (VmHWM) over the training steps, beyond its RSS after
setup, with glibc told to map every block over 1 MiB fresh (see ``benchmarks/training.py``). It
counts everything a step allocates (activations, gradients, AdamW's moments on the first step,
allocator overhead), not tensors alone.

GRPO against ``GRPOTrainer``: both start from chapter 13's starting policy (the zoo's arithmetic
SFT model, ``zoo.grpo.start_policy``) and its tokenizer, draw the same problems each step (the ones
``grpo.draw_step_batch`` picks; TRL gets each G times, as its ``RepeatSampler`` lays them out), and
score with the same verifier (``verifiers.exact_match``; TRL's reward function receives the raw
problem as a dataset column). The chapter's ``GRPOConfig`` is cut to a short run that TRL's
``GRPOConfig`` matches field by field: G completions (``--num-generations``, 8) of each of
``--prompts-per-step`` (8) problems at temperature 1, at most
``max_completion_length`` tokens each, one update per sampled batch (``num_iterations=1``), β = 0,
ε = 0.2, ``loss_type="grpo"``, group-scaled advantages, the chapter's learning rate, gradient
clipping at 1.0, Adam without weight decay, fp32, no gradient checkpointing, on the CPU. Ours is
``grpo.train_grpo`` itself: its ``eval_fn`` hook, called after each of its steps, runs TRL's step,
so the two alternate. One *step*, on each side:

* ours: sample (``sampling.generate``: a plain KV-cache loop, left-padded prompts, stopping when
  every row has emitted EOS; transformers' forward reads the prompt, then ``sampling.gpt2_decode_step``
  takes each new token over a cache allocated once), score, group advantages, then two passes over the batch's completion
  tokens, its rows grouped into ``GRPOConfig.length_buckets`` buckets of similar length, each cut
  to the columns it uses (``logprobs.token_logprobs``): the frozen
  reference's log-probs (computed at β = 0 too, for the logged KL; ``--no-kl-log`` skips it, as
  TRL does), and the policy's forward (with the per-token entropy) and backward; at μ = 1, as in
  TRL, π_old is the detached π_θ of that forward, with no pass of its own; optimizer step; the
  logged metrics. Position ids come from the attention mask. GELU runs as one kernel
  (``training.fused_gelu``) while it samples and trains, as in the chapter; ``--trl-fused-gelu``
  gives TRL's policy the same activation.
* TRL: sample (``model.generate``: left-padded prompts, the same stopping), score, advantages, one
  forward and backward (its fused LM head also computes the per-token entropy). With
  ``num_iterations=1`` and one step per generation it computes no old log-probs (π_old is the
  detached π_θ) and, with β = 0, no reference pass; optimizer step; its metrics and logs. Its
  scoring forward passes no position ids, so a left-padded prompt is scored at positions shifted
  by its padding (harmless for rotary models; GPT-2's positions are learned and absolute).

Each side samples its own completions (different random streams), so a step's time moves with its
completion lengths; the medians over the steps compare the two. Losses: at μ = 1 the ratio is 1 and
the loss is minus the mean advantage, ≈ 0 on both sides, so the check compares gradients instead:
one batch that ours sampled, fed to both losses (same weights, completions and advantages), its
gradients compared by the relative norm of their difference: on problems whose prompts are equally
long (no prompt padding), on mixed lengths, and on mixed lengths with TRL's model given the
positions ours uses, which shows where a difference comes from. TRL's advantages of its last batch
are also checked against ``grpo.group_advantages`` of its rewards. Peak memory as above (the
reference copy ours keeps is made before the measured steps).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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

from rlhf_mini import grpo, verifiers, zoo  # noqa: E402
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
from rlhf_mini.grpo import GroupBatch, group_advantages, policy_gradient_loss, train_grpo  # noqa: E402
from rlhf_mini.logprobs import token_logprobs  # noqa: E402
from rlhf_mini.losses import bradley_terry_loss  # noqa: E402
from rlhf_mini.models import (  # noqa: E402
    ScalarHeadModel,
    disable_dropout,
    position_ids_from_mask,
    reference_copy,
)
from rlhf_mini.reward import RewardConfig, _scores  # noqa: E402
from rlhf_mini.training import batch_indices, fused_gelu, optimizer_step  # noqa: E402
from rlhf_mini.worlds import get_world  # noqa: E402
from rlhf_mini.zoo import grpo as grpo_zoo  # noqa: E402

TASKS = ("dpo", "reward", "grpo")
SIDES = {"dpo": ("ours", "trl", "ours+ref", "trl+ref"), "reward": ("ours", "trl"), "grpo": ("ours", "trl")}
FIRST_STEP_RTOL, LATER_STEPS_RTOL = 1e-5, 1e-3
GRAD_RTOL = 1e-4
"""GRPO: the two gradients of one batch agree to this (relative norm of their difference)"""


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
        # train_dpo's `with fused_gelu(policy):`, for the whole run. The context managers are kept:
        # one that is garbage-collected closes its generator, which puts the old activation back.
        self._gelu = [fused_gelu(model) for model in (self.policy, self.ref)]
        for context in self._gelu:
            context.__enter__()
        assert_fused(self.policy, self.ref)

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


def assert_fused(*models: torch.nn.Module) -> None:
    """The models run ``training.fused_gelu``'s one-kernel activation (not GPT-2's seven operations)."""
    from transformers.activations import NewGELUActivation

    unfused = [m for model in models for m in model.modules() if type(m) is NewGELUActivation]
    if unfused:
        raise RuntimeError(f"{len(unfused)} GELU module(s) were not swapped by fused_gelu")


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
        self._gelu = fused_gelu(self.model)  # train_reward_model's `with fused_gelu(model):`, kept for the run
        self._gelu.__enter__()
        assert_fused(self.model)

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
# GRPO
# --------------------------------------------------------------------------------------------


class GRPOSetup:
    """Chapter 13's starting policy (the zoo's arithmetic SFT model) and its tokenizer, a pool of
    arithmetic problems, the exact-match verifier, and the chapter's ``GRPOConfig`` cut to a short
    run: G completions of each of ``prompts_per_step`` problems, one update per batch (μ = 1), β = 0."""

    def __init__(self, num_generations: int, prompts_per_step: int, n_prompts: int = 256, log_kl: bool = True):
        self.profile = get_profile("cpu")
        self.policy, self.tokenizer = grpo_zoo.start_policy(self.profile)
        disable_dropout(self.policy).eval()
        self.world = get_world("arithmetic")
        self.prompts = self.world.prompts(n_prompts, seed=0)
        self.index = {p: i for i, p in enumerate(self.prompts)}
        self.config = grpo_zoo.grpo_config(self.profile, "grpo", num_generations=num_generations,
                                           prompts_per_step=prompts_per_step, num_iterations=1, beta=0.0,
                                           temperature=1.0, log_kl=log_kl)

    def text_dataset(self):
        from datasets import Dataset
        return Dataset.from_list([{"prompt": self.world.format_prompt(p), "problem": p} for p in self.prompts])


def exact_match_reward(prompts: list[str], completions: list[str], problem: list[str], **kwargs) -> list[float]:
    """``verifiers.exact_match`` as a TRL reward function: TRL passes the dataset's other columns
    (here the raw ``problem``) as keyword arguments."""
    return verifiers.exact_match(problem, completions)


class _TimedSampling:
    """Inside it, ``grpo.generate`` (the sampling loop ``sample_groups`` calls) records the prompts
    and seconds of each call: the prompts go to TRL's step, the seconds split our step's time."""

    def __init__(self):
        self.calls: list[tuple[list[str], float]] = []

    def __enter__(self):
        self._generate = grpo.generate

        def timed(model, tokenizer, prompts, **kw):
            t0 = time.perf_counter()
            out = self._generate(model, tokenizer, prompts, **kw)
            self.calls.append((list(prompts), time.perf_counter() - t0))
            return out

        grpo.generate = timed
        return self

    def __exit__(self, *exc):
        grpo.generate = self._generate


class TRLGRPOSide(TRLSide):
    """``GRPOTrainer`` a step at a time: ``training_step`` on the step's G × prompts rows (each
    problem G times, as its ``RepeatSampler`` lays them out) samples, scores, computes the
    advantages and the loss, and backpropagates; then clipping and the optimizer, as ``TRLSide``."""

    def __init__(self, trainer, steps: int, num_generations: int):
        super().__init__(trainer, steps)
        self.num_generations = num_generations
        self.sample_s: list[float] = []
        generate = trainer._generate_single_turn

        def timed(*a, **kw):
            t0 = time.perf_counter()
            out = generate(*a, **kw)
            self.sample_s.append(time.perf_counter() - t0)
            return out

        trainer._generate_single_turn = timed

    def step(self, rows: list[int]) -> float:
        t = self.trainer
        examples = [t.train_dataset[i] for i in rows for _ in range(self.num_generations)]
        loss = t.training_step(self.model, examples, None)
        t._get_grad_norm(self.model, grad_norm=t._clip_grad_norm(self.model))
        t.optimizer.step()
        t.lr_scheduler.step()
        self.model.zero_grad()
        t.state.global_step += 1
        return float(loss)


def trl_grpo(gs: GRPOSetup, steps: int, out: str, same_activation: bool = False) -> TRLGRPOSide:
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer
    c = gs.config
    args = _trl_args(TRLGRPOConfig, out, per_device_train_batch_size=c.num_generations * c.prompts_per_step,
                     num_generations=c.num_generations, max_completion_length=c.max_completion_length,
                     temperature=c.temperature, top_p=1.0, top_k=0, num_iterations=c.num_iterations, beta=c.beta,
                     epsilon=c.epsilon, loss_type=c.loss_type, scale_rewards=c.scale_rewards,
                     learning_rate=c.learning_rate, max_grad_norm=c.max_grad_norm, disable_dropout=True,
                     log_completions=False)
    policy = copy.deepcopy(gs.policy).train()
    t0 = time.perf_counter()
    trainer = GRPOTrainer(model=policy, reward_funcs=exact_match_reward, args=args, train_dataset=gs.text_dataset(),
                          processing_class=copy.deepcopy(gs.tokenizer))
    side = TRLGRPOSide(trainer, steps, c.num_generations)
    side.setup_s = time.perf_counter() - t0
    if same_activation:  # --trl-fused-gelu: TRL's policy with ours' one-kernel GELU, sampling and training
        side._gelu = fused_gelu(trainer.model)
        side._gelu.__enter__()
        assert_fused(trainer.model)
    return side


def _trl_grpo_inputs(b: GroupBatch, advantages: torch.Tensor, pad_id: int) -> dict:
    """Our sampled batch (prompt and completion in one left-padded row) in ``GRPOTrainer``'s
    layout: prompts left-padded, completions right-padded, as ``_generate_and_score_completions`` returns."""
    from trl.trainer.utils import pad
    prompts, completions = [], []
    for ids, attn, comp in zip(b.input_ids, b.attention_mask.bool(), b.completion_mask.bool()):
        prompts.append(ids[attn & ~comp])
        completions.append(ids[comp])
    completion_mask = pad([torch.ones_like(r) for r in completions], padding_value=0, padding_side="right")
    return {"prompt_ids": pad(prompts, padding_value=pad_id, padding_side="left"),
            "prompt_mask": pad([torch.ones_like(r) for r in prompts], padding_value=0, padding_side="left"),
            "completion_ids": pad(completions, padding_value=pad_id, padding_side="right"),
            "completion_mask": completion_mask, "advantages": advantages,
            "num_items_in_batch": completion_mask.sum()}


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for _, p in sorted(model.named_parameters()) if p.grad is not None])


def grpo_same_batch(gs: GRPOSetup, trainer, prompts: list[str], positions_from_mask: bool = False) -> dict:
    """Both losses on one batch that ours sampled (same weights, same completions, same advantages):
    the loss values, the relative difference of the two gradients, and the largest difference of
    the completion tokens' log-probs. ``positions_from_mask`` gives TRL's model the position ids
    that ours uses (cumsum of the attention mask), for this check only."""
    c = gs.config
    policy = copy.deepcopy(gs.policy)
    b = grpo.sample_groups(policy, gs.tokenizer, gs.world, prompts, verifiers.exact_match, c, seed=1)
    advantages = group_advantages(b.rewards, c.num_generations, c.scale_rewards)
    mask = b.completion_mask.bool()
    policy.train()
    scoring = dict(temperature=c.temperature, response_mask=mask, length_buckets=c.length_buckets)  # as train_grpo
    with torch.no_grad():
        old = token_logprobs(policy, b.input_ids, b.attention_mask, **scoring)
    logps = token_logprobs(policy, b.input_ids, b.attention_mask, **scoring)
    loss = policy_gradient_loss(logps, old, advantages, mask, beta=0.0, eps_low=c.epsilon, eps_high=c.epsilon,
                                loss_type=c.loss_type)
    loss.backward()
    ours_grad = _flat_grad(policy)

    model = trainer.model
    model.zero_grad(set_to_none=True)
    inputs = _trl_grpo_inputs(b, advantages, gs.tokenizer.pad_token_id)
    backbone = model.base_model
    if positions_from_mask:
        forward = backbone.forward

        def with_positions(*a, attention_mask=None, position_ids=None, **kw):
            if position_ids is None and attention_mask is not None:
                position_ids = position_ids_from_mask(attention_mask)
            return forward(*a, attention_mask=attention_mask, position_ids=position_ids, **kw)

        backbone.forward = with_positions
    try:
        trl_loss = trainer.compute_loss(model, inputs)
        trl_loss.backward()
        trl_grad = _flat_grad(model)
        with torch.no_grad():
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
            attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
            trl_logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attn,
                                                                         inputs["completion_ids"].shape[1])
    finally:
        model.zero_grad(set_to_none=True)
        if positions_from_mask:
            del backbone.forward
    dlogp = (logps.detach()[mask] - trl_logps[inputs["completion_mask"].bool()]).abs().max()
    return {"loss": (float(loss.detach()), float(trl_loss.detach())),
            "grad_rel": float((ours_grad - trl_grad).norm() / trl_grad.norm()), "dlogp": float(dlogp),
            "prompt_lengths": sorted({int(n) for n in (b.attention_mask.sum(1) - b.completion_mask.sum(1)).tolist()})}


def _same_length_prompts(gs: GRPOSetup, n: int) -> tuple[list[str], list[str]]:
    """``n`` problems whose prompts are all as long (the commonest length), and the first ``n`` of the pool."""
    lengths = [len(gs.tokenizer(gs.world.format_prompt(p), add_special_tokens=False)["input_ids"]) for p in gs.prompts]
    common = max(set(lengths), key=lengths.count)
    return [p for p, n_tok in zip(gs.prompts, lengths) if n_tok == common][:n], gs.prompts[:n]


def run_grpo(gs: GRPOSetup, warmup: int, steps: int, out: str, same_activation: bool = False) -> dict:
    """``train_grpo`` itself for ``warmup + steps`` steps; after each of its steps (its ``eval_fn``
    hook) TRL takes its step on the same problems, so the two alternate step by step."""
    trl = trl_grpo(gs, warmup + steps, os.path.join(out, "grpo-trl"), same_activation)
    c, g = gs.config, gs.config.num_generations
    same, mixed = _same_length_prompts(gs, c.prompts_per_step)
    checks = {"same length": grpo_same_batch(gs, trl.trainer, same),
              "mixed lengths": grpo_same_batch(gs, trl.trainer, mixed),
              "mixed lengths, TRL given positions from the mask": grpo_same_batch(gs, trl.trainer, mixed, True)}
    policy = copy.deepcopy(gs.policy)
    ref = reference_copy(policy)  # train_grpo's default reference, made here to keep it out of step 1
    times: dict[str, list[float]] = {"ours": [], "trl": []}
    losses: dict[str, list[float]] = {"ours": [], "trl": []}
    trl_stats: list[dict] = []
    same_prompts = True
    mark = [0.0]

    def after_our_step(_policy) -> dict:
        times["ours"].append(time.perf_counter() - mark[0])
        problems = sampling.calls[-1][0][::g]
        rows = [gs.index[p] for p in problems]
        nonlocal same_prompts
        same_prompts &= [gs.prompts[i] for i in rows for _ in range(g)] == sampling.calls[-1][0]
        t0 = time.perf_counter()
        losses["trl"].append(trl.step(rows))
        times["trl"].append(time.perf_counter() - t0)
        m = trl.trainer._metrics["train"]
        trl_stats.append({"reward": m["reward"][-1], "completion_length": m["completions/mean_length"][-1]})
        mark[0] = time.perf_counter()
        return {}

    with _TimedSampling() as sampling:
        mark[0] = time.perf_counter()
        _, metrics = train_grpo(dataclasses.replace(c, max_steps=warmup + steps), policy, gs.tokenizer, gs.world, gs.prompts, verifiers.exact_match,
                                ref_policy=ref, eval_fn=after_our_step, eval_every=1, progress=False)
    losses["ours"] = [m["loss"] for m in metrics]
    logs = trl.trainer._logs  # the last step's rewards and advantages, as TRL computed them
    rewards = torch.tensor(list(logs["rewards"]["exact_match_reward"]))
    adv_diff = float((group_advantages(rewards, g, c.scale_rewards) - torch.tensor(list(logs["advantages"]))).abs().max())
    timed = slice(warmup, None)
    return {"times": {k: v[timed] for k, v in times.items()}, "losses": losses,
            "sample_s": {"ours": [s for _, s in sampling.calls][timed], "trl": trl.sample_s[timed]},
            "reward": {"ours": [m["reward"] for m in metrics][timed], "trl": [r["reward"] for r in trl_stats][timed]},
            "length": {"ours": [m["completion_length"] for m in metrics][timed],
                       "trl": [r["completion_length"] for r in trl_stats][timed]},
            "checks": checks, "advantage_diff": adv_diff, "same_prompts": same_prompts,
            "setup_s": {"trl": trl.setup_s}}


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


def memory_worker(task: str, side: str, args, steps: int) -> dict:
    if task == "grpo":
        return grpo_memory_worker(side, args, steps)
    s = Setup(args.pairs, args.batch_size)
    with tempfile.TemporaryDirectory() as out:
        trainer = build(task, side, s, steps, out, {}, args.trl_fused_gelu)
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        before = _rss_kib("VmRSS")
        for step in range(steps):
            trainer.step(s.indices(step))
        peak = _rss_kib("VmHWM")
    return {"peak_mib": (peak - before) / 1024}


def grpo_memory_worker(side: str, args, steps: int) -> dict:
    gs = GRPOSetup(args.num_generations, args.prompts_per_step, log_kl=not args.no_kl_log)
    c = dataclasses.replace(gs.config, max_steps=steps)
    with tempfile.TemporaryDirectory() as out:
        if side == "ours":
            policy = copy.deepcopy(gs.policy)
            ref = reference_copy(policy)
        else:
            trl = trl_grpo(gs, steps, out, args.trl_fused_gelu)
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        before = _rss_kib("VmRSS")
        if side == "ours":
            train_grpo(c, policy, gs.tokenizer, gs.world, gs.prompts, verifiers.exact_match, ref_policy=ref,
                       progress=False)
        else:
            for step in range(steps):
                rng, _ = grpo._rng_for(c.seed, step * 1000)  # the problems draw_step_batch picks
                trl.step([int(i) for i in rng.choice(len(gs.prompts), size=c.prompts_per_step)])
        peak = _rss_kib("VmHWM")
    return {"peak_mib": (peak - before) / 1024}


def measure_memory(task: str, side: str, args) -> float | None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    cmd = [sys.executable, __file__, "--memory-worker", task, side, "--pairs", str(args.pairs),
           "--batch-size", str(args.batch_size), "--threads", str(torch.get_num_threads()),
           "--num-generations", str(args.num_generations), "--prompts-per-step", str(args.prompts_per_step)]
    cmd += ["--trl-fused-gelu"] if args.trl_fused_gelu else []
    cmd += ["--no-kl-log"] if args.no_kl_log else []
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


def report_grpo(result: dict, memory: dict, log_kl: bool = True) -> tuple[list[str], list[str]]:
    t = result["times"]
    ratios = [a / b for a, b in zip(t["ours"], t["trl"])]
    same = result["checks"]["same length"]
    ok = same["grad_rel"] <= GRAD_RTOL
    mem = (f"{memory['ours']:8.1f} {memory['trl']:8.1f}" if memory.get("ours") is not None
           and memory.get("trl") is not None else f"{'-':>8} {'-':>8}")
    what = "sample G, verify, 1 update, " + ("KL logged" if log_kl else "no KL pass")
    line = (f"{'grpo':<7}{what:<48}{1e3 * statistics.median(t['ours']):9.1f} "
            f"{1e3 * statistics.median(t['trl']):9.1f} {statistics.median(ratios):7.2f}   {mem}   "
            f"{'yes' if ok else 'NO'} ({same['grad_rel']:.1e}, gradients of one batch of equal-length prompts)")

    def med(side: str, key: str) -> float:
        return statistics.median(result[key][side])

    rest = {side: statistics.median([a - b for a, b in zip(t[side], result["sample_s"][side])]) for side in t}
    notes = [
        f"grpo: of each step, sampling (median ms): ours {1e3 * med('ours', 'sample_s'):.1f}, "
        f"TRL {1e3 * med('trl', 'sample_s'):.1f}; the rest (scoring, log-probs, backward, optimizer, "
        f"metrics): ours {1e3 * rest['ours']:.1f}, TRL {1e3 * rest['trl']:.1f}",
        f"grpo: timed steps' mean reward ours {statistics.mean(result['reward']['ours']):.3f}, "
        f"TRL {statistics.mean(result['reward']['trl']):.3f}; completion tokens per row "
        f"ours {statistics.mean(result['length']['ours']):.1f}, TRL {statistics.mean(result['length']['trl']):.1f} "
        "(each side samples its own completions)",
        f"grpo: same problems each step: {'yes' if result['same_prompts'] else 'NO'}; TRL's advantages of its "
        f"last batch against group_advantages of its rewards: max |diff| {result['advantage_diff']:.1e}; "
        f"TRL set-up {result['setup_s']['trl']:.2f} s",
    ]
    for name, c in result["checks"].items():
        notes.append(f"grpo: one batch ours sampled, {name} (prompt tokens {c['prompt_lengths']}): loss ours "
                     f"{c['loss'][0]:.2e}, TRL {c['loss'][1]:.2e}; gradients differ by {c['grad_rel']:.1e} "
                     f"(relative); completion log-probs by at most {c['dlogp']:.1e} nats")
    return [line], notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (their losses are checked)")
    parser.add_argument("--pairs", type=int, default=512, help="preference pairs in the training set")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the cpu profile's)")
    parser.add_argument("--grpo-steps", type=int, default=10, help="GRPO: timed steps per side")
    parser.add_argument("--grpo-warmup", type=int, default=2, help="GRPO: untimed steps first")
    parser.add_argument("--num-generations", type=int, default=8, help="GRPO: G, completions per problem")
    parser.add_argument("--prompts-per-step", type=int, default=8, help="GRPO: problems per step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--trl-fused-gelu", action="store_true",
                        help="give TRL's models ours' one-kernel GELU too (training.fused_gelu)")
    parser.add_argument("--no-kl-log", action="store_true",
                        help="GRPO: ours skips the reference pass that logs the KL at β = 0 (GRPOConfig.log_kl), "
                             "as TRL does: the same work on both sides")
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch_size = args.batch_size or get_profile("cpu").batch_size
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # TRL calls renamed APIs
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    try:
        from datasets.utils.logging import disable_progress_bar
        disable_progress_bar()
    except ImportError:
        pass

    if args.memory_worker:
        task, side = args.memory_worker
        print(json.dumps(memory_worker(task, side, args, 4)))
        return
    if importlib.util.find_spec("trl") is None:
        sys.exit("TRL is not installed: pip install -e '.[bench]' (or pip install -c constraints.txt trl)")
    import transformers
    import trl

    s = Setup(args.pairs, args.batch_size) if set(args.tasks) - {"grpo"} else None
    gs = GRPOSetup(args.num_generations, args.prompts_per_step, log_kl=not args.no_kl_log) if "grpo" in args.tasks else None
    check_steps = min(5, args.warmup + args.steps)
    lines, notes = [], []
    with tempfile.TemporaryDirectory() as out:
        for task in args.tasks:
            if task == "grpo":
                print(f"grpo: {args.grpo_warmup} warm-up + {args.grpo_steps} timed steps per side, alternating ...",
                      flush=True)
                result = run_grpo(gs, args.grpo_warmup, args.grpo_steps, out, args.trl_fused_gelu)
                memory = {} if args.no_memory else {side: measure_memory(task, side, args) for side in SIDES[task]}
                more_lines, more_notes = report_grpo(result, memory, gs.config.log_kl)
                lines += more_lines
                notes += more_notes
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
          f"CPU, {torch.get_num_threads()} threads")
    if s is not None:
        print(f"DPO, reward model: cpu-profile GPT-2 ({s.base.config.n_layer} layers, {s.base.config.n_embd} wide, "
              f"vocabulary {s.base.config.vocab_size}); {args.batch_size} pairs per step ({2 * args.batch_size} rows)")
    if gs is not None:
        cfg = gs.policy.config
        print(f"GRPO: chapter 13's start policy ({cfg.n_layer} layers, {cfg.n_embd} wide, vocabulary "
              f"{cfg.vocab_size}); {args.prompts_per_step} problems × G = {args.num_generations} "
              f"({args.prompts_per_step * args.num_generations} completions of up to "
              f"{gs.config.max_completion_length} tokens) per step, temperature {gs.config.temperature}, "
              f"learning rate {gs.config.learning_rate:g}")
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

"""Direct Preference Optimisation (DPO): RLHF's objective without the RL (Rafailov et al. 2023).

The KL-regularised objective of RLHF,

    max_π  E_{x, y~π}[r(x, y)] − β KL(π(·|x) ‖ π_ref(·|x)),

has the closed-form optimum π*(y|x) = π_ref(y|x) exp(r(x, y)/β) / Z(x). Inverting it, every reward
is r(x, y) = β log π*(y|x)/π_ref(y|x) + β log Z(x), and the intractable Z(x) cancels in the
Bradley–Terry probability of a comparison, which depends on reward differences only. Fitting the
*policy* by maximum likelihood on the preferences (y_c ≻ y_r) gives the DPO loss (eq. 7):

    L(θ) = −E log σ( β [log π_θ(y_c|x)/π_ref(y_c|x) − log π_θ(y_r|x)/π_ref(y_r|x)] )

``losses.dpo_loss`` computes it (and the IPO and hinge variants); this file is the training loop:

* the reference log-probabilities log π_ref(y|x) are computed ONCE over the whole dataset before
  training (π_ref is frozen, so recomputing them each step would only cost time); they are kept in
  ``DPOResult.ref_logps`` and in every checkpoint;
* each step pads a minibatch of (prompt, chosen) and (prompt, rejected) rows (the pairs are
  tokenized once, before the first step), sums the policy's log-probs over the response tokens
  (EOS included) with ``logprobs.sequence_logprobs``; for IPO the sums are divided by the number of
  response tokens (length-averaged, as the IPO authors do);
* for speed, with the same numbers up to float rounding, a step runs rows of similar length
  together (``training.by_length``: most of the padding is never computed) and GPT-2's activation
  as one kernel (``training.fused_gelu``);
* the implicit rewards β log π_θ/π_ref are logged with TRL's names: ``rewards/chosen``,
  ``rewards/rejected``, ``rewards/accuracies`` (fraction with chosen > rejected), ``rewards/margins``,
  and ``logps/chosen``, ``logps/rejected`` (the policy's summed log-probs);
* dropout is off (``models.make_config`` builds the course's models without it, and ``train_dpo``
  switches it off in a loaded model): at step 0, with π_θ = π_ref, every per-pair loss is then
  exactly ln 2.

Nothing in the loss stops the chosen log-prob from falling: only the *difference* of log-ratios is
pushed up, and with two similar answers the cheapest way is often to push both down, the rejected
one faster. ``rewards/chosen`` below zero with growing ``rewards/margins`` is the symptom.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf_mini import distributed
from rlhf_mini.batch import (
    TokenBatch,
    check_tokenizer,
    collate_preferences,
    encode_pairs,
    tokenize_preferences,
)
from rlhf_mini.config import Profile
from rlhf_mini.data import check_pairs
from rlhf_mini.logprobs import sequence_logprobs
from rlhf_mini.losses import DPO_LOSS_TYPES, dpo_loss
from rlhf_mini.models import disable_dropout
from rlhf_mini.sampling import generate
from rlhf_mini.training import (
    batch_indices,
    by_length,
    fused_gelu,
    load_checkpoint,
    lr_at,
    optimizer_step,
    save_checkpoint,
)


@dataclass
class DPOConfig:
    """Direct preference optimisation on (prompt, chosen, rejected) triples."""

    beta: float = 0.5
    """β: the KL strength. 0.1 (the paper's default) over-optimises this small model (KL of tens of
    nats, word salad); 0.5 keeps it near the reference and still learns the preferences"""
    loss_type: str = "sigmoid"
    """``sigmoid`` (DPO), ``ipo`` (squared loss on length-averaged log-ratios) or ``hinge`` (SLiC)"""
    label_smoothing: float = 0.0
    """ε of conservative DPO: labels are assumed flipped with probability ε (sigmoid only)"""
    learning_rate: float = 1e-4
    """peak AdamW learning rate. On the assistant world's on-policy pairs, 3e-4 over-optimises by
    150 steps (garbled sentences rise, the gold win rate over SFT fell to 0.56); 1e-4 gave 0.62, 0.65
    and 0.65 on seeds 0-2 after one round, 0.71, 0.82 and 0.84 after two (``dpo_policy(seed=...)``)"""
    max_steps: int = 150
    """optimizer steps (one minibatch each)"""
    batch_size: int = 32
    """preference pairs per minibatch"""
    warmup_steps: int = 10
    """steps of linear learning-rate warm-up from 0, then constant (as in the DPO paper)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """clip the global gradient norm to this value"""
    max_length: int = 128
    """longest prompt + response in tokens (the prompt is cut from the left first)"""
    ref_batch_size: int = 128
    """pairs per forward pass when precomputing the reference log-probs"""
    seed: int = 0
    """seeds the minibatch order"""

    @classmethod
    def from_profile(cls, profile: Profile, **changes: Any) -> DPOConfig:
        """Steps, batch size and context length read from the profile; any field overridable.

        ``learning_rate``, the default or an override, is a rate for the cpu profile's models and is
        multiplied by ``profile.lr_scale`` (1 there, 0.2 at GPT-2-small width).
        """
        values = {"max_steps": profile.dpo_steps, "batch_size": profile.batch_size, "max_length": profile.n_ctx}
        values.update(changes)
        values["learning_rate"] = values.get("learning_rate", cls.learning_rate) * profile.lr_scale
        return cls(**values)

    def __post_init__(self) -> None:
        if self.loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; expected one of {', '.join(DPO_LOSS_TYPES)}")
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing <= 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5], got {self.label_smoothing}")
        if self.label_smoothing > 0 and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing applies only to loss_type='sigmoid'")
        if self.max_steps < 1 or self.batch_size < 1 or self.ref_batch_size < 1:
            raise ValueError("max_steps, batch_size and ref_batch_size must be >= 1")


@dataclass
class DPOResult:
    policy: Any
    """the trained policy (trained in place)"""
    metrics: list[dict[str, Any]]
    """one dict per step (TRL names), so ``pandas.DataFrame(metrics)`` plots"""
    ref_logps: dict[str, torch.Tensor] = field(default_factory=dict)
    """``chosen``/``rejected``: [N] summed reference log-probs; ``chosen_tokens``/``rejected_tokens``: [N]"""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def encode_preference_batch(tokenizer: PreTrainedTokenizerBase, world, pairs: list[dict[str, str]],
                            max_length: int) -> TokenBatch:
    """One batch of 2B rows: the B (prompt, chosen) rows, then the B (prompt, rejected) rows."""
    prompts = [world.format_prompt(p["prompt"]) for p in pairs]
    responses = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    return encode_pairs(tokenizer, prompts + prompts, responses, max_length, add_eos=True)


def tokenize_preference_pairs(tokenizer: PreTrainedTokenizerBase, world, pairs: list[dict[str, str]]
                              ) -> dict[str, list[list[int]]]:
    """The token ids of every pair, once for the data set; ``collate_preferences`` then builds the
    batch ``encode_preference_batch`` would."""
    return tokenize_preferences(tokenizer, [world.format_prompt(p["prompt"]) for p in pairs],
                                [p["chosen"] for p in pairs], [p["rejected"] for p in pairs])


def _logps(model, batch: TokenBatch, by_rows_of_similar_length: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs [2B] and the number of response tokens [2B]."""
    args = batch.input_ids, batch.attention_mask, batch.response_mask
    if by_rows_of_similar_length:  # each group without most of the batch's padding: a faster step
        summed = by_length(lambda *group: sequence_logprobs(model, *group), *args)
    else:
        summed = sequence_logprobs(model, *args)
    return summed, batch.response_mask.sum(1).to(summed.dtype)


@torch.no_grad()
def precompute_ref_logps(ref_policy, tokenizer, world, pairs: list[dict[str, str]], max_length: int,
                         batch_size: int = 128, progress: bool = True) -> dict[str, torch.Tensor]:
    """log π_ref of every chosen and rejected response in the dataset, in one pass."""
    device = next(ref_policy.parameters()).device
    was_training = ref_policy.training
    ref_policy.eval()
    out: dict[str, list[torch.Tensor]] = {"chosen": [], "rejected": [], "chosen_tokens": [], "rejected_tokens": []}
    starts = range(0, len(pairs), batch_size)
    ids = tokenize_preference_pairs(tokenizer, world, pairs)
    with fused_gelu(ref_policy):
        for start in tqdm(starts, desc="reference log-probs", disable=not progress, leave=False):
            chunk = list(range(start, min(start + batch_size, len(pairs))))
            batch = collate_preferences(ids, chunk, max_length, tokenizer.pad_token_id)
            summed, tokens = _logps(ref_policy, batch.to(device), by_rows_of_similar_length=False)  # one pass
            b = len(chunk)
            out["chosen"].append(summed[:b].float().cpu())
            out["rejected"].append(summed[b:].float().cpu())
            out["chosen_tokens"].append(tokens[:b].float().cpu())
            out["rejected_tokens"].append(tokens[b:].float().cpu())
    ref_policy.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# One step's loss and statistics
# --------------------------------------------------------------------------------------------


def dpo_batch_loss(config: DPOConfig, policy, batch: TokenBatch, ref: dict[str, torch.Tensor],
                   logps: Callable[[TokenBatch], tuple[torch.Tensor, torch.Tensor]] | None = None,
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean DPO loss of one batch and its TRL-named statistics.

    ``ref`` holds this batch's precomputed ``chosen``, ``rejected`` (and token counts), ``[B]`` each.
    ``logps``, when given, computes the policy's summed log-probs and token counts of the batch in
    place of ``policy`` (under torchrun, the DistributedDataParallel wrapper of the same function).
    """
    summed, tokens = logps(batch) if logps is not None else _logps(policy, batch)
    b = summed.shape[0] // 2
    device = summed.device
    policy_c, policy_r = summed[:b], summed[b:]
    ref_c, ref_r = ref["chosen"].to(device), ref["rejected"].to(device)
    if config.loss_type == "ipo":  # IPO works on per-token (length-averaged) log-probs
        policy_c, policy_r = policy_c / tokens[:b], policy_r / tokens[b:]
        ref_c, ref_r = ref_c / ref["chosen_tokens"].to(device), ref_r / ref["rejected_tokens"].to(device)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_c, policy_r, ref_c, ref_r, beta=config.beta, loss_type=config.loss_type,
        label_smoothing=config.label_smoothing)
    loss = losses.mean()
    stats = {
        "loss": float(loss.detach()),
        "rewards/chosen": float(chosen_rewards.mean()),
        "rewards/rejected": float(rejected_rewards.mean()),
        "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
        "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
        "logps/chosen": float(summed[:b].detach().mean()),
        "logps/rejected": float(summed[b:].detach().mean()),
    }
    return loss, stats


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


def train_dpo(config: DPOConfig, policy, ref_policy, tokenizer: PreTrainedTokenizerBase, pairs: Any, world, *,
              checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
              resume_from: str | Path | None = None, ref_logps: dict[str, torch.Tensor] | None = None,
              progress: bool = True) -> DPOResult:
    """Train ``policy`` with the DPO loss on ``pairs`` (raw prompts; ``world.format_prompt`` is applied).

    ``ref_policy`` is only used once, before the first step, to precompute the reference log-probs
    (a resumed run reads them from the checkpoint instead; runs that share a reference and a dataset,
    such as a β sweep, can pass the ``ref_logps`` of an earlier ``DPOResult``). Returns the policy
    (trained in place), the per-step metrics and the reference log-probs.
    """
    pairs = check_pairs(pairs)
    check_tokenizer(tokenizer)
    if policy is ref_policy:
        raise ValueError("policy and ref_policy are the same object: pass models.reference_copy(policy)")
    device = next(policy.parameters()).device
    disable_dropout(policy)  # with dropout on, the step-0 loss would not be ln 2 (π_θ = π_ref in eval mode)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start, metrics = 0, []
    if resume_from is not None:
        state = load_checkpoint(resume_from, {"": policy}, optimizer)
        start, metrics, ref_logps = state["step"], list(state["metrics"]), state["ref_logps"]
        if ref_logps["chosen"].shape[0] != len(pairs):
            raise ValueError(f"{resume_from}: the checkpoint's reference log-probs cover "
                             f"{ref_logps['chosen'].shape[0]} pairs, but {len(pairs)} pairs were given")
    elif ref_logps is not None:
        if set(ref_logps) != {"chosen", "rejected", "chosen_tokens", "rejected_tokens"} or \
                any(v.shape != (len(pairs),) for v in ref_logps.values()):
            raise ValueError(f"ref_logps must hold 'chosen', 'rejected', 'chosen_tokens', 'rejected_tokens' "
                             f"of shape ({len(pairs)},), one entry per pair")
    else:
        ref_logps = precompute_ref_logps(ref_policy, tokenizer, world, pairs, config.max_length,
                                         config.ref_batch_size, progress)
    policy.train()
    logps = distributed.wrap(policy, _logps)  # DDP under torchrun: each rank its shard, gradients averaged
    ids = tokenize_preference_pairs(tokenizer, world, pairs)  # once; each step only pads its rows
    with fused_gelu(policy):  # the same model, its activation in one kernel while it trains
        t0 = time.perf_counter()
        bar = tqdm(range(start, config.max_steps), desc=f"DPO ({config.loss_type}, β={config.beta})",
                   disable=not progress or not distributed.is_main(), leave=False)
        for step in bar:
            idx = distributed.shard(batch_indices(step, len(pairs), config.batch_size, config.seed))
            batch = collate_preferences(ids, idx, config.max_length, tokenizer.pad_token_id).to(device)
            ref = {k: v[torch.as_tensor(idx)] for k, v in ref_logps.items()}
            # linear warm-up, then constant (as in the DPO paper)
            lr = lr_at(step, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                       max_steps=config.max_steps, schedule="constant")
            loss, stats = dpo_batch_loss(config, policy, batch, ref, logps)
            stats = {k: distributed.mean(v) for k, v in stats.items()}  # over the ranks' shards
            grad_norm = optimizer_step(optimizer, loss, policy.parameters(), config.max_grad_norm, lr)
            metrics.append({"step": step + 1, **stats, "lr": lr, "grad_norm": float(grad_norm),
                            "epoch": (step + 1) * config.batch_size / len(pairs),
                            "elapsed": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['rewards/accuracies']:.2f}")
            if (checkpoint_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0
                    and distributed.is_main()):
                save_checkpoint(Path(checkpoint_dir) / f"step-{step + 1}", {"": policy},
                                {"step": step + 1, "metrics": metrics, "config": asdict(config), "ref_logps": ref_logps},
                                optimizer=optimizer, tokenizer=tokenizer)
    policy.eval()
    return DPOResult(policy, metrics, ref_logps)


# --------------------------------------------------------------------------------------------
# On-policy pairs: the data of the DPO paper's experiments
# --------------------------------------------------------------------------------------------


def on_policy_pairs(policy, tokenizer, world, prompts: list[str], *, max_new_tokens: int = 32, seed: int = 0,
                    temperature: float = 1.0, prefer: Callable[[str, str, str], bool] | None = None
                    ) -> list[dict[str, Any]]:
    """Two samples of ``policy`` per prompt, labelled by the gold reward (the higher one is chosen).

    This is the data the DPO paper's experiments use: preferences over the reference policy's own
    samples. Off-policy pairs (the shipped files) move the policy on text it would rarely write, and
    help much less here. ``label_response_pairs`` does the labelling (``prefer`` is explained there).
    """
    responses = sample_response_pairs(policy, tokenizer, world, prompts, max_new_tokens=max_new_tokens, seed=seed,
                                      temperature=temperature)
    return label_response_pairs(world, prompts, responses, prefer)


def sample_response_pairs(policy, tokenizer, world, prompts: list[str], *, max_new_tokens: int = 32, seed: int = 0,
                          temperature: float = 1.0) -> list[str]:
    """Two sampled responses of ``policy`` per prompt, in prompt order: ``[a_0, b_0, a_1, b_1, …]``."""
    formatted = [world.format_prompt(p) for p in prompts for _ in range(2)]
    return generate(policy, tokenizer, formatted, max_new_tokens=max_new_tokens, temperature=temperature,
                    batch_size=256, seed=seed, progress=False).responses


def label_response_pairs(world, prompts: list[str], responses: list[str],
                         prefer: Callable[[str, str, str], bool] | None = None) -> list[dict[str, Any]]:
    """Preference records from two responses per prompt (``responses[2i]`` and ``responses[2i + 1]``
    answer ``prompts[i]``): by default the one with the higher gold reward is chosen.

    Pairs whose two responses tie on gold (identical answers included) carry no preference and are
    dropped, so fewer than ``len(prompts)`` pairs come back. ``prefer(prompt, a, b) -> bool`` (True
    when ``a`` wins) replaces the gold labeler, e.g. an AI judge's sampled verdict (RLAIF); then only
    identical responses are dropped, and the gold values are kept in the records so that the labels
    can be checked against them.
    """
    if len(responses) != 2 * len(prompts):
        raise ValueError(f"need two responses per prompt: {len(prompts)} prompts, {len(responses)} responses")
    gold = world.gold_rewards([p for p in prompts for _ in range(2)], responses).reshape(-1, 2)
    pairs = []
    for i, prompt in enumerate(prompts):
        a, b = responses[2 * i], responses[2 * i + 1]
        if prefer is None:
            if gold[i, 0] == gold[i, 1]:
                continue
            first_wins = gold[i, 0] > gold[i, 1]
        else:
            if a == b:
                continue
            first_wins = bool(prefer(prompt, a, b))
        pairs.append({"prompt": prompt, "chosen": a if first_wins else b, "rejected": b if first_wins else a,
                      "chosen_gold": float(gold[i, 0] if first_wins else gold[i, 1]),
                      "rejected_gold": float(gold[i, 1] if first_wins else gold[i, 0])})
    return pairs

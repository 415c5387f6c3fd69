"""Reward modelling: fit a scalar score r_φ(x, y) to pairwise preferences (Bradley–Terry).

For a prompt x with a chosen response y_c and a rejected one y_r, the model of the labeler is

    P(y_c ≻ y_r | x) = σ(r_φ(x, y_c) − r_φ(x, y_r))                    (Ouyang et al. 2022, eq. 1)

and training minimises its negative log-likelihood, ``losses.bradley_terry_loss``:

    L(φ) = −E[ log σ(r_φ(x, y_c) − r_φ(x, y_r) − m) ]

with an optional margin m from the labeler's Likert strength (Llama 2, Touvron et al. 2023, eq. 2):
a "much better" pair asks for a larger gap than a "slightly better" one. ``m = margin · (4 − likert)/3``
with ``likert`` stored from the chosen side (1 = much better … 4 = slightly better), so 0 ≤ m ≤ margin.

The model is a GPT-2 body with a scalar head (``models.ScalarHeadModel``) started from the SFT
policy's body (InstructGPT's recipe); the score is read at the EOS that closes the response. Chosen
and rejected sequences go through the model in one batch of 2B rows (the pairs tokenized once,
before the first step; rows of similar length computed together, ``training.by_length``, and
GPT-2's activation run as one kernel, ``training.fused_gelu``: the same numbers, faster).

Only reward *differences* are identified by the loss, so the offset is arbitrary. As in
lm-human-preferences (Ziegler et al. 2019) the cached reward model is shifted after training so
that its scores on the SFT policy's own samples have mean 0: the head's bias absorbs the shift,
and PPO starts from rewards centred on the policy it fine-tunes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf_mini import distributed
from rlhf_mini.batch import check_tokenizer, collate_preferences, encode_pairs, tokenize_preferences
from rlhf_mini.config import Profile
from rlhf_mini.losses import bradley_terry_loss
from rlhf_mini.models import ScalarHeadModel
from rlhf_mini.sampling import generate
from rlhf_mini.scoring import score_texts
from rlhf_mini.training import (
    batch_indices,
    by_length,
    fused_gelu,
    load_checkpoint,
    lr_at,
    optimizer_step,
    save_checkpoint,
)
from rlhf_mini.worlds import get_world

LIKERT_MIDPOINT = 4


@dataclass
class RewardConfig:
    """A Bradley–Terry reward model on (prompt, chosen, rejected) pairs."""

    task: str = "assistant"
    """the world whose ``format_prompt`` turns a raw prompt into model-ready text"""
    max_steps: int = 150
    """optimizer steps (one minibatch of pairs each)"""
    batch_size: int = 32
    """pairs per minibatch (the model sees 2 × batch_size sequences)"""
    learning_rate: float = 1e-3
    """peak AdamW learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    warmup_steps: int = 10
    """steps of linear learning-rate warm-up from 0"""
    min_lr_ratio: float = 0.1
    """the cosine decay ends at ``learning_rate * min_lr_ratio``"""
    max_grad_norm: float = 1.0
    """clip the global gradient norm to this value"""
    max_length: int = 128
    """longest prompt + response in tokens"""
    margin: float = 0.0
    """Llama-2 margin for the strongest Likert rating (0 turns margins off)"""
    eval_every: int = 50
    """evaluate on the held-out pairs every this many steps (0: only at the end)"""
    seed: int = 0
    """seeds the head initialisation and the minibatch order"""

    @classmethod
    def from_profile(cls, profile: Profile, task: str = "assistant") -> RewardConfig:
        """Sizes read from a profile.

        Half of ``reward_steps`` (150 steps at batch 32 on the CPU profile, 2.4 epochs over the
        2000 shipped pairs), to fit the chapter's time budget. Longer runs help only a little:
        held-out accuracy against gold was 0.740 after 150 steps, 0.765 after 300 and 0.779 after
        600, while training accuracy rose to 0.93, i.e. the extra epochs mostly fit label noise.
        """
        return cls(task=task, max_steps=max(1, profile.reward_steps // 2), batch_size=profile.batch_size,
                   learning_rate=profile.pretrain_lr / 3, max_length=profile.n_ctx,
                   eval_every=max(1, profile.reward_steps // 6))


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def preference_records(pairs: Any) -> list[dict[str, Any]]:
    """A list of dicts from a list of dicts or a ``datasets.Dataset``; checks the columns."""
    records = []
    for i, r in enumerate(pairs):
        if not isinstance(r, dict):
            raise ValueError(f"preference pair {i}: expected a dict, got {type(r).__name__}")
        records.append(dict(r))
    if not records:
        raise ValueError("no preference pairs given: need records with 'prompt', 'chosen', 'rejected'")
    for i, r in enumerate(records):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(r.get(key), str):
                raise ValueError(f"preference pair {i}: field '{key}' is missing or not a string")
    return records


def pair_scores(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world, pairs: Any,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(chosen_scores, rejected_scores)`` for each pair."""
    records = preference_records(pairs)
    prompts = [r["prompt"] for r in records]
    chosen = score_texts(reward_model, tokenizer, world, prompts, [r["chosen"] for r in records], batch_size)
    rejected = score_texts(reward_model, tokenizer, world, prompts, [r["rejected"] for r in records], batch_size)
    return chosen, rejected


def evaluate_reward_model(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world,
                          pairs: Any) -> dict[str, float]:
    """Held-out metrics: ``accuracy`` (agrees with the recorded label), ``gold_accuracy`` (agrees
    with the gold utility, pairs with equal gold left out, when the records carry ``chosen_gold``),
    the BT ``loss`` and the mean ``margin``."""
    records = preference_records(pairs)
    c, r = pair_scores(reward_model, tokenizer, world, records)
    gap = c - r
    result = {"accuracy": float(np.mean(gap > 0)), "margin": float(np.mean(gap)),
              "loss": float(np.mean(np.logaddexp(0.0, -gap)))}
    has_gold = [x.get("chosen_gold") is not None and x.get("rejected_gold") is not None for x in records]
    if any(has_gold) and not all(has_gold):
        raise ValueError(f"preference pair {has_gold.index(False)}: no 'chosen_gold'/'rejected_gold', "
                         "while other pairs have them; gold_accuracy needs them on every pair")
    if all(has_gold):
        gold_gap = np.array([x["chosen_gold"] - x["rejected_gold"] for x in records])
        decided = gold_gap != 0
        result["gold_accuracy"] = float(np.mean((gap[decided] > 0) == (gold_gap[decided] > 0)))
    return result


def likert_margins(records: list[dict[str, Any]], margin: float) -> torch.Tensor:
    """Per-pair margins ``margin · (4 − likert) / 3`` (likert from the chosen side, 1 … 4)."""
    out = []
    for i, r in enumerate(records):
        likert = r.get("likert")
        if not isinstance(likert, int) or not 1 <= likert <= LIKERT_MIDPOINT:
            raise ValueError(f"preference pair {i}: a margin needs 'likert' in 1..4 (from the chosen side), "
                             f"got {likert!r}")
        out.append(margin * (LIKERT_MIDPOINT - likert) / (LIKERT_MIDPOINT - 1))
    return torch.tensor(out)


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


def _scores(model: ScalarHeadModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``model.score`` of every row, rows of similar length together (``training.by_length``)."""
    return by_length(model.score, input_ids, attention_mask)


def _lr(step: int, config: RewardConfig) -> float:
    return lr_at(step, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                 max_steps=config.max_steps, min_lr_ratio=config.min_lr_ratio)


def train_reward_model(config: RewardConfig, model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase,
                       pairs: Any, *, eval_pairs: Any = None, checkpoint_dir: str | Path | None = None,
                       checkpoint_every: int = 0, resume_from: str | Path | None = None,
                       progress: bool = True) -> tuple[ScalarHeadModel, list[dict[str, Any]]]:
    """Fit ``model`` to ``pairs`` (records or a Dataset with raw ``prompt``, ``chosen``, ``rejected``).

    Per-step metrics use TRL's names: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies`` (on the minibatch), ``lr``, ``grad_norm``; every
    ``eval_every`` steps and at the end, ``eval/accuracy``, ``eval/gold_accuracy`` and ``eval/loss``
    on ``eval_pairs``.

    Under ``torchrun`` each rank scores its shard of every minibatch and DistributedDataParallel
    averages the gradients (``distributed``); rank 0 shows the bar and writes checkpoints.
    """
    records = preference_records(pairs)
    eval_records = preference_records(eval_pairs) if eval_pairs is not None else None
    check_tokenizer(tokenizer)
    if config.max_steps < 1 or config.batch_size < 1:
        raise ValueError(f"max_steps and batch_size must be >= 1, got {config.max_steps} and {config.batch_size}")
    if config.margin:
        likert_margins(records, config.margin)  # validate every record up front
    world = get_world(config.task)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    start, metrics = 0, []
    if resume_from is not None:
        state = load_checkpoint(resume_from, {"": model}, optimizer)
        start, metrics = state["step"], list(state["metrics"])
    model.train()
    score = distributed.wrap(model, _scores)  # DDP under torchrun, _scores(model, ...) otherwise
    ids = tokenize_preferences(tokenizer, [world.format_prompt(r["prompt"]) for r in records],  # once
                               [r["chosen"] for r in records], [r["rejected"] for r in records])
    with fused_gelu(model):  # the same model, its activation in one kernel while it trains
        t0 = time.perf_counter()
        bar = tqdm(range(start, config.max_steps), desc="reward model", disable=not progress or not distributed.is_main(),
                   leave=False)
        for step in bar:
            idx = distributed.shard(batch_indices(step, len(records), config.batch_size, config.seed))
            chunk = [records[i] for i in idx]
            # chosen rows first, then rejected rows, in one forward pass
            batch = collate_preferences(ids, idx, config.max_length, tokenizer.pad_token_id).to(device)
            lr = _lr(step, config)
            scores = score(batch.input_ids, batch.attention_mask)
            chosen, rejected = scores[:len(chunk)], scores[len(chunk):]
            margin = likert_margins(chunk, config.margin).to(device) if config.margin else None
            loss = bradley_terry_loss(chosen, rejected, margin)
            grad_norm = optimizer_step(optimizer, loss, model.parameters(), config.max_grad_norm, lr)
            c, r = chosen.detach(), rejected.detach()
            mean = distributed.mean  # over the ranks' shards (the identity with one process)
            row = {"step": step + 1, "loss": mean(float(loss.detach())), "rewards/chosen": mean(float(c.mean())),
                   "rewards/rejected": mean(float(r.mean())), "rewards/margins": mean(float((c - r).mean())),
                   "rewards/accuracies": mean(float((c > r).float().mean())), "lr": lr,
                   "grad_norm": float(grad_norm), "elapsed": time.perf_counter() - t0}
            last = step + 1 == config.max_steps
            if eval_records and (last or (config.eval_every and (step + 1) % config.eval_every == 0)):
                ev = evaluate_reward_model(model, tokenizer, world, eval_records)
                row.update({f"eval/{k}": v for k, v in ev.items()})
                model.train()
            metrics.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['rewards/accuracies']:.2f}")
            if (checkpoint_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0
                    and distributed.is_main()):
                save_checkpoint(Path(checkpoint_dir) / f"step-{step + 1}", {"": model},
                                {"step": step + 1, "metrics": metrics, "config": asdict(config)},
                                optimizer=optimizer, tokenizer=tokenizer)
    model.eval()
    return model, metrics


def train_reward_regression(config: RewardConfig, model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase,
                            records: Any, *, progress: bool = True) -> tuple[ScalarHeadModel, list[dict[str, Any]]]:
    """The alternative to comparisons: regress r_φ(x, y) on absolute scores (records with raw
    ``prompt``, ``response`` and a numeric ``score``, e.g. ``SimulatedLabeler.score`` on 0–10).

        L(φ) = E[(r_φ(x, y) − z)²],   z = (score − mean) / std   (standardised over the data set)

    Each record is one label. Labelers' private offsets and scales land in z as noise (or worse,
    as bias when labelers see different prompts); a comparison cancels them. Same optimizer, schedule
    and minibatch order as ``train_reward_model``; ``batch_size`` counts sequences here, twice
    ``config.batch_size``, so both learners see the same number of sequences per step.
    """
    records = [dict(r) for r in records]
    if not records:
        raise ValueError("no scored responses given: need records with 'prompt', 'response', 'score'")
    for i, r in enumerate(records):
        if not isinstance(r.get("prompt"), str) or not isinstance(r.get("response"), str):
            raise ValueError(f"scored record {i}: 'prompt' and 'response' must be strings")
        if not isinstance(r.get("score"), (int, float)) or not np.isfinite(r["score"]):
            raise ValueError(f"scored record {i}: 'score' must be a finite number, got {r.get('score')!r}")
    check_tokenizer(tokenizer)
    world = get_world(config.task)
    raw = np.array([r["score"] for r in records], dtype=float)
    mean, std = float(raw.mean()), float(raw.std()) or 1.0
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    metrics = []
    model.train()
    for step in tqdm(range(config.max_steps), desc="score regression", disable=not progress, leave=False):
        idx = batch_indices(step, len(records), 2 * config.batch_size, config.seed)
        chunk = [records[i] for i in idx]
        batch = encode_pairs(tokenizer, [world.format_prompt(r["prompt"]) for r in chunk],
                             [r["response"] for r in chunk], config.max_length).to(device)
        target = torch.tensor((raw[idx] - mean) / std, dtype=torch.float32, device=device)
        lr = _lr(step, config)
        loss = torch.nn.functional.mse_loss(model.score(batch.input_ids, batch.attention_mask), target)
        grad_norm = optimizer_step(optimizer, loss, model.parameters(), config.max_grad_norm, lr)
        metrics.append({"step": step + 1, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(grad_norm)})
    model.eval()
    return model, metrics


@torch.no_grad()
def center_on_policy_samples(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world,
                             policy, prompts: list[str], max_new_tokens: int, seed: int = 0) -> dict[str, float]:
    """Shift the head's bias so that the mean score of ``policy``'s samples on ``prompts`` is 0.

    Returns the scores' mean before the shift and their standard deviation.
    """
    gen = generate(policy, tokenizer, [world.format_prompt(p) for p in prompts], max_new_tokens=max_new_tokens,
                   seed=seed, progress=False)
    scores = score_texts(reward_model, tokenizer, world, prompts, gen.responses)
    bias_shift = float(scores.mean())
    reward_model.head.bias -= bias_shift
    return {"mean_before": bias_shift, "std": float(scores.std()), "n_samples": len(prompts)}

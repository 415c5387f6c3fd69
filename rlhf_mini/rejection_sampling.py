"""Rejection-sampling fine-tuning: best-of-N, distilled back into the policy (Llama 2, Touvron et al. 2023).

Best-of-N costs N samples at every query. Rejection-sampling fine-tuning pays that cost once, at
training time, and iterates:

    for round k = 1 … K:
        for each prompt x of the round:  y_1 … y_N ~ π_k(·|x),   y* = argmax_i r_φ(x, y_i)
        π_{k+1} = SFT(π_k on the pairs (x, y*))          (the plain SFT loss: ``losses.response_nll``)

Each round moves the policy toward the best-of-N distribution of the previous one, so the gains
compound (Llama 2 §3.2.3; the same idea is "expert iteration", ReST and RAFT). The reward model
only *selects*; it never gives a gradient, so there is no KL penalty in the loss: the KL from the
starting policy is controlled by N, by the number of rounds and by the SFT step count. A round
samples from the current policy only (Llama 2 later also kept the best samples of all earlier
rounds; a ``keep_per_prompt`` > 1 or more prompts per round are the knobs here).

Metrics per round, measured on held-out prompts with a fresh sample from the policy after that
round's SFT: the proxy (reward-model) score, the gold reward, and the KL from the reference
(the starting policy), estimated as the mean of log π(y|x) − log π_ref(y|x) over y ~ π.

Checkpoints are per round: each round's prompts, samples and SFT minibatches are seeded by
(seed, round), so a run resumed from the end of round k repeats exactly what round k + 1 of the
uninterrupted run would have done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_mini.batch import encode_pairs
from rlhf_mini.config import Profile
from rlhf_mini.eval import evaluate_policy
from rlhf_mini.losses import response_nll
from rlhf_mini.models import position_ids_from_mask
from rlhf_mini.scoring import Scorer, sample_pool, score_pool
from rlhf_mini.training import (
    batch_indices,
    load_checkpoint,
    load_trainer_state,
    lr_at,
    optimizer_step,
    save_checkpoint,
)


@dataclass
class RSConfig:
    """Iterated rejection-sampling fine-tuning."""

    rounds: int = 2
    """sample → select → fine-tune iterations"""
    prompts_per_round: int = 512
    """fresh training prompts sampled each round"""
    n_samples: int = 8
    """N: responses sampled per prompt, of which the best is kept"""
    keep_per_prompt: int = 1
    """how many of the N (the highest-scoring) become SFT targets"""
    sft_steps: int = 60
    """SFT optimizer steps per round"""
    batch_size: int = 32
    """SFT minibatch size"""
    learning_rate: float = 3e-4
    """SFT peak learning rate (lower than the first SFT: the targets are the policy's own samples)"""
    warmup_steps: int = 5
    """SFT warm-up steps"""
    min_lr_ratio: float = 0.1
    """each round's SFT cosine decay ends at ``learning_rate * min_lr_ratio``"""
    max_grad_norm: float = 1.0
    """SFT global gradient-norm clip"""
    max_length: int = 128
    """longest prompt + response in tokens for SFT"""
    max_new_tokens: int = 32
    """longest sampled response"""
    temperature: float = 1.0
    """sampling temperature for the N candidates and for evaluation"""
    n_eval_prompts: int = 128
    """held-out (test-split) prompts used to measure each round"""
    seed: int = 0
    """seeds the prompts, the sampling and the SFT minibatch order"""

    @classmethod
    def from_profile(cls, profile: Profile, **changes: Any) -> RSConfig:
        """Batch size, context and generation length read from the profile; any field overridable.

        ``learning_rate``, the default or an override, is a rate for the cpu profile's models and is
        multiplied by ``profile.lr_scale`` (1 there, 0.2 at GPT-2-small width).
        """
        values = {"batch_size": profile.batch_size, "max_length": profile.n_ctx,
                  "max_new_tokens": profile.max_new_tokens, "n_eval_prompts": min(profile.n_eval_prompts, 128)}
        values.update(changes)
        values["learning_rate"] = values.get("learning_rate", cls.learning_rate) * profile.lr_scale
        return cls(**values)

    def __post_init__(self) -> None:
        for name in ("rounds", "prompts_per_round", "n_samples", "keep_per_prompt", "sft_steps", "batch_size",
                     "n_eval_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"RSConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.keep_per_prompt > self.n_samples:
            raise ValueError(f"keep_per_prompt ({self.keep_per_prompt}) cannot exceed n_samples ({self.n_samples})")


@dataclass
class RSResult:
    policy: Any
    """the fine-tuned policy (trained in place)"""
    metrics: list[dict[str, Any]]
    """one dict per round (round 0 = the starting policy)"""
    datasets: list[list[dict[str, Any]]] = field(default_factory=list)
    """the kept (prompt, response, score) examples of each round"""


def select_best(prompts: list[str], samples: list[list[str]], scores: np.ndarray, keep: int = 1
                ) -> list[dict[str, Any]]:
    """The ``keep`` highest-scoring samples of each prompt, as SFT examples with their score."""
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(prompts), len(samples[0]) if samples else 0) or len(samples) != len(prompts):
        raise ValueError(f"scores of shape {scores.shape} do not match {len(prompts)} prompts × "
                         f"{len(samples[0]) if samples else 0} samples")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    kept = []
    for prompt, row, row_scores in zip(prompts, samples, scores):
        for j in np.argsort(-row_scores, kind="stable")[:keep]:
            kept.append({"prompt": prompt, "response": row[j], "score": float(row_scores[j])})
    return kept


def fine_tune(config: RSConfig, policy, tokenizer, world, examples: list[dict[str, Any]], seed: int) -> list[float]:
    """One round's SFT on the kept samples: the completion-only loss, AdamW, warm-up then cosine
    decay, ``config.sft_steps`` minibatches in a fresh order each epoch. Returns the step losses."""
    device = next(policy.parameters()).device
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, weight_decay=0.0, betas=(0.9, 0.95))
    policy.train()
    losses = []
    for step in range(config.sft_steps):
        chunk = [examples[i] for i in batch_indices(step, len(examples), config.batch_size, seed)]
        batch = encode_pairs(tokenizer, [world.format_prompt(e["prompt"]) for e in chunk],
                             [e["response"] for e in chunk], config.max_length, add_eos=True).to(device)
        logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=position_ids_from_mask(batch.attention_mask)).logits
        loss = response_nll(logits, batch.input_ids, batch.response_mask)
        optimizer_step(optimizer, loss, policy.parameters(), config.max_grad_norm,
                       lr_at(step, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                             max_steps=config.sft_steps, min_lr_ratio=config.min_lr_ratio))
        losses.append(float(loss.detach()))
    policy.eval()
    return losses


def _resume(folder: str | Path, policy, config: RSConfig) -> tuple[list, list]:
    state = load_trainer_state(folder)
    saved = state["config"]
    # every field but the round count shapes the rounds already run; a different one would splice two runs
    changed = sorted(k for k, v in asdict(config).items() if k != "rounds" and saved.get(k) != v)
    where = Path(folder) / "trainer_state.pt"
    if changed:
        raise ValueError(f"{where}: field(s) {changed} differ from the run being resumed "
                         f"(saved {[saved.get(k) for k in changed]}, now {[getattr(config, k) for k in changed]})")
    if state["round"] > config.rounds:
        raise ValueError(f"{where}: the checkpoint is after round {state['round']}, "
                         f"past config.rounds = {config.rounds}")
    load_checkpoint(folder, {"": policy}, state=state)
    return state["metrics"], state["datasets"]


def _evaluate(policy, ref_policy, tokenizer, world, scorer: Scorer, prompts: list[str], config: RSConfig,
              seed: int) -> dict[str, float]:
    ev = evaluate_policy(policy, ref_policy, tokenizer, world, prompts, max_new_tokens=config.max_new_tokens,
                         temperature=config.temperature, seed=seed)
    rm = np.asarray(scorer(prompts, ev["responses"]), dtype=float)
    return {"rm": float(rm.mean()), "gold": ev["gold"], "kl": ev["kl"], "length": ev["length"]}


def train_rejection_sampling(config: RSConfig, policy, ref_policy, tokenizer, world, scorer: Scorer, *,
                             checkpoint_dir: str | Path | None = None, resume_from: str | Path | None = None,
                             progress: bool = True) -> RSResult:
    """Run ``config.rounds`` rounds of best-of-N selection under ``scorer`` followed by SFT.

    ``ref_policy`` (a frozen copy of the starting policy) is used for the KL measurement only.
    Returns the policy, per-round metrics (``rm``, ``gold``, ``kl``, ``length`` on held-out prompts;
    ``rm/samples``, ``rm/kept``, ``gold/samples``, ``gold/kept`` on the round's candidates;
    ``sft/loss``, ``sft/first_loss``) and the kept examples. With ``checkpoint_dir`` the state after
    each round k is saved to ``checkpoint_dir/round-k``; ``resume_from`` (such a folder) continues
    the run from the next round, with the same config (``rounds`` may grow).
    """
    if policy is ref_policy:
        raise ValueError("policy and ref_policy are the same object: pass models.reference_copy(policy)")
    eval_prompts = world.prompts(config.n_eval_prompts, seed=config.seed + 10_000, split="test")
    if resume_from is not None:
        metrics, datasets = _resume(resume_from, policy, config)
    else:
        metrics = [{"round": 0, **_evaluate(policy, ref_policy, tokenizer, world, scorer, eval_prompts, config,
                                            config.seed + 20_000)}]
        datasets = []
    for k in tqdm(range(len(datasets) + 1, config.rounds + 1), desc="rejection sampling", disable=not progress,
                  leave=False):
        prompts = world.prompts(config.prompts_per_round, seed=config.seed + k, split="train")
        samples = sample_pool(policy, tokenizer, world, prompts, config.n_samples,
                              max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              seed=config.seed + 100 * k, progress=False)
        scores = score_pool(scorer, prompts, samples)
        kept = select_best(prompts, samples, scores, config.keep_per_prompt)
        flat_prompts = [p for p in prompts for _ in range(config.n_samples)]
        gold_all = world.gold_rewards(flat_prompts, [r for row in samples for r in row])
        gold_kept = world.gold_rewards([e["prompt"] for e in kept], [e["response"] for e in kept])
        sft_losses = fine_tune(config, policy, tokenizer, world, kept, seed=config.seed + k)
        datasets.append(kept)
        metrics.append({
            "round": k,
            **_evaluate(policy, ref_policy, tokenizer, world, scorer, eval_prompts, config, config.seed + 20_000 + k),
            "rm/samples": float(scores.mean()), "rm/kept": float(np.mean([e["score"] for e in kept])),
            "gold/samples": float(gold_all.mean()), "gold/kept": float(gold_kept.mean()),
            "sft/loss": float(np.mean(sft_losses[-10:])),
            "sft/first_loss": sft_losses[0],
        })
        if checkpoint_dir is not None:
            save_checkpoint(Path(checkpoint_dir) / f"round-{k}", {"": policy},
                            {"round": k, "config": asdict(config), "metrics": metrics, "datasets": datasets},
                            tokenizer=tokenizer)
    policy.eval()
    return RSResult(policy, metrics, datasets)

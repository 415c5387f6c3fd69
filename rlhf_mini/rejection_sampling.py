"""Rejection-sampling fine-tuning: best-of-N, distilled back into the policy (Llama 2, Touvron et al. 2023).

Best-of-N costs N samples at every query. Rejection-sampling fine-tuning pays that cost once, at
training time, and iterates:

    for round k = 1 … K:
        for each prompt x of the round:  y_1 … y_N ~ π_k(·|x),   y* = argmax_i r_φ(x, y_i)
        π_{k+1} = SFT(π_k on the pairs (x, y*))          (the plain SFT loss: ``sft.train_sft``)

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

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_mini.best_of_n import Scorer, best_of_n
from rlhf_mini.config import Profile, get_profile
from rlhf_mini.dpo import evaluate_policy
from rlhf_mini.sft import SFTConfig, train_sft


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
    lr: float = 3e-4
    """SFT peak learning rate (lower than the first SFT: the targets are the policy's own samples)"""
    warmup_steps: int = 5
    """SFT warm-up steps"""
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

        ``lr``, the default or an override, is a rate for the cpu profile's models and is multiplied
        by ``profile.lr_scale`` (1 there, 0.2 at GPT-2-small width).
        """
        values = {"batch_size": profile.batch_size, "max_length": profile.n_ctx,
                  "max_new_tokens": profile.max_new_tokens, "n_eval_prompts": min(profile.n_eval_prompts, 128)}
        values.update(changes)
        values["lr"] = values.get("lr", cls.lr) * profile.lr_scale
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


RS_STATE = "rs_state.json"


def save_rs_checkpoint(folder: str | Path, policy, tokenizer, config: RSConfig, metrics: list[dict[str, Any]],
                       datasets: list[list[dict[str, Any]]]) -> Path:
    """Write the policy after the last finished round (``save_pretrained``), its tokenizer, the
    metrics and kept examples so far, the config and the torch RNG state."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / RS_STATE).write_text(json.dumps({"round": len(datasets), "config": asdict(config),
                                               "metrics": metrics, "datasets": datasets}))
    torch.save(torch.get_rng_state(), folder / "torch_rng.pt")
    return folder


def _load_rs_checkpoint(folder: str | Path, policy, config: RSConfig) -> tuple[list, list]:
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / RS_STATE).is_file():
        raise ValueError(f"{folder}: not a rejection-sampling checkpoint (no {RS_STATE})")
    state = json.loads((folder / RS_STATE).read_text())
    saved = state["config"]
    # every field but the round count shapes the rounds already run; a different one would splice two runs
    changed = sorted(k for k, v in asdict(config).items() if k != "rounds" and saved.get(k) != v)
    if changed:
        raise ValueError(f"{folder / RS_STATE}: field(s) {changed} differ from the run being resumed "
                         f"(saved {[saved.get(k) for k in changed]}, now {[getattr(config, k) for k in changed]})")
    if state["round"] > config.rounds:
        raise ValueError(f"{folder / RS_STATE}: the checkpoint is after round {state['round']}, "
                         f"past config.rounds = {config.rounds}")
    policy.load_state_dict(AutoModelForCausalLM.from_pretrained(str(folder)).state_dict())
    torch.set_rng_state(torch.load(folder / "torch_rng.pt"))
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
        metrics, datasets = _load_rs_checkpoint(resume_from, policy, config)
    else:
        metrics = [{"round": 0, **_evaluate(policy, ref_policy, tokenizer, world, scorer, eval_prompts, config,
                                            config.seed + 20_000)}]
        datasets = []
    for k in tqdm(range(len(datasets) + 1, config.rounds + 1), desc="rejection sampling", disable=not progress,
                  leave=False):
        prompts = world.prompts(config.prompts_per_round, seed=config.seed + k, split="train")
        bon = best_of_n(policy, tokenizer, world, prompts, config.n_samples, scorer,
                        max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                        seed=config.seed + 100 * k, progress=False)
        kept = select_best(prompts, bon.samples, bon.scores, config.keep_per_prompt)
        flat_prompts = [p for p in prompts for _ in range(config.n_samples)]
        gold_all = world.gold_rewards(flat_prompts, [r for row in bon.samples for r in row])
        gold_kept = world.gold_rewards([e["prompt"] for e in kept], [e["response"] for e in kept])
        sft_config = SFTConfig(task=world.name, steps=config.sft_steps, batch_size=config.batch_size, lr=config.lr,
                               warmup_steps=config.warmup_steps, max_length=config.max_length,
                               seed=config.seed + k)
        policy, sft_metrics = train_sft(sft_config, policy, tokenizer,
                                        [{"prompt": e["prompt"], "response": e["response"]} for e in kept],
                                        progress=False)
        datasets.append(kept)
        metrics.append({
            "round": k,
            **_evaluate(policy, ref_policy, tokenizer, world, scorer, eval_prompts, config, config.seed + 20_000 + k),
            "rm/samples": float(bon.scores.mean()), "rm/kept": float(np.mean([e["score"] for e in kept])),
            "gold/samples": float(gold_all.mean()), "gold/kept": float(gold_kept.mean()),
            "sft/loss": float(np.mean([m["loss"] for m in sft_metrics[-10:]])),
            "sft/first_loss": sft_metrics[0]["loss"],
        })
        if checkpoint_dir is not None:
            save_rs_checkpoint(Path(checkpoint_dir) / f"round-{k}", policy, tokenizer, config, metrics, datasets)
    policy.eval()
    return RSResult(policy, metrics, datasets)


# --------------------------------------------------------------------------------------------
# The zoo artifact
# --------------------------------------------------------------------------------------------

CHAPTER_RECIPE = {"rounds": 2, "prompts_per_round": 256, "n_samples": 8, "sft_steps": 40}
"""chapter 10's run: two rounds of best-of-8 under the reward model, 40 SFT steps each"""


def rs_policy_path(task: str = "assistant", profile: Profile | None = None, **overrides: Any) -> Path:
    """The folder of the cached rejection-sampling policy (built from the SFT policy on first use).

    The recipe is ``CHAPTER_RECIPE`` with the reward model as the selector; ``overrides`` go to
    ``RSConfig``.
    """
    from rlhf_mini import batch, logprobs, losses, models, reward, sampling, sft, zoo
    from rlhf_mini.best_of_n import reward_model_scorer
    from rlhf_mini.worlds import get_world

    profile = profile or get_profile()
    config = RSConfig.from_profile(profile, **{**CHAPTER_RECIPE, **overrides})

    def build(folder: Path) -> None:
        from rlhf_mini.utils import set_seed

        world = get_world(task)
        set_seed(config.seed)
        policy, tokenizer = sft.sft_policy(task, profile)
        ref = models.reference_copy(policy)
        for param in policy.parameters():
            param.requires_grad_(True)
        rm, rm_tokenizer = reward.reward_model(task, profile)
        result = train_rejection_sampling(config, policy, ref, tokenizer, world,
                                          reward_model_scorer(rm, rm_tokenizer, world))
        result.policy.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))

    key = {"task": task, "sft": sft.sft_policy_path(task, profile).name,
           "reward": reward.reward_model_path(task, profile).name, **asdict(config)}
    modules = [sys.modules[__name__], batch, logprobs, losses, models, sampling, sft, reward]
    return zoo.cached(f"rs-{task}-{profile.name}", key, modules, build)


def rs_policy(task: str = "assistant", profile: Profile | None = None, **overrides: Any):
    """The rejection-sampling fine-tuned policy of ``task`` and its tokenizer (cached)."""
    from rlhf_mini.sft import load_sft_checkpoint

    model, tokenizer = load_sft_checkpoint(rs_policy_path(task, profile, **overrides))
    return model.eval(), tokenizer


def rs_metrics(task: str = "assistant", profile: Profile | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The per-round metrics of the cached run that ``rs_policy`` returns."""
    return json.loads((rs_policy_path(task, profile, **overrides) / "metrics.json").read_text())

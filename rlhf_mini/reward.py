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
and rejected sequences go through the model in one batch of 2B rows.

Only reward *differences* are identified by the loss, so the offset is arbitrary. As in
lm-human-preferences (Ziegler et al. 2019) the cached reward model is shifted after training so
that its scores on the SFT policy's own samples have mean 0: the head's bias absorbs the shift,
and PPO starts from rewards centred on the policy it fine-tunes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf_mini.batch import check_tokenizer, encode_pairs
from rlhf_mini.config import Profile, get_device, get_profile
from rlhf_mini.losses import bradley_terry_loss
from rlhf_mini.models import ScalarHeadModel
from rlhf_mini.sft import batch_indices, load_trainer_state, lr_at, save_checkpoint

LIKERT_MIDPOINT = 4


@dataclass
class RewardConfig:
    """A Bradley–Terry reward model on (prompt, chosen, rejected) pairs."""

    task: str = "assistant"
    """the world whose ``format_prompt`` turns a raw prompt into model-ready text"""
    steps: int = 150
    """optimizer steps (one minibatch of pairs each)"""
    batch_size: int = 32
    """pairs per minibatch (the model sees 2 × batch_size sequences)"""
    lr: float = 1e-3
    """peak AdamW learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    warmup_steps: int = 10
    """steps of linear learning-rate warm-up from 0"""
    min_lr_ratio: float = 0.1
    """the cosine decay ends at ``lr * min_lr_ratio``"""
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
        return cls(task=task, steps=max(1, profile.reward_steps // 2), batch_size=profile.batch_size,
                   lr=profile.pretrain_lr / 3, max_length=profile.n_ctx,
                   eval_every=max(1, profile.reward_steps // 6))


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _as_records(pairs: Any) -> list[dict[str, Any]]:
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


def score_texts(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world, prompts: list[str],
                responses: list[str], batch_size: int = 64, max_length: int | None = None) -> np.ndarray:
    """Reward-model scores of raw ``prompts`` (formatted with ``world.format_prompt``) and responses.

    Batched, without gradients, in eval mode; returns a float array of shape ``[len(prompts)]``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("empty batch: no prompts given")
    max_length = max_length or reward_model.config.n_positions
    device = next(reward_model.parameters()).device
    was_training = reward_model.training
    reward_model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            text = [world.format_prompt(p) for p in prompts[start:start + batch_size]]
            batch = encode_pairs(tokenizer, text, list(responses[start:start + batch_size]), max_length).to(device)
            out.append(reward_model.score(batch.input_ids, batch.attention_mask).float().cpu())
    reward_model.train(was_training)
    return torch.cat(out).numpy()


def pair_scores(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world, pairs: Any,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(chosen_scores, rejected_scores)`` for each pair."""
    records = _as_records(pairs)
    prompts = [r["prompt"] for r in records]
    chosen = score_texts(reward_model, tokenizer, world, prompts, [r["chosen"] for r in records], batch_size)
    rejected = score_texts(reward_model, tokenizer, world, prompts, [r["rejected"] for r in records], batch_size)
    return chosen, rejected


def evaluate_reward_model(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world,
                          pairs: Any) -> dict[str, float]:
    """Held-out metrics: ``accuracy`` (agrees with the recorded label), ``gold_accuracy`` (agrees
    with the gold utility, pairs with equal gold left out, when the records carry ``chosen_gold``),
    the BT ``loss`` and the mean ``margin``."""
    records = _as_records(pairs)
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


def train_reward_model(config: RewardConfig, model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase,
                       pairs: Any, *, eval_pairs: Any = None, checkpoint_dir: str | Path | None = None,
                       checkpoint_every: int = 0, resume_from: str | Path | None = None,
                       progress: bool = True) -> tuple[ScalarHeadModel, list[dict[str, Any]]]:
    """Fit ``model`` to ``pairs`` (records or a Dataset with raw ``prompt``, ``chosen``, ``rejected``).

    Per-step metrics use TRL's names: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies`` (on the minibatch), ``lr``, ``grad_norm``; every
    ``eval_every`` steps and at the end, ``eval/accuracy``, ``eval/gold_accuracy`` and ``eval/loss``
    on ``eval_pairs``.
    """
    from rlhf_mini.worlds import get_world

    records = _as_records(pairs)
    eval_records = _as_records(eval_pairs) if eval_pairs is not None else None
    check_tokenizer(tokenizer)
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {config.steps} and {config.batch_size}")
    if config.margin:
        likert_margins(records, config.margin)  # validate every record up front
    world = get_world(config.task)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    start, metrics = 0, []
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        model.load_state_dict(ScalarHeadModel.from_pretrained(str(resume_from)).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, metrics = state["step"], list(state["metrics"])
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.steps), desc="reward model", disable=not progress, leave=False)
    for step in bar:
        chunk = [records[i] for i in batch_indices(step, len(records), config.batch_size, config.seed)]
        prompts = [world.format_prompt(r["prompt"]) for r in chunk]
        # chosen rows first, then rejected rows, in one forward pass
        batch = encode_pairs(tokenizer, prompts + prompts, [r["chosen"] for r in chunk] +
                             [r["rejected"] for r in chunk], config.max_length).to(device)
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        scores = model.score(batch.input_ids, batch.attention_mask)
        chosen, rejected = scores[:len(chunk)], scores[len(chunk):]
        margin = likert_margins(chunk, config.margin).to(device) if config.margin else None
        loss = bradley_terry_loss(chosen, rejected, margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        c, r = chosen.detach(), rejected.detach()
        row = {"step": step + 1, "loss": float(loss.detach()), "rewards/chosen": float(c.mean()),
               "rewards/rejected": float(r.mean()), "rewards/margins": float((c - r).mean()),
               "rewards/accuracies": float((c > r).float().mean()), "lr": lr,
               "grad_norm": float(grad_norm), "elapsed": time.perf_counter() - t0}
        last = step + 1 == config.steps
        if eval_records and (last or (config.eval_every and (step + 1) % config.eval_every == 0)):
            ev = evaluate_reward_model(model, tokenizer, world, eval_records)
            row.update({f"eval/{k}": v for k, v in ev.items()})
            model.train()
        metrics.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['rewards/accuracies']:.2f}")
        if checkpoint_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save_checkpoint(Path(checkpoint_dir) / f"step-{step + 1}", model, tokenizer, optimizer,
                            step + 1, metrics, config)
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
    from rlhf_mini.worlds import get_world

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
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    metrics = []
    model.train()
    for step in tqdm(range(config.steps), desc="score regression", disable=not progress, leave=False):
        idx = batch_indices(step, len(records), 2 * config.batch_size, config.seed)
        chunk = [records[i] for i in idx]
        batch = encode_pairs(tokenizer, [world.format_prompt(r["prompt"]) for r in chunk],
                             [r["response"] for r in chunk], config.max_length).to(device)
        target = torch.tensor((raw[idx] - mean) / std, dtype=torch.float32, device=device)
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = torch.nn.functional.mse_loss(model.score(batch.input_ids, batch.attention_mask), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        metrics.append({"step": step + 1, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(grad_norm)})
    model.eval()
    return model, metrics


def load_reward_checkpoint(folder: str | Path) -> tuple[ScalarHeadModel, PreTrainedTokenizerBase]:
    """``(reward_model, tokenizer)`` from a checkpoint or a finished reward-model artifact folder."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.padding_side = "left"
    return ScalarHeadModel.from_pretrained(str(folder)).to(get_device()).eval(), tok


@torch.no_grad()
def center_on_policy_samples(reward_model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world,
                             policy, prompts: list[str], max_new_tokens: int, seed: int = 0) -> dict[str, float]:
    """Shift the head's bias so that the mean score of ``policy``'s samples on ``prompts`` is 0.

    Returns the scores' mean before the shift and their standard deviation.
    """
    from rlhf_mini.sampling import generate

    gen = generate(policy, tokenizer, [world.format_prompt(p) for p in prompts], max_new_tokens=max_new_tokens,
                   seed=seed, progress=False)
    scores = score_texts(reward_model, tokenizer, world, prompts, gen.responses)
    bias_shift = float(scores.mean())
    reward_model.head.bias -= bias_shift
    return {"mean_before": bias_shift, "std": float(scores.std()), "n_samples": len(prompts)}


# --------------------------------------------------------------------------------------------
# The zoo artifact
# --------------------------------------------------------------------------------------------


def preference_file(task: str, split: str) -> Path:
    """The shipped ``data/{task}_prefs_{split}.jsonl``."""
    from rlhf_mini.data import DATA_DIR

    path = DATA_DIR / f"{task}_prefs_{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"no preference data for task {task!r}: {path} does not exist")
    return path


def reward_model_path(task: str = "assistant", profile: Profile | None = None) -> Path:
    """The folder of the cached reward model for ``task`` (built on first use from the SFT policy)."""
    import hashlib

    from rlhf_mini import data, losses, models, sft, zoo
    from rlhf_mini.worlds import get_world

    profile = profile or get_profile()
    config = RewardConfig.from_profile(profile, task)
    world = get_world(task)
    train_file, test_file = preference_file(task, "train"), preference_file(task, "test")
    sft_path = sft.sft_policy_path(task, profile)

    def build(folder: Path) -> None:
        from rlhf_mini.utils import set_seed

        set_seed(config.seed)
        policy, tok = sft.sft_policy(task, profile)
        model = ScalarHeadModel.from_language_model(policy, seed=config.seed).to(get_device())
        train, test = data.load_preferences(train_file), data.load_preferences(test_file)
        model, metrics = train_reward_model(config, model, tok, train, eval_pairs=test)
        prompts = world.prompts(profile.n_eval_prompts, seed=config.seed + 7, split="train")
        norm = center_on_policy_samples(model, tok, world, policy, prompts, profile.max_new_tokens, config.seed)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "normalization.json").write_text(json.dumps(norm))

    digest = hashlib.sha256(train_file.read_bytes() + test_file.read_bytes()).hexdigest()[:16]
    key = {"task": task, "sft": sft_path.name, "data": digest, "n_eval_prompts": profile.n_eval_prompts,
           "max_new_tokens": profile.max_new_tokens, **asdict(config)}
    return zoo.cached(f"reward-{task}-{profile.name}", key, [sys.modules[__name__], losses, models], build)


def reward_model(task: str = "assistant", profile: Profile | None = None
                 ) -> tuple[ScalarHeadModel, PreTrainedTokenizerBase]:
    """The reward model for ``task`` and its tokenizer (cached): a Bradley–Terry head on the SFT
    policy's body, trained on ``data/{task}_prefs_train.jsonl``, centred on SFT samples."""
    return load_reward_checkpoint(reward_model_path(task, profile))


def reward_model_on_pairs(pairs: Any, config: RewardConfig, profile: Profile | None = None,
                          name: str = "pairs", progress: bool = True) -> ScalarHeadModel:
    """Chapter 7's recipe on other pairs, cached by their content: a Bradley–Terry head on the
    SFT policy's body for ``config.task``, seeded by ``config.seed``, trained on ``pairs``.

    For chapters that compare reward models trained on different labels: each trains once, and a
    rerun of the chapter loads it. Unlike ``reward_model`` it is not centred on SFT samples.
    """
    import hashlib

    from rlhf_mini import losses, models, sft, zoo
    from rlhf_mini.utils import set_seed

    profile = profile or get_profile()
    records = _as_records(pairs)

    def build(folder: Path) -> None:
        set_seed(config.seed)
        policy, tok = sft.sft_policy(config.task, profile)
        model = ScalarHeadModel.from_language_model(policy, seed=config.seed)
        model, metrics = train_reward_model(config, model, tok, records, progress=progress)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()[:16]
    key = {"sft": sft.sft_policy_path(config.task, profile).name, "pairs": digest, "n_pairs": len(records),
           **asdict(config)}
    folder = zoo.cached(f"reward-{name}-{profile.name}", key, [sys.modules[__name__], losses, models], build)
    return load_reward_checkpoint(folder)[0]


def reward_model_metrics(task: str = "assistant", profile: Profile | None = None) -> list[dict[str, Any]]:
    """The per-step metrics of the cached reward-model run (with held-out evaluations)."""
    return json.loads((reward_model_path(task, profile) / "metrics.json").read_text())

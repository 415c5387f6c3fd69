"""Process reward models (PRM) vs outcome reward models (ORM) as best-of-N rerankers.

"Let's Verify Step by Step" (Lightman et al. 2023) trains a verifier that labels every step of a
chain of thought, and compares it with one that sees only whether the final answer is right.

* PRM: a GPT-2 body with a one-logit head, read at the token that ends each step (the ``.`` after
  ``4 * 2 = 8``, and the EOS after ``Answer: n``). Step labels come for free from the arithmetic
  world (``step_labels``: step k is correct iff it and every earlier step are right, PRM800K's
  first-error convention); the answer "step" is correct iff every step and the answer are. Loss:

      L_PRM = − (1/K) Σ_k [ y_k log σ(z_k) + (1 − y_k) log(1 − σ(z_k)) ]     over all steps k

* ORM: the same network, read only at the EOS, trained on final-answer correctness:

      L_ORM = − [ y log σ(z_EOS) + (1 − y) log(1 − σ(z_EOS)) ]

* Reranking: sample N solutions, keep the one the verifier likes best. A PRM scores a solution by
  aggregating its step probabilities, ``min_k σ(z_k)`` or ``Π_k σ(z_k)`` (the probability that every
  step is right); the ORM by σ(z_EOS); majority voting picks the most common final answer.

Both verifiers train on the same solutions, with the same minibatches, for the same number of steps
from the same initialisation, so the comparison isolates the value of step-level labels. The
training solutions come from the world's slipping solver (tens of thousands of them, for free), with
the wrong answers of the wrong parity dropped (``parity_balanced``): the world's train split makes
"the answer is even" a spurious sign of correctness, which reverses on the test split.

The world's solver slips by miscalculating: right operands, a result off by 1 or 2. Its variant
``miscopying_solution`` slips by miscopying an operand instead. A 2-layer verifier learns to spot the
second kind and not the first, so chapter 12 trains one PRM/ORM pair on each
(``zoo.prm.cached_verifier(kind, mistakes=...)``).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf_mini.batch import check_tokenizer
from rlhf_mini.config import Profile, get_device, get_profile
from rlhf_mini.models import ScalarHeadModel
from rlhf_mini.sampling import generate
from rlhf_mini.training import (
    SCHEDULES,
    fused_gelu,
    load_checkpoint,
    lr_at,
    optimizer_step,
    save_checkpoint,
)
from rlhf_mini.worlds.arithmetic import (
    ArithmeticWorld,
    format_step,
    next_reduction,
    parse_problem,
    solve_steps,
    step_labels,
)

KINDS = ("prm", "orm")
MISTAKES = ("miscalculation", "miscopy")
AGGREGATES = ("min", "prod")


# ----------------------------------------------------------------------------------------------
# step ends: from text to token positions
# ----------------------------------------------------------------------------------------------


def step_end_chars(response: str) -> list[int]:
    """Character index that ends each step of ``response``, aligned with ``step_labels``.

    Steps are the ``.``-separated pieces (as in ``split_steps``); a step ends at its ``.``, or at
    its last character when the text stops without one. A final ``Answer: n`` piece is not a step.
    """
    bounds = [i for i, ch in enumerate(response) if ch == "."] + [len(response)]
    pieces: list[tuple[str, int]] = []
    start = 0
    for b in bounds:
        text = response[start:b]
        if text.strip():
            end = b if b < len(response) else start + len(text.rstrip()) - 1
            pieces.append((text.strip(), end))
        start = b + 1
    if pieces and pieces[-1][0].startswith("Answer:"):
        pieces.pop()
    return [end for _, end in pieces]


def step_end_positions(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    """Token indices (within ``response``'s tokens + EOS) where the verifier reads each label.

    One index per step (the token holding the step's ``.``), then the EOS index for the final
    answer. Its length is ``len(step_labels(prompt, response)) + 1``.
    """
    enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    return _step_end_positions(response, enc["offset_mapping"])


def _step_end_positions(response: str, offsets: list[tuple[int, int]]) -> list[int]:
    # ``step_end_positions`` from the tokens' character spans (``offsets``, in order), tokenized already
    ends = [e for _, e in offsets]
    positions = []
    for char in step_end_chars(response):
        j = bisect.bisect_right(ends, char)  # the first token that ends after the character
        if j == len(offsets) or offsets[j][0] > char:
            raise ValueError(f"no token covers character {char} of {response!r}")
        positions.append(j)
    positions.append(len(offsets))  # the EOS appended after the response
    return positions


def solution_labels(world: ArithmeticWorld, prompt: str, response: str) -> list[int]:
    """Step labels (prefix-correct) plus one for the answer: 1 iff all steps and the answer are right."""
    labels = step_labels(prompt, response)
    answer_ok = world.final_answer(response) == world.answer(prompt)
    return labels + [int(answer_ok and all(labels))]


@dataclass
class VerifierBatch:
    input_ids: torch.Tensor
    """[B, T] prompt + response + EOS, left-padded"""
    attention_mask: torch.Tensor
    """[B, T]"""
    label_positions: torch.Tensor
    """[B, K] column of each step end (the last one is the EOS); padded with 0"""
    labels: torch.Tensor
    """[B, K] float step labels (the last one is the answer label)"""
    label_mask: torch.Tensor
    """[B, K] 1 where a label is real"""


def _tokenize(tokenizer: PreTrainedTokenizerBase, prompts: list[str],
              responses: list[str]) -> tuple[list[list[int]], list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids of the prompts, and ids and character spans of the responses, no special tokens.

    One call per list (one call per text costs more than the tokenizing); a fast tokenizer's own
    backend is asked directly, which skips the wrapper's conversion of every encoding."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        enc = tokenizer(responses, add_special_tokens=False, return_offsets_mapping=True)
        return (tokenizer(prompts, add_special_tokens=False)["input_ids"], enc["input_ids"], enc["offset_mapping"])
    encoded = backend.encode_batch(responses, add_special_tokens=False)
    return ([e.ids for e in backend.encode_batch(prompts, add_special_tokens=False)], [e.ids for e in encoded],
            [e.offsets for e in encoded])


def encode_solutions(tokenizer: PreTrainedTokenizerBase, world: ArithmeticWorld, prompts: list[str],
                     responses: list[str], max_length: int = 128) -> VerifierBatch:
    """Tokenize solutions (left-padded, as ``encode_pairs`` does) with their step-end positions."""
    check_tokenizer(tokenizer)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("empty batch: no solutions given")
    rows, pos_rows, lab_rows = [], [], []
    prompt_ids, response_ids, response_offsets = _tokenize(tokenizer, [world.format_prompt(p) for p in prompts],
                                                           list(responses))
    for prompt, response, p, ids, offsets in zip(prompts, responses, prompt_ids, response_ids, response_offsets):
        r = ids + [tokenizer.eos_token_id]
        positions = _step_end_positions(response, offsets)
        labels = solution_labels(world, prompt, response)
        if len(positions) != len(labels):
            raise ValueError(f"{len(positions)} step ends but {len(labels)} labels in {response!r}")
        if len(p) + len(r) > max_length:
            raise ValueError(f"solution longer than max_length={max_length} tokens: {prompt!r} {response!r}")
        rows.append(p + r)
        pos_rows.append([len(p) + j for j in positions])
        lab_rows.append(labels)
    width = max(len(r) for r in rows)
    k = max(len(x) for x in pos_rows)
    B = len(rows)
    # filled as numpy arrays, then turned into tensors once: a tensor per row costs more than the filling
    input_ids = np.full((B, width), tokenizer.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((B, width), dtype=np.int64)
    label_positions = np.zeros((B, k), dtype=np.int64)
    labels = np.zeros((B, k), dtype=np.float32)
    label_mask = np.zeros((B, k), dtype=np.float32)
    for i, (row, pos, lab) in enumerate(zip(rows, pos_rows, lab_rows)):
        shift = width - len(row)
        input_ids[i, shift:] = row
        attention_mask[i, shift:] = 1
        label_positions[i, : len(pos)] = [q + shift for q in pos]
        labels[i, : len(lab)] = lab
        label_mask[i, : len(lab)] = 1
    input_ids, attention_mask, label_positions, labels, label_mask = map(
        torch.from_numpy, (input_ids, attention_mask, label_positions, labels, label_mask))
    return VerifierBatch(input_ids, attention_mask, label_positions, labels, label_mask)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


@dataclass
class VerifierConfig:
    """How to train a PRM or an ORM."""

    kind: str = "prm"
    """``prm``: a BCE term at every step end; ``orm``: one BCE term at the EOS (answer correctness)"""
    max_steps: int = 300
    """optimizer steps"""
    batch_size: int = 32
    """solutions per step"""
    learning_rate: float = 3e-4
    """AdamW peak learning rate"""
    warmup_steps: int = 20
    """linear learning-rate warm-up"""
    schedule: str = "constant"
    """after the warm-up: ``constant``, or ``cosine`` decay to 0 at the last step"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_length: int = 128
    """longest prompt + solution in tokens"""
    seed: int = 0
    """seeds the head initialisation and the minibatch order"""
    checkpoint_every: int = 0
    """save a resumable checkpoint every this many steps (0: only at the end when output_dir is set)"""
    output_dir: str | None = None
    """where checkpoints go"""

    @classmethod
    def from_profile(cls, profile: Profile | None = None, **changes: object) -> VerifierConfig:
        # Checking "a op b = c" is a harder skill than a preference: a verifier gets more (and
        # larger) batches than a reward model, a higher peak rate and a cosine decay. On the CPU
        # profile that is 800 steps of 64 solutions at 2e-3, about 35 s on two idle cores.
        profile = profile or get_profile()
        values = {"max_steps": 8 * profile.reward_steps // 3, "batch_size": 2 * profile.batch_size,
                  "learning_rate": 2 * profile.pretrain_lr / 3, "schedule": "cosine", "max_length": profile.n_ctx}
        values.update(changes)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.max_steps < 0 or self.batch_size < 1:
            raise ValueError(f"max_steps must be >= 0 and batch_size >= 1, got {self.max_steps}, {self.batch_size}")


def verifier_logits(model: ScalarHeadModel, batch: VerifierBatch, rows_per_group: int = 32) -> torch.Tensor:
    """[B, K] logits at the step ends (the last real one of each row is at the EOS).

    ``model.values_at`` runs the last block only at those columns. Rows of similar length run
    together, each group cut to its longest row (as ``training.by_length`` does: the same logits up
    to float rounding, with most of the padding never computed); cutting a left-padded group's
    first columns moves its step ends as many columns to the left.
    """
    ids, mask, at = batch.input_ids, batch.attention_mask, batch.label_positions
    if ids.shape[0] <= rows_per_group or not bool(mask[:, -1].all()):
        return model.values_at(ids, mask, at)
    lengths = mask.sum(1)
    order = torch.argsort(lengths, stable=True)
    logits = []
    for rows in order.split(rows_per_group):
        width = int(lengths[rows].max())
        cut = ids.shape[1] - width
        # a padded label slot points at column 0: clamp it to a column that exists (it is never read)
        logits.append(model.values_at(ids[rows, cut:], mask[rows, cut:], (at[rows] - cut).clamp(min=0)))
    return torch.cat(logits)[torch.argsort(order)]


def verifier_loss(model: ScalarHeadModel, batch: VerifierBatch, kind: str) -> tuple[torch.Tensor, dict]:
    """BCE at every step end (PRM) or only at the EOS with the answer label (ORM)."""
    logits = verifier_logits(model, batch)
    if kind == "prm":
        mask = batch.label_mask
    else:
        # the ORM's only label sits at the last real column of each row: the answer/EOS one
        last = batch.label_mask.sum(1).long() - 1
        mask = torch.zeros_like(batch.label_mask).scatter_(1, last[:, None], 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
    loss = (bce * mask).sum() / mask.sum()
    with torch.no_grad():
        acc = (((logits > 0).float() == batch.labels).float() * mask).sum() / mask.sum()
    return loss, {"loss": loss.item(), "accuracy": acc.item(), "labels_per_solution": (mask.sum() / len(mask)).item()}


@dataclass
class VerifierResult:
    model: ScalarHeadModel
    metrics: list[dict]


def _checkpoint(folder: Path, model, optimizer, step: int, config: VerifierConfig, metrics: list[dict]) -> None:
    save_checkpoint(folder, {"": model}, {"step": step, "metrics": list(metrics), "config": asdict(config)},
                    optimizer=optimizer)


def train_verifier(config: VerifierConfig, model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase,
                   world: ArithmeticWorld, prompts: list[str], responses: list[str],
                   resume_from: str | Path | None = None, progress: bool = True) -> VerifierResult:
    """Train a PRM or ORM (``config.kind``) on solutions labelled by ``solution_labels``.

    Minibatch k draws rows with a generator seeded by (seed, k), so a resumed run sees the same
    batches as an uninterrupted one.
    """
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"need equal, non-zero numbers of prompts and responses: {len(prompts)}, {len(responses)}")
    device = get_device()
    model.to(device).train()
    data = encode_solutions(tokenizer, world, prompts, responses, config.max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start, metrics = 0, []
    if resume_from is not None:
        state = load_checkpoint(resume_from, {"": model}, optimizer)
        start, metrics = state["step"], list(state["metrics"])
    n = len(prompts)
    with fused_gelu(model):  # the same model, its activation in one kernel while it trains
        for step in tqdm(range(start, config.max_steps), desc=f"training {config.kind}", disable=not progress,
                         leave=False):
            # linear warm-up, then constant or a cosine decay to 0 at the last step
            lr = lr_at(step, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                       max_steps=config.max_steps, schedule=config.schedule)
            idx = torch.from_numpy(np.random.default_rng([config.seed, step]).choice(n, size=min(config.batch_size, n),
                                                                                       replace=False))
            batch = VerifierBatch(*(t[idx].to(device) for t in (data.input_ids, data.attention_mask,
                                                                data.label_positions, data.labels, data.label_mask)))
            loss, stats = verifier_loss(model, batch, config.kind)
            optimizer_step(optimizer, loss, model.parameters(), 1.0, lr)
            metrics.append({"step": step + 1, "lr": lr, **stats})
            if config.output_dir and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                _checkpoint(Path(config.output_dir) / f"step-{step + 1}", model, optimizer, step + 1, config, metrics)
    if config.output_dir:
        _checkpoint(Path(config.output_dir), model, optimizer, config.max_steps, config, metrics)
    return VerifierResult(model.eval(), metrics)


# ----------------------------------------------------------------------------------------------
# scoring and reranking
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def step_probabilities(model: ScalarHeadModel, tokenizer: PreTrainedTokenizerBase, world: ArithmeticWorld,
                       prompts: list[str], responses: list[str], max_length: int = 128,
                       batch_size: int = 256) -> list[np.ndarray]:
    """σ(logit) at each step end of each solution (the last entry is read at the EOS)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    with fused_gelu(model):  # GELU in one kernel: the same probabilities up to float rounding
        for s in range(0, len(prompts), batch_size):
            b = encode_solutions(tokenizer, world, prompts[s:s + batch_size], responses[s:s + batch_size], max_length)
            probs = torch.sigmoid(verifier_logits(model, VerifierBatch(*(t.to(device) for t in (
                b.input_ids, b.attention_mask, b.label_positions, b.labels, b.label_mask))))).cpu().numpy()
            counts = b.label_mask.sum(1).long().tolist()
            out.extend(probs[i, :c] for i, c in enumerate(counts))
    return out


def solution_scores(step_probs: list[np.ndarray], kind: str, aggregate: str = "min") -> np.ndarray:
    """One score per solution: PRM ``min`` or ``prod`` over its step probabilities; ORM the EOS one."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    empty = [i for i, p in enumerate(step_probs) if len(p) == 0]
    if empty:
        raise ValueError(f"solution {empty[0]} has no step probabilities (a verifier reads at least the EOS)")
    if kind == "orm":
        return np.array([p[-1] for p in step_probs])
    agg = np.min if aggregate == "min" else np.prod
    return np.array([float(agg(p)) for p in step_probs])


def majority_vote(answers: list[int | None], rng: np.random.Generator) -> int | None:
    """The most common final answer (missing answers don't vote); ties broken at random."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return rng.choice(sorted(a for a, c in counts.items() if c == top)).item()


def best_of_n_accuracy(world: ArithmeticWorld, prompts: list[str], candidates: list[list[str]],
                       scores: dict[str, np.ndarray], ns: list[int], n_subsets: int = 20,
                       seed: int = 0) -> pd.DataFrame:
    """Accuracy of picking one of N solutions, for each N, by each scorer and by majority vote.

    ``candidates[i]`` holds M ≥ max(ns) solutions to ``prompts[i]``; ``scores[name][i, j]`` scores
    solution j of prompt i. As in the PRM paper, each N is evaluated on ``n_subsets`` random subsets
    of the M solutions, which lowers the variance of the estimate.
    """
    if not prompts or not ns:
        raise ValueError(f"need prompts and values of N, got {len(prompts)} prompts and ns={ns}")
    m = len(candidates[0]) if candidates else 0
    if any(len(c) != m for c in candidates) or len(candidates) != len(prompts):
        raise ValueError("candidates must be one list of equal length M per prompt")
    if max(ns) > m or min(ns) < 1:
        raise ValueError(f"every N must be in [1, {m}], got {ns}")
    for name, s in scores.items():
        if np.shape(s) != (len(prompts), m):
            raise ValueError(f"scores[{name!r}] has shape {np.shape(s)}, expected ({len(prompts)}, {m})")
        if not np.isfinite(np.asarray(s, dtype=float)).all():
            raise ValueError(f"scores[{name!r}] contains NaN or infinity")
    correct = np.array([[world.final_answer(r) == world.answer(p) for r in c] for p, c in zip(prompts, candidates)])
    answers = [[world.final_answer(r) for r in c] for c in candidates]
    truth = [world.answer(p) for p in prompts]
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        hits = {name: 0.0 for name in [*scores, "majority"]}
        for _ in range(n_subsets):
            subset = np.stack([rng.choice(m, size=n, replace=False) for _ in prompts])
            for name, s in scores.items():
                s = np.asarray(s)
                pick = subset[np.arange(len(prompts)), s[np.arange(len(prompts))[:, None], subset].argmax(1)]
                hits[name] += correct[np.arange(len(prompts)), pick].mean()
            votes = [majority_vote([answers[i][j] for j in subset[i]], rng) for i in range(len(prompts))]
            hits["majority"] += np.mean([v == t for v, t in zip(votes, truth)])
        rows += [{"method": name, "n": n, "accuracy": h / n_subsets} for name, h in hits.items()]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# training solutions: the world's slipping solver, or samples of a policy
# ----------------------------------------------------------------------------------------------


@dataclass
class VerifierDataConfig:
    """Where a verifier's training solutions come from."""

    source: str = "world"
    """``world``: the world's own solver, which slips on 20% of steps; ``sft``: the arithmetic SFT policy"""
    mistakes: str = "miscalculation"
    """the world solver's slips (see ``MISTAKES``): ``miscalculation``, a step's result off by 1 or 2
    (``world.sample_response``); ``miscopy``, an operand off by 1 or 2 (``miscopying_solution``)"""
    n_prompts: int = 500
    """training problems (train split)"""
    samples_per_prompt: int = 4
    """solutions per problem"""
    balance_parity: bool = True
    """drop solutions whose final answer has the wrong parity (see ``parity_balanced``)"""
    temperature: float = 1.0
    """sampling temperature of the SFT generator"""
    max_new_tokens: int = 32
    """longest generated solution"""
    seed: int = 0
    """seeds the problems and the sampling"""

    @classmethod
    def from_profile(cls, profile: Profile | None = None, **changes: object) -> VerifierDataConfig:
        # The world's solver gives solutions for free: enough problems that a verifier sees each
        # solution about twice (a few thousand solutions let it memorise instead of check).
        profile = profile or get_profile()
        train = VerifierConfig.from_profile(profile)
        values = {"n_prompts": train.max_steps * train.batch_size // 4, "samples_per_prompt": 2,
                  "max_new_tokens": profile.max_new_tokens}
        values.update(changes)
        return cls(**values)


def parity_balanced(world: ArithmeticWorld, prompts: list[str], responses: list[str]) -> list[int]:
    """Indices of the solutions whose final answer has the parity of the right answer.

    The world splits problems by the parity of their operand sum (even: train, odd: test), so on
    training problems with only ``+`` and ``-`` the right answer is always even, and a slip of ±1
    makes it odd. A verifier trained on such data learns "even answers are right", which is
    backwards on every test problem. Keeping only wrong solutions of the right parity (slips that
    add up to an even number) makes answer parity carry no information about correctness, so the
    only way to tell right from wrong is to check the arithmetic. Both verifiers get the same
    filtered solutions.
    """
    keep = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        answer = world.final_answer(response)
        if answer is not None and (answer - world.answer(prompt)) % 2 == 0:
            keep.append(i)
    return keep


def miscopying_solution(prompt: str, rng: np.random.Generator, rate: float = 0.2) -> str:
    """A worked solution whose slips are miscopies: each step, with probability ``rate``, writes one
    of its two operands off by 1 or 2 and then computes correctly from what it wrote.

    ``world.sample_response`` slips the other way (right operands, wrong result). Spotting a miscopy
    takes no arithmetic, only a comparison of the written operand with the number it should repeat
    (from the problem or the previous step's result), which a small transformer can learn. Like a
    miscalculation, it propagates: later steps use the wrong value.
    """
    expr = parse_problem(prompt)
    parts = []
    while len(expr) > 1:
        i = next_reduction(expr)
        a, op, b = int(expr[i - 1]), str(expr[i]), int(expr[i + 1])
        if rng.random() < rate:
            offset = int(rng.choice([-2, -1, 1, 2]))
            if rng.random() < 0.5:
                a += offset
            else:
                b += offset
        c = solve_steps([a, op, b])[0][3]
        parts.append(format_step(a, op, b, c))
        expr[i - 1 : i + 2] = [c]
    return " " + ". ".join(parts) + f". Answer: {expr[0]}"


def sample_solutions(world: ArithmeticWorld, prompts: list[str], n: int, *, model=None, tokenizer=None,
                     max_new_tokens: int = 32, temperature: float = 1.0, seed: int = 0,
                     mistakes: str = "miscalculation") -> list[list[str]]:
    """``n`` solutions per prompt (``out[i][j]`` is solution j of ``prompts[i]``): sampled from
    ``model`` when given, else from the world's own slipping solver, whose slips are ``mistakes``
    (``miscalculation``: ``world.sample_response``; ``miscopy``: ``miscopying_solution``)."""
    if mistakes not in MISTAKES:
        raise ValueError(f"mistakes must be one of {MISTAKES}, got {mistakes!r}")
    if model is None:
        rng = np.random.default_rng(seed)
        solve = world.sample_response if mistakes == "miscalculation" else miscopying_solution
        return [[solve(p, rng) for _ in range(n)] for p in prompts]
    if mistakes != "miscalculation":
        raise ValueError("a model makes its own mistakes: `mistakes` applies to the world's solver only")
    texts = [world.format_prompt(p) for p in prompts for _ in range(n)]
    gen = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, temperature=temperature,
                   seed=seed, batch_size=128, progress=False)
    return [gen.responses[i * n:(i + 1) * n] for i in range(len(prompts))]

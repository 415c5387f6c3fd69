"""Evaluating aligned policies: gold win rates, judge win rates, MT-Bench-style scores, an arena.

Every number comes with a bootstrap interval, because a win rate on a few hundred prompts is noisy.

* ``gold_win_rate``: how often policy A's response beats policy B's on the same prompt under the
  world's gold utility (ties count one half). The percentile bootstrap resamples *prompts*:

      ŵ = (1/n) Σ_i o_i,   o_i ∈ {0, ½, 1};   CI = [q_{α/2}, q_{1−α/2}] of ŵ over resampled prompts.

* ``judge_win_rate``: the same with an automatic judge (AlpacaEval). Judges like length, so the
  length-controlled variant (AlpacaEval LC, Dubois et al. 2024) fits a logistic regression of the
  judge's preference on the length difference,

      P(A ≻ B | x) = σ(θ + φ · tanh(Δlen(x) / sd(Δlen))),

  and reports σ(θ): the win rate the judge would give if both responses had the same length.
* ``mt_bench``: each prompt is answered, then followed up ("Are you sure?") in a second turn; each
  turn is scored 1–10 (MT-Bench). The default scorer maps the gold utility to 1–10.
* ``fit_temperature``: temperature scaling of a reward model's P(a ≻ b) = σ(Δr / T), fitted on
  held-out pairs (the calibration fix used for classifiers, Guo et al. 2017).
* ``evaluate_policy``: one policy's samples on held-out prompts, their mean gold reward and their
  KL from a reference policy, KL ≈ mean of log π(y|x) − log π_ref(y|x) over y ~ π.
* ``arena_leaderboard``: Chatbot-Arena ratings. A Bradley–Terry model is fitted on the pairwise
  battles (``rlhf_mini.theory.bradley_terry.fit_bradley_terry``), bootstrapped over battles (or
  over prompts, when many battles share one), and put on the Elo scale: rating = 400/ln 10 · s + 1000.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from rlhf_mini.batch import TokenBatch
from rlhf_mini.logprobs import sequence_logprobs
from rlhf_mini.sampling import generate
from rlhf_mini.theory.bradley_terry import bootstrap_interval, fit_bradley_terry
from rlhf_mini.worlds.base import World

ELO_SCALE = 400.0 / math.log(10.0)
ELO_BASE = 1000.0


# ----------------------------------------------------------------------------------------------
# bootstrap helpers
# ----------------------------------------------------------------------------------------------


def _check_paired(prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> None:
    if not (len(prompts) == len(responses_a) == len(responses_b)):
        raise ValueError(f"prompts, responses_a and responses_b differ in length: "
                         f"{len(prompts)}, {len(responses_a)}, {len(responses_b)}")
    if len(prompts) == 0:
        raise ValueError("no prompts given: a win rate needs at least one comparison")


def _check_boot(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def fit_temperature(margins: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """Temperature scaling for a Bradley–Terry reward model (Guo et al. 2017, for pairs).

    `margins` are r(chosen) − r(rejected) on calibration pairs that the model was not trained on.
    Returns the T that minimises the pairwise log-loss  (1/n) Σ log(1 + exp(−margin_i / T)), so
    that σ(Δr / T) is the calibrated P(a ≻ b). T > 1 means the model was overconfident; T < 1,
    too timid. The loss is convex in 1/T, so a golden-section search over log T finds the minimum.
    """
    margins = np.asarray(margins, dtype=float)
    if margins.ndim != 1 or len(margins) == 0:
        raise ValueError(f"margins must be a non-empty 1-D array, got shape {margins.shape}")
    if not np.isfinite(margins).all():
        raise ValueError(f"margins has {int((~np.isfinite(margins)).sum())} non-finite values")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")

    def loss(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -margins / math.exp(log_t))))

    a, b = math.log(low), math.log(high)
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(100):  # shrinks the bracket by 0.618 per step: far below 1e-9 in log T
        c, d = b - golden * (b - a), a + golden * (b - a)
        if loss(c) < loss(d):
            b = d
        else:
            a = c
    return math.exp((a + b) / 2)


def bootstrap_mean(outcomes: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict[str, float]:
    """Mean of ``outcomes`` with a percentile-bootstrap interval (resampling the outcomes)."""
    outcomes = np.asarray(outcomes, dtype=float)
    if outcomes.ndim != 1 or outcomes.size == 0:
        raise ValueError(f"outcomes must be a non-empty 1-D array, got shape {outcomes.shape}")
    bad = np.flatnonzero(~np.isfinite(outcomes))
    if bad.size:
        raise ValueError(f"outcomes must be finite; entry {bad[0]} is {outcomes[bad[0]]}")
    _check_boot(n_boot, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, outcomes.size, size=(n_boot, outcomes.size))
    means = outcomes[idx].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"win_rate": float(outcomes.mean()), "ci_low": float(low), "ci_high": float(high),
            "n": int(outcomes.size)}


# ----------------------------------------------------------------------------------------------
# win rates
# ----------------------------------------------------------------------------------------------


def gold_win_rate(world: World, prompts: Sequence[str], responses_a: Sequence[str],
                  responses_b: Sequence[str], n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """Fraction of prompts where A's response has higher gold utility than B's (ties count ½).

    Returns ``win_rate``, ``ci_low``, ``ci_high`` (percentile bootstrap over prompts) and ``n``.
    """
    _check_paired(prompts, responses_a, responses_b)
    gold_a = world.gold_rewards(list(prompts), list(responses_a))
    gold_b = world.gold_rewards(list(prompts), list(responses_b))
    outcomes = np.where(np.isclose(gold_a, gold_b), 0.5, (gold_a > gold_b).astype(float))
    return bootstrap_mean(outcomes, n_boot=n_boot, seed=seed, level=level)


Judge = Callable[[str, str, str], float]
"""A judge maps (prompt, response_a, response_b) to P(A ≻ B) in [0, 1] (a hard 0/1 verdict works)."""


def response_length(response: str) -> int:
    """Length in words: what AlpacaEval's length control measures (it uses tokens; words do here)."""
    return len(response.split())


def fit_length_controlled(preferences: np.ndarray, length_diff: np.ndarray,
                          n_iter: int = 50) -> tuple[float, float]:
    """Logistic regression p = σ(θ + φ·tanh(Δlen / sd)) on soft labels by Newton's method.

    Returns (θ, φ). A tiny ridge on both coefficients keeps the fit finite when the judge is
    unanimous (then σ(θ) tends to 0 or 1, as it should).
    """
    y = np.asarray(preferences, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    if y.ndim != 1 or y.size == 0 or y.shape != d.shape:
        raise ValueError(f"preferences and length_diff must be non-empty 1-D arrays of one length, "
                         f"got shapes {y.shape} and {d.shape}")
    if not (np.isfinite(y).all() and np.isfinite(d).all()):
        raise ValueError("preferences and length_diff must be finite")
    if ((y < 0) | (y > 1)).any():
        raise ValueError(f"preferences must be probabilities in [0, 1]; entry {np.flatnonzero((y < 0) | (y > 1))[0]} "
                         f"is {y[(y < 0) | (y > 1)][0]}")
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    X = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    ridge = 1e-3 * len(y)
    for _ in range(n_iter):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        grad = X.T @ (y - p) - ridge * beta
        hess = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def judge_win_rate(judge: Judge, prompts: Sequence[str], responses_a: Sequence[str],
                   responses_b: Sequence[str], *, length_controlled: bool = False,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """AlpacaEval: the judge's average preference for A over B, with a bootstrap interval.

    ``length_controlled=True`` reports σ(θ) of ``fit_length_controlled`` instead: the judge's
    preference at equal length. The extra key ``length_coef`` is φ, the judge's pull towards the
    longer response.
    """
    _check_paired(prompts, responses_a, responses_b)
    _check_boot(n_boot, level)
    prefs = np.array([float(judge(p, a, b)) for p, a, b in zip(prompts, responses_a, responses_b)])
    if np.any((prefs < 0) | (prefs > 1)) or not np.all(np.isfinite(prefs)):
        raise ValueError("the judge must return probabilities in [0, 1]")
    if not length_controlled:
        return bootstrap_mean(prefs, n_boot=n_boot, seed=seed, level=level)
    diff = np.array([response_length(a) - response_length(b) for a, b in zip(responses_a, responses_b)],
                    dtype=float)

    def lc(idx: np.ndarray) -> tuple[float, float]:
        theta, phi = fit_length_controlled(prefs[idx], diff[idx])
        return 1.0 / (1.0 + math.exp(-theta)), phi

    rate, phi = lc(np.arange(len(prefs)))
    rng = np.random.default_rng(seed)
    boots = [lc(rng.integers(0, len(prefs), size=len(prefs)))[0] for _ in range(n_boot)]
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {"win_rate": rate, "ci_low": float(low), "ci_high": float(high), "n": len(prefs),
            "length_coef": phi, "raw_win_rate": float(prefs.mean())}


def length_biased_judge(world: World, length_bias: float = 0.3, temperature: float = 0.5) -> Judge:
    """A simulated LLM judge: gold-driven, plus a pull of ``length_bias`` per extra word.

        P(A ≻ B) = σ((u(A) − u(B)) / T + length_bias · (len(A) − len(B)))

    It stands in for GPT-4-as-a-judge, whose preference for longer answers AlpacaEval LC corrects.
    """
    def judge(prompt: str, a: str, b: str) -> float:
        z = (world.gold_reward(prompt, a) - world.gold_reward(prompt, b)) / temperature
        z += length_bias * (response_length(a) - response_length(b))
        return float(1.0 / (1.0 + math.exp(-z)))
    return judge


# ----------------------------------------------------------------------------------------------
# MT-Bench-style multi-turn scoring
# ----------------------------------------------------------------------------------------------

FOLLOW_UP = "Are you sure?"


def follow_up_context(world: World, prompt: str, first_response: str, follow_up: str = FOLLOW_UP,
                      eos: str = "<|endoftext|>") -> str:
    """The model-ready text of turn 2: turn 1, its answer ended by EOS, then the follow-up."""
    return f"{world.format_prompt(prompt)}{first_response}{eos}<|user|>{follow_up}\n<|assistant|>"


def gold_score_1_to_10(world: World, low: float = -4.0, high: float = 3.0) -> Callable[[str, str], float]:
    """A rubric scorer: the gold utility mapped linearly from [low, high] onto 1–10, clipped."""
    if high <= low:
        raise ValueError(f"high must exceed low, got low={low}, high={high}")

    def score(prompt: str, response: str) -> float:
        u = world.gold_reward(prompt, response)
        return float(np.clip(1.0 + 9.0 * (u - low) / (high - low), 1.0, 10.0))
    return score


def mt_bench(world: World, respond: Callable[[list[str]], list[str]], prompts: Sequence[str], *,
             scorer: Callable[[str, str], float] | None = None, follow_up: str = FOLLOW_UP,
             n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """Two-turn MT-Bench-style scores.

    ``respond`` maps a list of model-ready contexts to responses. Turn 1 answers the prompt; turn 2
    answers ``follow_up`` after seeing its own turn-1 answer, and is judged against the original
    question (a good second answer restates the right fact, or the refusal). Each turn is scored
    1–10 by ``scorer(prompt, response)`` (default: ``gold_score_1_to_10``).
    """
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    scorer = scorer or gold_score_1_to_10(world)
    prompts = list(prompts)
    first = respond([world.format_prompt(p) for p in prompts])
    if len(first) != len(prompts):
        raise ValueError(f"respond returned {len(first)} responses for {len(prompts)} prompts")
    second = respond([follow_up_context(world, p, r, follow_up) for p, r in zip(prompts, first)])
    if len(second) != len(prompts):
        raise ValueError(f"respond returned {len(second)} second-turn responses for {len(prompts)} prompts")
    s1 = np.array([scorer(p, r) for p, r in zip(prompts, first)])
    s2 = np.array([scorer(p, r) for p, r in zip(prompts, second)])
    out: dict[str, object] = {
        "turn1": float(s1.mean()), "turn2": float(s2.mean()), "overall": float((s1.mean() + s2.mean()) / 2),
        "turn1_ci": tuple(bootstrap_mean(s1, n_boot, seed)[k] for k in ("ci_low", "ci_high")),
        "turn2_ci": tuple(bootstrap_mean(s2, n_boot, seed)[k] for k in ("ci_low", "ci_high")),
        "first_responses": first, "second_responses": second,
    }
    return out


# ----------------------------------------------------------------------------------------------
# the arena: Bradley–Terry ratings from pairwise battles
# ----------------------------------------------------------------------------------------------


def _battle_arrays(battles: Sequence[tuple[str, str, float]], policy_names: Sequence[str]):
    index = {name: i for i, name in enumerate(policy_names)}
    if len(index) != len(policy_names):
        raise ValueError(f"policy_names has duplicates: {list(policy_names)}")
    if len(policy_names) < 2:
        raise ValueError("an arena needs at least two policies")
    if len(battles) == 0:
        raise ValueError("no battles given")
    a, b, o = [], [], []
    for k, battle in enumerate(battles):
        if len(battle) != 3:
            raise ValueError(f"battle {k} must be (policy_a, policy_b, outcome), got {battle!r}")
        pa, pb, outcome = battle
        for name in (pa, pb):
            if name not in index:
                raise ValueError(f"battle {k}: unknown policy {name!r}; known: {list(policy_names)}")
        if pa == pb:
            raise ValueError(f"battle {k}: policy {pa!r} against itself")
        if outcome not in (0, 0.5, 1):
            raise ValueError(f"battle {k}: outcome must be 1 (a wins), 0 (b wins) or 0.5 (tie), got {outcome!r}")
        a.append(index[pa])
        b.append(index[pb])
        o.append(float(outcome))
    return np.array(a), np.array(b), np.array(o)


def _fit_battles(a: np.ndarray, b: np.ndarray, o: np.ndarray, n: int, l2: float) -> np.ndarray:
    # A tie is half a win each way: every battle becomes two rows, a win twice or one win each way.
    winners = np.concatenate([np.where(o >= 0.5, a, b), np.where(o > 0.5, a, b)])
    losers = np.concatenate([np.where(o >= 0.5, b, a), np.where(o > 0.5, b, a)])
    return fit_bradley_terry(winners, losers, n, l2=l2)


def arena_leaderboard(battles: Sequence[tuple[str, str, float]], policy_names: Sequence[str],
                      n_boot: int = 200, seed: int = 0, *, groups: Sequence[object] | None = None,
                      l2: float = 0.01, level: float = 0.95) -> pd.DataFrame:
    """Chatbot-Arena leaderboard: Elo-scaled Bradley–Terry ratings with bootstrap intervals.

    ``battles`` are ``(policy_a, policy_b, outcome)`` with outcome 1 (a wins), 0 (b wins) or 0.5.
    ``groups`` labels each battle with what it shares with others, such as its prompt: battles on
    one prompt are correlated (a hard prompt makes every policy lose to the one that got it
    right), so the bootstrap then resamples whole groups. Resampling correlated battles one by
    one treats them as independent and gives intervals that are too narrow. Without ``groups``
    each battle is its own group, as in a live arena where every vote has a new prompt.
    A small ridge ``l2`` keeps ratings finite when a policy never loses (set 0 for the plain MLE).
    Returns one row per policy, best first: ``policy``, ``elo``, ``ci_low``, ``ci_high``,
    ``battles``, ``win_rate``. A policy without battles has no rating: NaN, listed last.
    """
    _check_boot(n_boot, level)
    a, b, o = _battle_arrays(battles, policy_names)
    members = None  # each battle its own group
    if groups is not None:
        if len(groups) != len(o):
            raise ValueError(f"groups has {len(groups)} labels for {len(o)} battles")
        _, label = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        members = [np.flatnonzero(label == g) for g in range(label.max() + 1)]
    n = len(policy_names)
    strengths = _fit_battles(a, b, o, n, l2)
    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, n))
    n_groups = len(o) if members is None else len(members)
    for k in range(n_boot):
        picks = rng.integers(0, n_groups, size=n_groups)
        idx = picks if members is None else np.concatenate([members[g] for g in picks])
        samples[k] = _fit_battles(a[idx], b[idx], o[idx], n, l2)
    low, high = bootstrap_interval(samples, level=level)
    played = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    wins = np.bincount(a, weights=o, minlength=n) + np.bincount(b, weights=1 - o, minlength=n)
    table = pd.DataFrame({
        "policy": list(policy_names),
        "elo": ELO_BASE + ELO_SCALE * strengths,
        "ci_low": ELO_BASE + ELO_SCALE * low,
        "ci_high": ELO_BASE + ELO_SCALE * high,
        "battles": played,
        "win_rate": np.divide(wins, played, out=np.full(n, np.nan), where=played > 0),
    })
    # the ridge would pin an unplayed policy at exactly ELO_BASE with a zero-width interval
    table.loc[played == 0, ["elo", "ci_low", "ci_high"]] = np.nan
    return table.sort_values("elo", ascending=False, na_position="last").reset_index(drop=True)


def gold_battles(world: World, prompts: Sequence[str], responses: dict[str, Sequence[str]],
                 labeler: object | None = None) -> list[tuple[str, str, float]]:
    """Every pair of policies battles on every prompt; the gold utility decides (ties ½).

    Battles come prompt by prompt: all pairs on ``prompts[0]``, then on ``prompts[1]``, and so on
    (``battle_prompts`` gives each battle's prompt index, the ``groups`` of ``arena_leaderboard``).
    With ``labeler`` (a ``SimulatedLabeler``) its noisy ``compare`` decides instead, like a crowd.
    """
    names = list(responses)
    for name in names:
        if len(responses[name]) != len(prompts):
            raise ValueError(f"policy {name!r} has {len(responses[name])} responses for {len(prompts)} prompts")
    gold = {name: world.gold_rewards(list(prompts), list(responses[name])) for name in names}
    battles = []
    for i, prompt in enumerate(prompts):
        for x in range(len(names)):
            for y in range(x + 1, len(names)):
                na, nb = names[x], names[y]
                if labeler is not None:
                    outcome = float(labeler.compare(world, prompt, responses[na][i], responses[nb][i]))
                elif np.isclose(gold[na][i], gold[nb][i]):
                    outcome = 0.5
                else:
                    outcome = float(gold[na][i] > gold[nb][i])
                battles.append((na, nb, outcome))
    return battles


def battle_prompts(n_prompts: int, n_policies: int) -> np.ndarray:
    """The prompt index of each battle that ``gold_battles`` returns, in its order."""
    if n_prompts < 0 or n_policies < 2:
        raise ValueError(f"need n_prompts >= 0 and n_policies >= 2, got {n_prompts}, {n_policies}")
    return np.repeat(np.arange(n_prompts), n_policies * (n_policies - 1) // 2)


# --------------------------------------------------------------------------------------------
# One policy against its reference: gold reward and KL
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_policy(policy, ref_policy, tokenizer, world, prompts: list[str], *, max_new_tokens: int = 32,
                    temperature: float = 1.0, batch_size: int = 128, seed: int = 0,
                    progress: bool = False) -> dict[str, Any]:
    """Sample one response per prompt from ``policy`` and measure it.

    Returns ``gold`` (mean gold reward), ``kl`` (mean of log π(y|x) − log π_ref(y|x) over the
    samples: an unbiased estimate of the sequence-level KL(π ‖ π_ref) in nats), ``length`` (mean
    response tokens), ``truncated`` (fraction without EOS), plus the ``responses`` and the per-sample
    ``gold_rewards`` and ``kls``.
    """
    formatted = [world.format_prompt(p) for p in prompts]
    gen = generate(policy, tokenizer, formatted, max_new_tokens=max_new_tokens, temperature=temperature,
                   batch_size=batch_size, seed=seed, progress=progress)
    device = next(policy.parameters()).device
    kls = []
    for start in range(0, len(prompts), batch_size):
        b = TokenBatch(*(t[start:start + batch_size] for t in
                         (gen.batch.input_ids, gen.batch.attention_mask, gen.batch.response_mask))).to(device)
        if not bool(b.response_mask.any()):
            kls.append(torch.zeros(len(b)))
            continue
        lp = sequence_logprobs(policy, b.input_ids, b.attention_mask, b.response_mask, temperature=temperature)
        lr = sequence_logprobs(ref_policy, b.input_ids, b.attention_mask, b.response_mask, temperature=temperature)
        kls.append((lp - lr).float().cpu())
    kl = torch.cat(kls).numpy()
    gold = world.gold_rewards(list(prompts), gen.responses)
    return {"gold": float(gold.mean()), "kl": float(kl.mean()),
            "length": float(gen.batch.response_mask.sum(1).float().mean()),
            "truncated": float(gen.truncated.float().mean()),
            "responses": gen.responses, "gold_rewards": gold, "kls": kl}

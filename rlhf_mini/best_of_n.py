"""Best-of-N sampling: draw N responses, keep the one a scorer likes best.

Best-of-N (BoN) is the simplest way to optimise a reward with no training at all: for each prompt
sample y_1 … y_N ~ π(·|x) and return argmax_i r(x, y_i). It is also a yardstick: Gao et al. (2022)
compare every other optimiser against it at equal KL from π. For a continuous reward (no ties) its
distribution is π_BoN(y) = π(y) · N · F(r(y))^(N−1), with F the CDF of r under π, so

    KL(π_BoN ‖ π) = E_BoN[log N + (N−1) log F] = log N − (N − 1)/N          (``sampling.best_of_n_kl``)

whatever π and r are (Stiennon et al. 2020, Appendix G.3; Beirami et al. 2024 show it is an upper
bound when rewards tie).

Measured exactly. With ties (a discrete reward: identical responses, or a gold score that takes a
handful of values), BoN only moves probability *between reward levels*; within a level it keeps π's
proportions (the tie-break is uniform). So the KL is the KL of the level distribution:

    p(v) = P_π(r = v),   p_BoN(v) = F(v)^N − F(v⁻)^N,   KL = Σ_v p_BoN(v) log(p_BoN(v) / p(v)),

with F(v) = P(r ≤ v) and F(v⁻) = P(r < v). ``measured_best_of_n_kl`` evaluates this on the empirical
distribution of a pool of M samples per prompt (ranks = levels), averaged over prompts. Without
ties it is the analytic value up to a discretisation error that vanishes as M grows (below 0.5 %
for N ≤ 32 at M = 128); with ties it is smaller than log N − (N − 1)/N.

The unbiased estimator of the BoN expected reward (``best_of_n_expected``): from a pool of M ≥ N
samples sorted by the proxy score, the best of a random N-subset is the i-th smallest with
probability C(i−1, N−1)/C(M, N). Weighting any value (the proxy itself, or the gold reward of the
same samples) with these probabilities is an unbiased estimate of its mean under BoN-N sampling
(a U-statistic over all N-subsets of the pool), so one pool of 256 answers the question for every
N ≤ 256 (Nakano et al. 2021, Gao et al. 2022).

``best_of_n_sweep`` runs that measurement from a ``BestOfNConfig``: one pool per prompt, then the
proxy, the gold reward of the proxy's pick and the KL, measured and analytic, for every N.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_mini.config import Profile
from rlhf_mini.sampling import best_of_n_kl
from rlhf_mini.scoring import Scorer, sample_pool, score_pool


def _log_binom(a: np.ndarray, b: int) -> np.ndarray:
    """log C(a, b) elementwise, via log-gamma (no overflow at a = 256)."""
    return np.array([math.lgamma(x + 1) - math.lgamma(b + 1) - math.lgamma(x - b + 1) for x in a])


__all__ = ["BestOfNConfig", "BestOfNResult", "BestOfNSweep", "best_of_n", "best_of_n_expected",
           "best_of_n_sweep", "load_best_of_n_sweep", "measured_best_of_n_kl"]


@dataclass
class BestOfNResult:
    prompts: list[str]
    """the raw prompts, one per row"""
    responses: list[str]
    """the chosen (highest-scoring) response for each prompt"""
    chosen_index: np.ndarray
    """[P] index of the chosen sample among the n"""
    samples: list[list[str]]
    """[P][n] every sampled response"""
    scores: np.ndarray
    """[P, n] the scorer's value for every sample"""

    @property
    def chosen_scores(self) -> np.ndarray:
        """[P] the score of each chosen response (the row maximum)."""
        return self.scores[np.arange(len(self.prompts)), self.chosen_index]


def best_of_n(policy, tokenizer, world, prompts: list[str], n: int, scorer: Scorer, *,
              max_new_tokens: int = 32, temperature: float = 1.0, top_k: int = 0, batch_size: int = 256,
              seed: int = 0, progress: bool = True) -> BestOfNResult:
    """Sample ``n`` responses per prompt and keep the argmax under ``scorer``.

    Ties go to the first sample with the top score; the samples are exchangeable, so this is the
    same as breaking ties uniformly at random.
    """
    samples = sample_pool(policy, tokenizer, world, prompts, n, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_k=top_k, batch_size=batch_size, seed=seed,
                          progress=progress)
    scores = score_pool(scorer, prompts, samples)
    chosen = scores.argmax(axis=1)
    return BestOfNResult(list(prompts), [samples[i][j] for i, j in enumerate(chosen)], chosen, samples, scores)


def _check_pool(scores: np.ndarray, n: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be [prompts, samples], got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return scores


def measured_best_of_n_kl(scores: np.ndarray, n: int) -> float:
    """KL(π_BoN ‖ π) measured exactly on the empirical reward levels of a sample pool.

    ``scores``: ``[P, M]`` rewards of M samples per prompt from π (or ``[M]`` for one prompt).
    For each prompt, the distinct values are the levels v with empirical mass p(v); BoN-n puts mass
    F(v)^n − F(v⁻)^n on level v. Returns the mean over prompts of Σ_v p_BoN log(p_BoN / p). With no
    ties this is ≈ log n − (n − 1)/n; ties make it smaller (and n = 1 gives 0).
    """
    scores = _check_pool(scores, n)
    m = scores.shape[1]
    kls = []
    for row in scores:
        _, counts = np.unique(row, return_counts=True)  # levels in increasing order
        cdf = np.cumsum(counts) / m
        cdf_below = cdf - counts / m
        p = counts / m
        p_bon = cdf**n - cdf_below**n
        keep = p_bon > 0
        kls.append(float(np.sum(p_bon[keep] * np.log(p_bon[keep] / p[keep]))))
    return float(np.mean(kls))


def best_of_n_expected(proxy: np.ndarray, n: int, values: np.ndarray | None = None) -> np.ndarray:
    """Unbiased estimate, per prompt, of E[value of the proxy-best of n samples] from a pool of M ≥ n.

    ``proxy``: ``[P, M]`` selection scores; ``values``: ``[P, M]`` what to average (defaults to the
    proxy itself; pass gold rewards of the same samples to get the gold reward of BoN-by-proxy).
    Sorted by proxy, sample i (1-based) is the best of a uniformly random n-subset with probability
    C(i−1, n−1)/C(M, n). Tied proxies are broken uniformly at random, in expectation: the tied
    samples share their weights equally, so the estimate does not depend on the pool's order.
    Returns ``[P]``.
    """
    proxy = _check_pool(proxy, n)
    if values is None:
        values = proxy
    else:
        values = np.asarray(values, dtype=float)
        if values.shape != proxy.shape and values.shape != proxy.shape[1:]:
            raise ValueError(f"values must have the proxy's shape {proxy.shape}, got {values.shape}")
        values = values.reshape(proxy.shape)
        if not np.isfinite(values).all():
            raise ValueError("values contain NaN or infinity")
    m = proxy.shape[1]
    if n > m:
        raise ValueError(f"n = {n} needs a pool of at least n samples per prompt, got {m}")
    i = np.arange(1, m + 1)
    log_w = np.full(m, -np.inf)
    ok = i >= n
    # log C(i−1, n−1) − log C(m, n), in log space so that m = 256 does not overflow
    log_w[ok] = _log_binom(i[ok] - 1, n - 1) - _log_binom(np.array([m]), n)[0]
    weights = np.exp(log_w)
    order = np.argsort(proxy, axis=1, kind="stable")
    sorted_proxy = np.take_along_axis(proxy, order, axis=1)
    sorted_values = np.take_along_axis(values, order, axis=1)
    row_weights = np.tile(weights, (proxy.shape[0], 1))
    for row in np.flatnonzero((np.diff(sorted_proxy, axis=1) == 0).any(axis=1)):
        _, level = np.unique(sorted_proxy[row], return_inverse=True)
        row_weights[row] = (np.bincount(level, weights) / np.bincount(level))[level]
    return (sorted_values * row_weights).sum(axis=1)


# --------------------------------------------------------------------------------------------
# A sweep over N from one pool
# --------------------------------------------------------------------------------------------


@dataclass
class BestOfNConfig:
    """Best-of-N measured for several N at once, from one pool of samples per prompt."""

    ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    """the values of N to report"""
    pool_size: int = 64
    """M samples per prompt; at least max(ns), and the estimates for N near M are the noisiest"""
    n_prompts: int = 128
    """held-out (test-split) prompts"""
    max_new_tokens: int = 32
    """longest sampled response"""
    temperature: float = 1.0
    """sampling temperature of the pool"""
    top_k: int = 0
    """top-k sampling of the pool (0: the full distribution, so the KL formulas hold)"""
    batch_size: int = 256
    """rows generated per batch"""
    seed: int = 0
    """seeds the prompts and the sampling"""

    @classmethod
    def from_profile(cls, profile: Profile, **changes: Any) -> BestOfNConfig:
        """Prompt count and generation length read from the profile; any field overridable."""
        values: dict[str, Any] = {"n_prompts": min(profile.n_eval_prompts, 128),
                                  "max_new_tokens": profile.max_new_tokens}
        values.update(changes)
        return cls(**values)

    def __post_init__(self) -> None:
        self.ns = tuple(int(n) for n in self.ns)
        if not self.ns or min(self.ns) < 1:
            raise ValueError(f"BestOfNConfig.ns must be values >= 1, got {self.ns}")
        if self.pool_size < max(self.ns):
            raise ValueError(f"BestOfNConfig.pool_size ({self.pool_size}) must be at least the largest N "
                             f"({max(self.ns)})")
        for name in ("n_prompts", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"BestOfNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"BestOfNConfig.temperature must be > 0, got {self.temperature}")


@dataclass
class BestOfNSweep:
    config: BestOfNConfig
    prompts: list[str]
    samples: list[list[str]]
    """[P][M] the pool"""
    proxy: np.ndarray
    """[P, M] the scorer's value of every pooled sample"""
    gold: np.ndarray
    """[P, M] the world's gold reward of every pooled sample"""
    metrics: list[dict[str, float]]
    """one row per N: ``n``, ``proxy``, ``gold``, ``kl_measured``, ``kl_analytic``"""

    def save(self, folder: str | Path) -> Path:
        """``metrics.json`` and the pool with its scores as ``pool.jsonl`` (one line per prompt)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps({"config": asdict(self.config), "rows": self.metrics},
                                                        indent=1))
        with open(folder / "pool.jsonl", "w") as f:
            for prompt, row, proxy, gold in zip(self.prompts, self.samples, self.proxy, self.gold):
                f.write(json.dumps({"prompt": prompt, "responses": row, "proxy": proxy.tolist(),
                                    "gold": gold.tolist()}) + "\n")
        return folder


def _sweep_metrics(proxy: np.ndarray, gold: np.ndarray, ns: tuple[int, ...]) -> list[dict[str, float]]:
    return [{"n": n, "proxy": float(best_of_n_expected(proxy, n).mean()),
             "gold": float(best_of_n_expected(proxy, n, gold).mean()),
             "kl_measured": measured_best_of_n_kl(proxy, n), "kl_analytic": best_of_n_kl(n)} for n in ns]


def best_of_n_sweep(config: BestOfNConfig, policy, tokenizer, world, scorer: Scorer, *,
                    prompts: list[str] | None = None, progress: bool = True) -> BestOfNSweep:
    """Sample a pool of ``config.pool_size`` per prompt, score it, and measure best-of-N for each N.

    The proxy and gold columns are the unbiased pool estimates (``best_of_n_expected``) of the
    proxy score and the gold reward of the proxy's pick; ``kl_measured`` is ``measured_best_of_n_kl``
    on the proxy scores. ``prompts`` defaults to ``config.n_prompts`` test-split prompts.
    """
    if prompts is None:
        prompts = world.prompts(config.n_prompts, seed=config.seed, split="test")
    samples = sample_pool(policy, tokenizer, world, prompts, config.pool_size, max_new_tokens=config.max_new_tokens,
                          temperature=config.temperature, top_k=config.top_k, batch_size=config.batch_size,
                          seed=config.seed, progress=progress)
    proxy = score_pool(scorer, prompts, samples)
    gold = score_pool(world.gold_rewards, prompts, samples)
    return BestOfNSweep(config, list(prompts), samples, proxy, gold, _sweep_metrics(proxy, gold, config.ns))


def load_best_of_n_sweep(folder: str | Path) -> BestOfNSweep:
    """Read back what ``BestOfNSweep.save`` wrote; the metrics are recomputed from the pool."""
    folder = Path(folder)
    config = BestOfNConfig(**json.loads((folder / "metrics.json").read_text())["config"])
    prompts, samples, proxy, gold = [], [], [], []
    with open(folder / "pool.jsonl") as f:
        for line_no, line in enumerate(f, 1):
            row = json.loads(line)
            for key in ("prompt", "responses", "proxy", "gold"):
                if key not in row:
                    raise ValueError(f"{folder / 'pool.jsonl'}, line {line_no}: missing field {key!r}")
            if not len(row["responses"]) == len(row["proxy"]) == len(row["gold"]) == config.pool_size:
                raise ValueError(f"{folder / 'pool.jsonl'}, line {line_no}: 'responses', 'proxy' and 'gold' "
                                 f"must each have pool_size = {config.pool_size} entries")
            prompts.append(row["prompt"])
            samples.append(row["responses"])
            proxy.append(row["proxy"])
            gold.append(row["gold"])
    proxy_arr, gold_arr = np.array(proxy, dtype=float), np.array(gold, dtype=float)
    return BestOfNSweep(config, prompts, samples, proxy_arr, gold_arr, _sweep_metrics(proxy_arr, gold_arr, config.ns))

"""Absolute scores vs pairwise comparisons from miscalibrated labelers.

Labeler h has a personal offset o_h and scale c_h. Rating item i on a 0-10 scale, they report

    y = clip(round(5 + o_h + c_h * g * q_i + eps), 0, 10),      eps ~ N(0, noise^2),

and comparing items a and b they prefer a with the Bradley-Terry probability

    P(a > b) = sigma(c_h * g * (q_a - q_b) / noise)

(the same internal utility and noise, read out as a difference). The offset cancels in every
comparison and the scale only changes how noisy it is, so comparisons from different labelers share
one scale; raw scores do not, and when labelers see different subsets of items the average score
mixes item quality with who happened to rate it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_mini.theory.bradley_terry import fit_bradley_terry, win_probability


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: the Pearson correlation of the ranks (no tie correction)."""
    ra = np.argsort(np.argsort(np.asarray(a)))
    rb = np.argsort(np.argsort(np.asarray(b)))
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class LabelerStudy:
    quality: np.ndarray  # true item quality q_i
    score_items: np.ndarray  # item rated by each absolute-score label
    scores: np.ndarray  # the 0-10 scores
    score_labeler: np.ndarray
    winners: np.ndarray  # one comparison per label, same labelers and item subsets
    losers: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray

    def mean_scores(self) -> np.ndarray:
        """Average score per item (NaN for items nobody scored)."""
        n = self.quality.size
        counts = np.bincount(self.score_items, minlength=n)
        sums = np.bincount(self.score_items, weights=self.scores, minlength=n)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def bt_strengths(self, l2: float = 0.1) -> np.ndarray:
        return fit_bradley_terry(self.winners, self.losers, self.quality.size, l2=l2)


def simulate_labelers(
    n_items: int = 30,
    n_labelers: int = 10,
    items_per_labeler: int = 8,
    labels_per_labeler: int = 40,
    *,
    offset_std: float = 2.5,
    log_scale_std: float = 0.7,
    gain: float = 1.5,
    noise: float = 1.0,
    seed: int = 0,
) -> LabelerStudy:
    """Each labeler sees a random subset of items and gives the same number of scores and comparisons."""
    rng = np.random.default_rng(seed)
    quality = rng.standard_normal(n_items)
    offsets = rng.normal(0.0, offset_std, n_labelers)
    scales = np.exp(rng.normal(0.0, log_scale_std, n_labelers))
    score_items, scores, who, winners, losers = [], [], [], [], []
    for h in range(n_labelers):
        subset = rng.choice(n_items, items_per_labeler, replace=False)
        rated = rng.choice(subset, labels_per_labeler)
        raw = 5 + offsets[h] + scales[h] * gain * quality[rated] + noise * rng.standard_normal(rated.size)
        score_items.append(rated)
        scores.append(np.clip(np.round(raw), 0, 10))
        who.append(np.full(rated.size, h))
        pairs = np.array([rng.choice(subset, 2, replace=False) for _ in range(labels_per_labeler)])
        a, b = pairs[:, 0], pairs[:, 1]
        a_wins = rng.random(a.size) < win_probability(
            scales[h] * gain * quality[a] / noise, scales[h] * gain * quality[b] / noise
        )
        winners.append(np.where(a_wins, a, b))
        losers.append(np.where(a_wins, b, a))
    return LabelerStudy(
        quality,
        np.concatenate(score_items),
        np.concatenate(scores),
        np.concatenate(who),
        np.concatenate(winners),
        np.concatenate(losers),
        offsets,
        scales,
    )

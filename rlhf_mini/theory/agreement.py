"""Inter-annotator agreement: how much more often labelers agree than chance would make them.

Cohen's kappa (two raters, the same items):

    kappa = (p_o - p_e) / (1 - p_e),   p_o = fraction of items with equal labels,
                                       p_e = sum_k p_A(k) p_B(k)   (each rater's own label rates).

Fleiss' kappa (N items, each rated by the same number n of raters; counts[i, k] = raters who put
item i in category k):

    P_i   = (sum_k counts[i, k]^2 - n) / (n (n - 1))       agreement on item i
    P_bar = mean_i P_i,    p_k = sum_i counts[i, k] / (N n),    P_e = sum_k p_k^2
    kappa = (P_bar - P_e) / (1 - P_e).

kappa = 1 is perfect agreement, 0 is chance level, negative is systematic disagreement.
"""

from __future__ import annotations

import numpy as np


def cohens_kappa(a: object, b: object) -> float:
    """Cohen's kappa between two raters' labels (any hashable labels, same length)."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise ValueError(
            f"labels must be two 1-D arrays of equal length, got {a_arr.shape}, {b_arr.shape}"
        )
    if a_arr.size == 0:
        raise ValueError("no labels given")
    categories, codes = np.unique(np.concatenate([a_arr, b_arr]), return_inverse=True)
    ca, cb = codes[: a_arr.size], codes[a_arr.size :]
    p_o = float(np.mean(ca == cb))
    pa = np.bincount(ca, minlength=categories.size) / ca.size
    pb = np.bincount(cb, minlength=categories.size) / cb.size
    p_e = float(pa @ pb)
    if np.isclose(p_e, 1.0):
        raise ValueError("kappa is undefined: both raters used a single identical label throughout")
    return (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(counts: object) -> float:
    """Fleiss' kappa from an (n_items, n_categories) table of rater counts."""
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] < 2:
        raise ValueError(
            f"counts must be an (n_items, n_categories >= 2) table, got shape {c.shape}"
        )
    if not np.issubdtype(c.dtype, np.integer) and not np.all(c == np.round(c)):
        raise ValueError("counts must be whole numbers of raters")
    if np.any(c < 0):
        raise ValueError("counts must be >= 0")
    c = c.astype(float)
    raters = c.sum(axis=1)
    if not np.all(raters == raters[0]):
        bad = np.flatnonzero(raters != raters[0])[:5].tolist()
        raise ValueError(
            f"every item needs the same number of raters; rows {bad} differ from row 0"
        )
    n = raters[0]
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least two raters per item")
    p_i = ((c**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_k = c.sum(axis=0) / c.sum()
    p_e = float(p_k @ p_k)
    if np.isclose(p_e, 1.0):
        raise ValueError("kappa is undefined: every rating fell in one category")
    return (p_bar - p_e) / (1.0 - p_e)

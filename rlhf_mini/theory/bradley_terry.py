"""Bradley-Terry model: strengths from pairwise comparisons.

Item i beats item j with probability

    P(i > j) = sigma(s_i - s_j) = 1 / (1 + exp(-(s_i - s_j))),

where s are log-strengths. Only differences are identified, so the fit is centred to mean 0.
Given W[i, j] = number of times i beat j and N = W + W^T, the (optionally ridge-penalised)
log-likelihood is

    l(s) = sum_{i,j} W[i, j] log sigma(s_i - s_j) - (l2 / 2) ||s||^2,

which is concave. Its gradient and Hessian are

    g_i  = sum_j W[i, j] - sum_j N[i, j] p_ij - l2 s_i,          p_ij = sigma(s_i - s_j)
    H_ii = -sum_j N[i, j] p_ij p_ji - l2,     H_ij = N[i, j] p_ij p_ji   (i != j),

and we maximise with Newton's method plus a backtracking line search. Without the penalty the
maximum exists and is unique (up to a shift) exactly when the directed "i beat j" graph is strongly
connected (Zermelo 1929; Ford 1957; Hunter 2004): otherwise some group of items never loses to the
rest and its strengths run off to infinity.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def win_probability(s_i: np.ndarray | float, s_j: np.ndarray | float) -> np.ndarray:
    """P(i beats j) = sigma(s_i - s_j), broadcasting over arrays; numerically stable."""
    diff = np.asarray(s_i, dtype=float) - np.asarray(s_j, dtype=float)
    return _sigmoid(diff)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _as_ids(values: object, name: str, n_items: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of item ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{name} must hold integer item ids, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)))][:5]
            raise ValueError(f"{name} must hold integer item ids, found {bad.tolist()}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_items):
        bad = arr[(arr < 0) | (arr >= n_items)][:5]
        raise ValueError(f"{name} holds ids outside range(0, {n_items}): {bad.tolist()}")
    return arr


def validate_comparisons(
    winners: object, losers: object, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert comparison arrays; raise ValueError with the reason when they are bad."""
    if not isinstance(n_items, (int, np.integer)) or n_items < 2:
        raise ValueError(f"n_items must be an integer >= 2, got {n_items!r}")
    w = _as_ids(winners, "winners", int(n_items))
    loss = _as_ids(losers, "losers", int(n_items))
    if w.shape != loss.shape:
        raise ValueError(f"winners and losers differ in length: {w.size} vs {loss.size}")
    if w.size == 0:
        raise ValueError("no comparisons given: winners and losers are empty")
    same = np.flatnonzero(w == loss)
    if same.size:
        raise ValueError(f"comparison(s) {same[:5].tolist()} pit an item against itself")
    return w, loss


def win_matrix(winners: object, losers: object, n_items: int) -> np.ndarray:
    """W[i, j] = number of comparisons in which item i beat item j."""
    w, loss = validate_comparisons(winners, losers, n_items)
    wins = np.zeros((n_items, n_items))
    np.add.at(wins, (w, loss), 1.0)
    return wins


def strongly_connected_components(adjacency: np.ndarray) -> list[list[int]]:
    """Strongly connected components of a directed graph given as a boolean adjacency matrix."""
    n = adjacency.shape[0]
    reach = adjacency.astype(bool) | np.eye(n, dtype=bool)
    # Transitive closure by repeated squaring: log2(n) boolean matrix products.
    for _ in range(max(1, int(np.ceil(np.log2(max(n, 2)))))):
        reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
    mutual = reach & reach.T
    seen = np.zeros(n, dtype=bool)
    components = []
    for i in range(n):
        if not seen[i]:
            members = np.flatnonzero(mutual[i])
            seen[members] = True
            components.append(members.tolist())
    return components


def _check_mle_exists(wins: np.ndarray) -> None:
    components = strongly_connected_components(wins > 0)
    if len(components) == 1:
        return
    never_lose = []
    for comp in components:
        outside = np.setdiff1d(np.arange(wins.shape[0]), comp)
        if wins[outside][:, comp].sum() == 0:  # nobody outside ever beat this group
            never_lose.append(comp)
    raise ValueError(
        "the maximum-likelihood Bradley-Terry fit does not exist: the 'beat' graph is not strongly "
        f"connected (components {components}); items {never_lose} never lose to anyone outside "
        "their group, so their strengths would diverge. Collect comparisons that connect them, "
        "or pass l2 > 0 for a regularised (MAP) fit."
    )


def _newton_fit(wins: np.ndarray, l2: float, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    n = wins.shape[0]
    total = wins + wins.T
    wins_per_item = wins.sum(axis=1)

    def objective(s: np.ndarray) -> float:
        diff = s[:, None] - s[None, :]
        # log sigma(x) = -log(1 + exp(-x)), computed stably with logaddexp.
        return float(-(wins * np.logaddexp(0.0, -diff)).sum() - 0.5 * l2 * s @ s)

    s = np.zeros(n)
    value = objective(s)
    for _ in range(max_iter):
        p = _sigmoid(s[:, None] - s[None, :])
        grad = wins_per_item - (total * p).sum(axis=1) - l2 * s
        weight = total * p * p.T
        neg_hessian = np.diag(weight.sum(axis=1) + l2) - weight
        # The likelihood is flat along the all-ones direction; adding 11^T/n pins the shift.
        step = np.linalg.solve(neg_hessian + np.ones((n, n)) / n, grad)
        step -= step.mean()
        t = 1.0
        while True:
            candidate = s + t * step
            new_value = objective(candidate)
            if new_value >= value - 1e-12 or t < 1e-8:
                break
            t *= 0.5
        s, value = candidate, new_value
        if np.max(np.abs(t * step)) < tol:
            break
    return s - s.mean()


def fit_bradley_terry(
    winners: object, losers: object, n_items: int, *, l2: float = 0.0
) -> np.ndarray:
    """Maximum-likelihood (l2 = 0) or ridge-penalised Bradley-Terry log-strengths, mean 0.

    Maximises  sum_k log sigma(s_{winner_k} - s_{loser_k}) - (l2 / 2) ||s||^2  by Newton's method.
    With l2 = 0 the estimate exists only when the "i beat j" graph is strongly connected; otherwise
    a ValueError names the items whose strengths would diverge. For two items the answer is the
    closed form s_1 - s_2 = log(w_12 / w_21).
    """
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    wins = win_matrix(winners, losers, n_items)
    if l2 == 0:
        _check_mle_exists(wins)
    return _newton_fit(wins, float(l2))


def bradley_terry_fisher_information(
    strengths: np.ndarray, winners: object, losers: object, n_items: int, *, l2: float = 0.0
) -> np.ndarray:
    """Observed information -H(s): I_ii = sum_j N_ij p_ij p_ji + l2, I_ij = -N_ij p_ij p_ji."""
    wins = win_matrix(winners, losers, n_items)
    s = np.asarray(strengths, dtype=float)
    p = _sigmoid(s[:, None] - s[None, :])
    weight = (wins + wins.T) * p * p.T
    return np.diag(weight.sum(axis=1) + l2) - weight


def bradley_terry_standard_errors(
    winners: object,
    losers: object,
    n_items: int,
    *,
    strengths: np.ndarray | None = None,
    l2: float = 0.0,
) -> np.ndarray:
    """Asymptotic standard errors of the mean-centred strengths.

    Cov(s_hat) ~ I(s_hat)^+ (Moore-Penrose pseudo-inverse): the information matrix is singular along
    the all-ones direction, and the pseudo-inverse is exactly the covariance of the centred estimate.
    """
    if strengths is None:
        strengths = fit_bradley_terry(winners, losers, n_items, l2=l2)
    info = bradley_terry_fisher_information(strengths, winners, losers, n_items, l2=l2)
    cov = np.linalg.pinv(info, hermitian=True)
    return np.sqrt(np.clip(np.diag(cov), 0.0, None))


def bradley_terry_hessian_ci(
    winners: object,
    losers: object,
    n_items: int,
    *,
    level: float = 0.95,
    l2: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wald intervals s_hat +- z_{(1+level)/2} * SE from the Fisher information.

    Returns (strengths, lower, upper), each of shape (n_items,).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s = fit_bradley_terry(winners, losers, n_items, l2=l2)
    se = bradley_terry_standard_errors(winners, losers, n_items, strengths=s, l2=l2)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return s, s - z * se, s + z * se


def bootstrap_bradley_terry(
    winners: object,
    losers: object,
    n_items: int,
    n_boot: int = 200,
    seed: int = 0,
    l2: float = 0.0,
    *,
    max_failures: int | None = None,
) -> np.ndarray:
    """Nonparametric bootstrap: refit on comparisons resampled with replacement.

    Returns an (n_boot, n_items) array of centred strengths; pass it to `bootstrap_interval` for
    percentile intervals. With l2 = 0 a resample whose graph is not strongly connected has no MLE;
    it is redrawn, and a ValueError is raised after `max_failures` (default n_boot) such redraws,
    which means the data are too sparse for an unregularised fit.
    """
    w, loss = validate_comparisons(winners, losers, n_items)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    max_failures = n_boot if max_failures is None else max_failures
    samples = np.empty((n_boot, n_items))
    failures = 0
    b = 0
    while b < n_boot:
        idx = rng.integers(0, w.size, size=w.size)
        try:
            samples[b] = fit_bradley_terry(w[idx], loss[idx], n_items, l2=l2)
        except ValueError:
            failures += 1
            if failures > max_failures:
                raise ValueError(
                    f"{failures} bootstrap resamples had no maximum-likelihood fit; "
                    "use more comparisons or l2 > 0"
                ) from None
            continue
        b += 1
    return samples


def bootstrap_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per item from bootstrap samples of shape (n_boot, n_items)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = (1 - level) / 2
    lower, upper = np.quantile(np.asarray(samples), [alpha, 1 - alpha], axis=0)
    return lower, upper


def simulate_comparisons(
    strengths: np.ndarray, n_comparisons: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw random pairs (i != j) and a BT outcome for each; returns (winners, losers)."""
    s = np.asarray(strengths, dtype=float)
    n = s.size
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_comparisons)
    j = (i + rng.integers(1, n, size=n_comparisons)) % n  # j != i, uniform over the others
    i_wins = rng.random(n_comparisons) < win_probability(s[i], s[j])
    return np.where(i_wins, i, j), np.where(i_wins, j, i)

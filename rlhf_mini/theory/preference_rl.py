"""Learning a reward from a (simulated) human: scalar scores vs pairwise comparisons.

Task: a small deterministic gridworld. The agent moves up/down/left/right or stays; entering a cell
gives its true reward (goal +1, mud and lava negative, a small step cost elsewhere). The true reward
is hidden from the learner; a simulated human gives feedback on behaviour from an exploration
policy, and the learner fits a reward model r_hat(s) = theta_s (one parameter per cell), plans on
r_hat by dynamic programming, and is scored by the *true* return of the resulting policy.

Two kinds of feedback, at the same number of labels:

* Scalar, TAMER-style (Knox & Stone 2009): the human scores single transitions (s, a, s') in [0, 1].
  Real labelers are miscalibrated: labeler h answers
      y = clip(sigma(scale_h(t) * gain * r(s') + offset_h(t)) + eps, 0, 1),   eps ~ N(0, noise^2)
  with a personal offset and scale that also drift as they label (t = labels given so far). We fit
  r_hat by ridge regression of y on the cell one-hot features (intercept unpenalised). (TAMER proper
  acts greedily on H_hat(s, a); here both learners share one planner so only the feedback differs.)

* Pairwise comparisons (Christiano et al. 2017): the human sees two trajectory segments
  sigma^1, sigma^2 of length L and prefers sigma^1 with Bradley-Terry probability
      P(sigma^1 > sigma^2) = sigma(beta * scale_h(t) * (R(sigma^1) - R(sigma^2))),
      R(sigma) = sum_t r(s_{t+1}).
  The offset cancels in the difference and the scale only changes how noisy the answer is, never
  its direction. We fit theta by ridge-penalised logistic regression on the feature differences
      P_theta(sigma^1 > sigma^2) = sigma(theta . (Phi(sigma^1) - Phi(sigma^2))),
      Phi(sigma) = sum_t onehot(s_{t+1}).

Two things favour comparisons and the chapter separates them: (1) invariance to each labeler's
offset and scale (the `calibrated` human removes that advantage), and (2) a comparison covers 2L
transitions while a scalar label covers one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Grid legend: . normal, M mud, L lava, G goal.
DEFAULT_LAYOUT = (
    "......",
    ".LLLL.",
    "...M..",
    ".MM.L.",
    "L...M.",
    "...L.G",
)
CELL_REWARD = {".": -0.05, "M": -0.4, "L": -1.0, "G": 1.0}
ACTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0))  # up, down, left, right, stay


@dataclass
class GridWorld:
    layout: tuple[str, ...] = DEFAULT_LAYOUT
    horizon: int = 12

    def __post_init__(self) -> None:
        widths = {len(row) for row in self.layout}
        if len(widths) != 1:
            raise ValueError("every layout row must have the same width")
        unknown = {c for row in self.layout for c in row} - set(CELL_REWARD)
        if unknown:
            raise ValueError(f"unknown cell types {sorted(unknown)}; use {sorted(CELL_REWARD)}")
        self.n_rows, self.n_cols = len(self.layout), widths.pop()
        self.n_states = self.n_rows * self.n_cols
        self.n_actions = len(ACTIONS)
        self.true_reward = np.array([CELL_REWARD[c] for row in self.layout for c in row])
        nxt = np.empty((self.n_states, self.n_actions), dtype=np.int64)
        for s in range(self.n_states):
            r, c = divmod(s, self.n_cols)
            for a, (dr, dc) in enumerate(ACTIONS):
                rr = min(max(r + dr, 0), self.n_rows - 1)
                cc = min(max(c + dc, 0), self.n_cols - 1)
                nxt[s, a] = rr * self.n_cols + cc
        self.next_state = nxt


def plan(env: GridWorld, reward: np.ndarray) -> np.ndarray:
    """Finite-horizon dynamic programming on a state reward; returns a (horizon, n_states) policy.

    Q_t(s, a) = r(s') + V_{t+1}(s'),  s' = next_state[s, a],  V_H = 0,  pi_t(s) = argmax_a Q_t(s, a).
    """
    reward = np.asarray(reward, dtype=float)
    value = np.zeros(env.n_states)
    policy = np.empty((env.horizon, env.n_states), dtype=np.int64)
    for t in reversed(range(env.horizon)):
        q = reward[env.next_state] + value[env.next_state]
        policy[t] = q.argmax(axis=1)
        value = q.max(axis=1)
    return policy


def true_return(env: GridWorld, policy: np.ndarray) -> float:
    """Mean true return over the horizon, averaged over every start cell (exact, no sampling)."""
    states = np.arange(env.n_states)
    total = np.zeros(env.n_states)
    for t in range(env.horizon):
        states = env.next_state[states, policy[t, states]]
        total += env.true_reward[states]
    return float(total.mean())


def random_policy_return(env: GridWorld) -> float:
    """Exact expected true return of the uniformly random policy."""
    dist = np.eye(env.n_states)  # row = start state, distribution over current state
    total = np.zeros(env.n_states)
    step = np.zeros((env.n_states, env.n_states))
    for a in range(env.n_actions):
        step[np.arange(env.n_states), env.next_state[:, a]] += 1.0 / env.n_actions
    for _ in range(env.horizon):
        dist = dist @ step
        total += dist @ env.true_reward
    return float(total.mean())


def normalized_return(env: GridWorld, reward_estimate: np.ndarray) -> float:
    """(J(plan(r_hat)) - J(random)) / (J(optimal) - J(random)): 1 = optimal, 0 = random."""
    best = true_return(env, plan(env, env.true_reward))
    rand = random_policy_return(env)
    return (true_return(env, plan(env, reward_estimate)) - rand) / (best - rand)


def exploration_segments(
    env: GridWorld,
    n_segments: int,
    length: int,
    rng: np.random.Generator,
    start_states: np.ndarray | None = None,
) -> np.ndarray:
    """Random-policy segments: (n_segments, length + 1) state indices, from random (or given) cells."""
    states = np.empty((n_segments, length + 1), dtype=np.int64)
    if start_states is None:
        start_states = rng.integers(0, env.n_states, size=n_segments)
    states[:, 0] = start_states
    for t in range(length):
        actions = rng.integers(0, env.n_actions, size=n_segments)
        states[:, t + 1] = env.next_state[states[:, t], actions]
    return states


def region_of(env: GridWorld, states: np.ndarray, n_regions: int) -> np.ndarray:
    """Split the grid into n_regions horizontal bands of rows; the band index of each state."""
    rows = np.asarray(states) // env.n_cols
    return rows * n_regions // env.n_rows


def _starts_in_regions(
    env: GridWorld, regions: np.ndarray, n_regions: int, rng: np.random.Generator
) -> np.ndarray:
    cells = np.arange(env.n_states)
    band = region_of(env, cells, n_regions)
    starts = np.empty(regions.size, dtype=np.int64)
    for g in range(n_regions):
        mask = regions == g
        members = cells[band == g]
        starts[mask] = members[rng.integers(0, members.size, size=int(mask.sum()))]
    return starts


@dataclass
class SimulatedHuman:
    """A pool of labelers, each with a personal offset and scale that drift as they label.

    offset_std, log_scale_std: spread across labelers (logit units); drift_std: random-walk step per
    label; score_noise: Gaussian noise on the 0-1 score; gain: how sharply scores react to reward;
    beta: Bradley-Terry sharpness of comparisons. `calibrated()` gives the idealised labeler.
    """

    n_labelers: int = 3
    offset_std: float = 1.0
    log_scale_std: float = 0.5
    drift_std: float = 0.05
    score_noise: float = 0.1
    gain: float = 2.0
    beta: float = 1.0
    score_levels: int | None = 11

    @classmethod
    def calibrated(cls, **kwargs: float) -> SimulatedHuman:
        """Every labeler identical (offset 0, scale 1) and stable: only the score noise remains."""
        return cls(offset_std=0.0, log_scale_std=0.0, drift_std=0.0, **kwargs)

    def _labeler_state(
        self, who: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Offset and scale in force for each label; who[k] = labeler giving label k (in order)."""
        offsets = self.offset_std * rng.standard_normal(self.n_labelers)
        log_scales = self.log_scale_std * rng.standard_normal(self.n_labelers)
        offset_t = np.empty(who.size)
        log_scale_t = np.empty(who.size)
        for k, h in enumerate(who.tolist()):
            offsets[h] += self.drift_std * rng.standard_normal()
            log_scales[h] += self.drift_std * rng.standard_normal()
            offset_t[k], log_scale_t[k] = offsets[h], log_scales[h]
        return offset_t, np.exp(log_scale_t)

    def scalar_scores(
        self, rewards: np.ndarray, who: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """TAMER-style scores in [0, 1] of the rewards of single transitions, on an 11-point scale."""
        offset, scale = self._labeler_state(who, rng)
        logits = scale * self.gain * rewards + offset
        clean = 1.0 / (1.0 + np.exp(-logits))
        noisy = np.clip(clean + self.score_noise * rng.standard_normal(rewards.size), 0.0, 1.0)
        if self.score_levels:
            noisy = np.round(noisy * (self.score_levels - 1)) / (self.score_levels - 1)
        return noisy

    def compare(
        self,
        returns_1: np.ndarray,
        returns_2: np.ndarray,
        who: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """1.0 where the labeler prefers segment 1, drawn from Bradley-Terry on the true returns."""
        _, scale = self._labeler_state(who, rng)
        p_first = 1.0 / (1.0 + np.exp(-self.beta * scale * (returns_1 - returns_2)))
        return (rng.random(returns_1.size) < p_first).astype(float)


def fit_reward_from_scores(
    states: np.ndarray, scores: np.ndarray, n_states: int, *, l2: float = 1.0
) -> np.ndarray:
    """Ridge regression y ~ b + theta_s on one-hot cell features, intercept unpenalised.

    Closed form for one-hot features: theta_s = sum_{k: s_k = s} (y_k - b) / (n_s + l2), iterated
    with b = mean(y - theta_{s_k}) to a fixed point. Returns theta (the shift b does not affect
    planning over a fixed horizon).
    """
    counts = np.bincount(states, minlength=n_states).astype(float)
    b = float(scores.mean())
    theta = np.zeros(n_states)
    for _ in range(100):
        sums = np.bincount(states, weights=scores - b, minlength=n_states)
        theta = sums / (counts + l2)
        new_b = float(np.mean(scores - theta[states]))
        if abs(new_b - b) < 1e-12:
            break
        b = new_b
    return theta


def fit_reward_from_comparisons(
    features_1: np.ndarray, features_2: np.ndarray, prefer_first: np.ndarray, *, l2: float = 1.0
) -> np.ndarray:
    """Bradley-Terry reward model: maximise sum_k log sigma(+-theta . dPhi_k) - (l2 / 2) ||theta||^2.

    Newton's method on the concave penalised log-likelihood (logistic regression without bias).
    """
    x = np.asarray(features_1, dtype=float) - np.asarray(features_2, dtype=float)
    y = np.asarray(prefer_first, dtype=float)
    theta = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (y - p) - l2 * theta
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        theta += step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta


def run_feedback_experiment(
    env: GridWorld,
    human: SimulatedHuman,
    budgets: list[int],
    seeds: list[int],
    *,
    segment_length: int = 6,
    l2: float = 1.0,
    assignment: str = "by_region",
) -> dict[str, np.ndarray]:
    """Normalized true return after learning from n labels of each kind, for each seed and budget.

    assignment: who labels what. "by_region" -- the work is split in batches as in real annotation
    projects: labeler h gets the episodes that start in band h of the grid (so a labeler's offset is
    tied to a part of the state space); "round_robin" -- labels are dealt out in turn regardless of
    content (a labeler's offset is then just extra noise). A comparison shows a segment from the
    labeler's batch next to a reference segment drawn from the whole exploration pool.

    Returns {"scalar": (n_seeds, n_budgets), "comparison": (n_seeds, n_budgets)}. For each seed the
    labels for the largest budget are drawn once and smaller budgets use a prefix, so the curves are
    "keep labelling" curves.
    """
    if assignment not in ("by_region", "round_robin"):
        raise ValueError(f"assignment must be 'by_region' or 'round_robin', got {assignment!r}")
    n_max = max(budgets)
    k = human.n_labelers
    results = {
        "scalar": np.zeros((len(seeds), len(budgets))),
        "comparison": np.zeros((len(seeds), len(budgets))),
    }
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        batch = np.arange(n_max) % k  # the batch (and, by_region, the band) of each label
        who = batch if assignment == "by_region" else rng.permutation(batch)
        # Scalar: one transition per label, taken from an exploration segment of its batch.
        starts = _starts_in_regions(env, batch, k, rng)
        segs = exploration_segments(env, n_max, segment_length, rng, starts)
        step = rng.integers(1, segment_length + 1, size=n_max)
        entered = segs[np.arange(n_max), step]
        scores = human.scalar_scores(env.true_reward[entered], who, rng)
        # Comparisons: a segment from the labeler's batch against a reference segment from the
        # whole pool; features = visit counts of the entered cells.
        seg_a = exploration_segments(
            env, n_max, segment_length, rng, _starts_in_regions(env, batch, k, rng)
        )
        seg_b = exploration_segments(env, n_max, segment_length, rng)
        phi_a = _visit_counts(seg_a[:, 1:], env.n_states)
        phi_b = _visit_counts(seg_b[:, 1:], env.n_states)
        prefs = human.compare(phi_a @ env.true_reward, phi_b @ env.true_reward, who, rng)
        for j, n in enumerate(budgets):
            r_scalar = fit_reward_from_scores(entered[:n], scores[:n], env.n_states, l2=l2)
            r_pref = fit_reward_from_comparisons(phi_a[:n], phi_b[:n], prefs[:n], l2=l2)
            results["scalar"][i, j] = normalized_return(env, r_scalar)
            results["comparison"][i, j] = normalized_return(env, r_pref)
    return results


def _visit_counts(states: np.ndarray, n_states: int) -> np.ndarray:
    counts = np.zeros((states.shape[0], n_states))
    np.add.at(counts, (np.repeat(np.arange(states.shape[0]), states.shape[1]), states.ravel()), 1.0)
    return counts

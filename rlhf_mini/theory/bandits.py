"""Bandits: the simplest agent-environment loop, and the one RLHF actually lives in.

k-armed Gaussian bandit: pulling arm a gives r ~ N(mu_a, sigma^2). No state, no dynamics.

epsilon-greedy keeps running means Q(a) <- Q(a) + (r - Q(a)) / N(a) and pulls argmax_a Q(a), or a
uniformly random arm with probability epsilon.

REINFORCE with a softmax policy pi_theta(a) = exp(theta_a) / sum_b exp(theta_b) and a running-mean
baseline b ascends the policy gradient

    grad J = E_{a ~ pi}[ (r - b) grad log pi_theta(a) ],    grad_theta log pi(a) = onehot(a) - pi,

so theta <- theta + lr (r - b) (onehot(a) - pi).

Contextual bandit: first a context x (a prompt) is drawn, the policy picks an action a (a
completion) given x, and a single reward r(x, a) arrives; the episode ends. RLHF fine-tuning is
this setting with a learned reward model for r and a language model for pi(a | x).

Regret after T steps: sum_t (mu* - mu_{a_t}), the expected reward lost to not knowing the best arm.

One step beyond bandits, for the history of RL: TD(0) and Monte Carlo value estimates on the
5-state random walk (Sutton 1988), whose true values 1/6 ... 5/6 are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BanditRun:
    """Per-step rewards, chosen arms and expected (pseudo-)regret of one run."""

    rewards: np.ndarray
    actions: np.ndarray
    regret: np.ndarray  # mu* - mu_{a_t} per step; cumsum gives cumulative regret


@dataclass
class GaussianBandit:
    means: np.ndarray
    noise_std: float = 1.0

    def __post_init__(self) -> None:
        self.means = np.asarray(self.means, dtype=float)
        if self.means.ndim != 1 or self.means.size < 2:
            raise ValueError("a bandit needs a 1-D array of at least two arm means")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    @property
    def n_arms(self) -> int:
        return self.means.size

    def pull(self, arm: int, rng: np.random.Generator) -> float:
        return float(self.means[arm] + self.noise_std * rng.standard_normal())

    @classmethod
    def random(cls, n_arms: int = 10, seed: int = 0, noise_std: float = 1.0) -> GaussianBandit:
        """The 10-armed testbed of Sutton & Barto: mu_a ~ N(0, 1)."""
        return cls(np.random.default_rng(seed).standard_normal(n_arms), noise_std)


def _finish(bandit: GaussianBandit, rewards: list, actions: list) -> BanditRun:
    a = np.asarray(actions)
    return BanditRun(np.asarray(rewards), a, bandit.means.max() - bandit.means[a])


def random_policy(bandit: GaussianBandit, n_steps: int, seed: int = 0) -> BanditRun:
    """Uniformly random arms: the baseline every learner must beat."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, bandit.n_arms, size=n_steps).tolist()
    rewards = [bandit.pull(a, rng) for a in actions]
    return _finish(bandit, rewards, actions)


def epsilon_greedy(
    bandit: GaussianBandit, n_steps: int, *, epsilon: float = 0.1, seed: int = 0
) -> BanditRun:
    """Sample-average epsilon-greedy; ties in argmax broken at random."""
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    rng = np.random.default_rng(seed)
    q = np.zeros(bandit.n_arms)
    counts = np.zeros(bandit.n_arms)
    rewards, actions = [], []
    for _ in range(n_steps):
        if rng.random() < epsilon:
            a = int(rng.integers(bandit.n_arms))
        else:
            best = np.flatnonzero(q == q.max())
            a = int(rng.choice(best))
        r = bandit.pull(a, rng)
        counts[a] += 1
        q[a] += (r - q[a]) / counts[a]
        rewards.append(r)
        actions.append(a)
    return _finish(bandit, rewards, actions)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def reinforce(
    bandit: GaussianBandit,
    n_steps: int,
    *,
    lr: float = 0.1,
    baseline: bool = True,
    seed: int = 0,
) -> BanditRun:
    """Softmax policy gradient (REINFORCE) with an optional running-mean reward baseline."""
    rng = np.random.default_rng(seed)
    theta = np.zeros(bandit.n_arms)
    mean_reward = 0.0
    rewards, actions = [], []
    for t in range(1, n_steps + 1):
        pi = softmax(theta)
        a = int(rng.choice(bandit.n_arms, p=pi))
        r = bandit.pull(a, rng)
        b = mean_reward if baseline else 0.0
        grad_log_pi = -pi
        grad_log_pi[a] += 1.0
        theta += lr * (r - b) * grad_log_pi
        mean_reward += (r - mean_reward) / t
        rewards.append(r)
        actions.append(a)
    return _finish(bandit, rewards, actions)


@dataclass
class ContextualBandit:
    """Contexts ("prompts") x, actions ("completions") a, and a reward table r[x, a].

    One episode: x ~ uniform, a ~ pi(. | x), observe r[x, a] + noise, done. Nothing the policy does
    changes which prompt comes next, which is what makes it a bandit and not a full MDP.
    """

    rewards: np.ndarray  # (n_contexts, n_actions)
    noise_std: float = 0.5

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=float)
        if self.rewards.ndim != 2:
            raise ValueError("rewards must be a (n_contexts, n_actions) table")


def reinforce_contextual(
    env: ContextualBandit,
    n_steps: int,
    *,
    lr: float = 0.2,
    seed: int = 0,
    reward_fn: np.ndarray | None = None,
) -> BanditRun:
    """Tabular softmax policy pi(a | x) trained by REINFORCE with a per-context mean baseline.

    reward_fn, when given, is the table the learner is trained on (e.g. a learned reward model);
    `rewards` in the result are still the true ones, so reward-model error shows up as regret.
    """
    rng = np.random.default_rng(seed)
    n_contexts, n_actions = env.rewards.shape
    train_table = env.rewards if reward_fn is None else np.asarray(reward_fn, dtype=float)
    if train_table.shape != env.rewards.shape:
        raise ValueError(f"reward_fn shape {train_table.shape} != {env.rewards.shape}")
    logits = np.zeros((n_contexts, n_actions))
    baseline = np.zeros(n_contexts)
    seen = np.zeros(n_contexts)
    true_rewards, actions, regret = [], [], []
    for _ in range(n_steps):
        x = int(rng.integers(n_contexts))
        pi = softmax(logits[x])
        a = int(rng.choice(n_actions, p=pi))
        noise = env.noise_std * rng.standard_normal()
        r_train = train_table[x, a] + noise
        seen[x] += 1
        grad_log_pi = -pi
        grad_log_pi[a] += 1.0
        logits[x] += lr * (r_train - baseline[x]) * grad_log_pi
        baseline[x] += (r_train - baseline[x]) / seen[x]
        true_rewards.append(env.rewards[x, a] + noise)
        actions.append(a)
        regret.append(env.rewards[x].max() - env.rewards[x, a])
    return BanditRun(np.asarray(true_rewards), np.asarray(actions), np.asarray(regret))


# --- Beyond bandits: the 5-state random walk (Sutton 1988; Sutton & Barto, Example 6.2) ------------
#
# States 1..5 (A..E) between two terminals; every episode starts in the middle (C) and steps left or
# right with probability 1/2. Reaching the right end pays +1, the left end 0; gamma = 1. The true
# value of state k is the chance of ending on the right, v(k) = k / 6.

RANDOM_WALK_TRUE_VALUES = np.arange(1, 6) / 6.0


def td0_random_walk(
    n_episodes: int = 100,
    *,
    alpha: float = 0.1,
    n_runs: int = 100,
    method: str = "td",
    seed: int = 0,
) -> np.ndarray:
    """Value estimates of the random walk after each episode, shape (n_runs, n_episodes + 1, 5).

    TD(0) (Sutton 1988) updates after every step, bootstrapping on the next state's estimate:
        V(s) <- V(s) + alpha [r + V(s') - V(s)],   V(terminal) = 0.
    Monte Carlo ("mc") waits for the episode's return G and updates every visited state:
        V(s) <- V(s) + alpha [G - V(s)].
    Every run starts from V = 0.5 everywhere; index 0 of axis 1 is that initial guess.
    """
    if method not in ("td", "mc"):
        raise ValueError(f"method must be 'td' or 'mc', got {method!r}")
    rng = np.random.default_rng(seed)
    history = np.empty((n_runs, n_episodes + 1, 5))
    for run in range(n_runs):
        v = np.full(7, 0.5)  # index 0 and 6 are the terminals
        v[0] = v[6] = 0.0
        history[run, 0] = v[1:6]
        for episode in range(1, n_episodes + 1):
            s, visited = 3, []
            while s not in (0, 6):
                s_next = s + (1 if rng.random() < 0.5 else -1)
                r = 1.0 if s_next == 6 else 0.0
                if method == "td":
                    v[s] += alpha * (r + v[s_next] - v[s])
                visited.append(s)
                s = s_next
            if method == "mc":  # the return is the final reward: 1 on the right, 0 on the left
                g = 1.0 if s == 6 else 0.0
                for state in visited:
                    v[state] += alpha * (g - v[state])
            history[run, episode] = v[1:6]
    return history

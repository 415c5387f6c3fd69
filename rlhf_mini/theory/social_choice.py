"""Social choice: turning many rankings into one.

A profile ("ballots") is an integer array of shape (n_voters, n_candidates); row v lists the
candidates from voter v's favourite to least favourite, so each row is a permutation of
range(n_candidates). Every rule below returns one score per candidate (higher is better).

    plurality  score(c) = #{v : c is v's first choice}
    borda      score(c) = sum_v (n - 1 - position_v(c)); scores sum to n_voters * n (n - 1) / 2
    copeland   score(c) = #{d : M[c, d] > M[d, c]} + 0.5 #{d != c : M[c, d] = M[d, c]}
    pooled BT  every ballot gives the n (n - 1) / 2 pairwise comparisons it implies; one
               Bradley-Terry model is fitted to all of them (what a reward model trained on
               pooled annotator comparisons does)

where M[i, j] = number of voters ranking i above j (the majority matrix). Arrow (1951): with three
or more candidates no rule that maps every profile to a social ranking satisfies unrestricted
domain, Pareto, independence of irrelevant alternatives (IIA) and non-dictatorship at once.
`find_axiom_violation` searches small random profiles for a concrete failure of a named rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rlhf_mini.theory.bradley_terry import fit_bradley_terry

Rule = Callable[[np.ndarray], np.ndarray]
AXIOMS = ("condorcet", "iia", "pareto", "majority_cycle")


def validate_ballots(ballots: object) -> np.ndarray:
    """Return ballots as an int array; ValueError naming the first bad row otherwise."""
    arr = np.asarray(ballots)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
        raise ValueError(
            f"ballots must be a 2-D array (n_voters >= 1, n_candidates >= 2), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ballots must hold integer candidate ids, got dtype {arr.dtype}")
    n = arr.shape[1]
    expected = np.arange(n)
    for v, row in enumerate(arr):
        if not np.array_equal(np.sort(row), expected):
            raise ValueError(
                f"ballot row {v} = {row.tolist()} is not a permutation of range({n}): each row must "
                "rank every candidate exactly once, best first"
            )
    return arr.astype(np.int64)


def positions(ballots: object) -> np.ndarray:
    """pos[v, c] = place of candidate c on ballot v (0 = top)."""
    b = validate_ballots(ballots)
    pos = np.empty_like(b)
    rows = np.arange(b.shape[0])[:, None]
    pos[rows, b] = np.arange(b.shape[1])[None, :]
    return pos


def majority_matrix(ballots: object) -> np.ndarray:
    """M[i, j] = number of voters who rank i above j (M[i, i] = 0)."""
    pos = positions(ballots)
    return (pos[:, :, None] < pos[:, None, :]).sum(axis=0)


def plurality(ballots: object) -> np.ndarray:
    """Number of first-place votes per candidate."""
    b = validate_ballots(ballots)
    return np.bincount(b[:, 0], minlength=b.shape[1]).astype(float)


def borda(ballots: object) -> np.ndarray:
    """Borda count: a candidate in place p (0 = top) of n gets n - 1 - p points from that ballot."""
    pos = positions(ballots)
    return (pos.shape[1] - 1 - pos).sum(axis=0).astype(float)


def copeland(ballots: object) -> np.ndarray:
    """Pairwise majority wins plus half a point per pairwise tie."""
    m = majority_matrix(ballots)
    wins = (m > m.T).sum(axis=1)
    ties = (m == m.T).sum(axis=1) - 1  # the diagonal always "ties"
    return wins + 0.5 * ties


def pooled_bradley_terry(ballots: object, *, l2: float = 0.01) -> np.ndarray:
    """Fit one Bradley-Terry model to all pairwise comparisons implied by all ballots.

    A small ridge (l2) keeps the fit finite when some candidate is never beaten (e.g. unanimity).
    """
    m = majority_matrix(ballots)
    winners, losers = np.nonzero(m)
    counts = m[winners, losers]
    return fit_bradley_terry(
        np.repeat(winners, counts), np.repeat(losers, counts), m.shape[0], l2=l2
    )


def condorcet_winner(ballots: object) -> int | None:
    """The candidate who beats every other in a pairwise majority vote, or None."""
    m = majority_matrix(ballots)
    beats = m > m.T
    for c in range(m.shape[0]):
        if beats[c].sum() == m.shape[0] - 1:
            return c
    return None


def find_condorcet_cycle(ballots: object) -> list[int] | None:
    """A cycle a > b > ... > a of strict pairwise-majority wins, or None when there is none."""
    m = majority_matrix(ballots)
    beats = m > m.T
    n = m.shape[0]
    # Depth-first search for a back edge in the "beats" graph; n is small.
    state = [0] * n  # 0 unvisited, 1 on stack, 2 done
    stack: list[int] = []

    def visit(u: int) -> list[int] | None:
        state[u] = 1
        stack.append(u)
        for v in np.flatnonzero(beats[u]).tolist():
            if state[v] == 1:
                return stack[stack.index(v) :] + [v]
            if state[v] == 0:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for start in range(n):
        if state[start] == 0:
            found = visit(start)
            if found:
                return found
    return None


def winners_of(scores: np.ndarray, tol: float = 1e-9) -> list[int]:
    """All candidates whose score is within tol of the best (more than one means a tie)."""
    s = np.asarray(scores, dtype=float)
    return np.flatnonzero(s >= s.max() - tol).tolist()


def social_order(scores: np.ndarray, a: int, b: int, tol: float = 1e-9) -> int:
    """+1 if the rule ranks a above b, -1 if below, 0 if tied."""
    diff = float(scores[a] - scores[b])
    return 0 if abs(diff) <= tol else (1 if diff > 0 else -1)


@dataclass
class AxiomViolation:
    """A concrete profile (or pair of profiles) on which a rule breaks an axiom."""

    rule: str
    axiom: str
    ballots: np.ndarray
    explanation: str
    other_ballots: np.ndarray | None = None


def _random_profile(rng: np.random.Generator, n_voters: int, n_candidates: int) -> np.ndarray:
    return np.argsort(rng.random((n_voters, n_candidates)), axis=1)


def _check_condorcet(rule: Rule, name: str, ballots: np.ndarray) -> AxiomViolation | None:
    cw = condorcet_winner(ballots)
    if cw is None:
        return None
    chosen = winners_of(rule(ballots))
    if chosen != [cw]:
        return AxiomViolation(
            name,
            "condorcet",
            ballots,
            f"candidate {cw} beats every rival head-to-head, but {name} picks {chosen}",
        )
    return None


def _check_pareto(rule: Rule, name: str, ballots: np.ndarray) -> AxiomViolation | None:
    m = majority_matrix(ballots)
    n_voters = ballots.shape[0]
    scores = rule(ballots)
    for a, b in zip(*np.nonzero(m == n_voters)):
        if social_order(scores, int(a), int(b)) != 1:
            return AxiomViolation(
                name,
                "pareto",
                ballots,
                f"every voter ranks {a} above {b}, but {name} does not",
            )
    return None


def _check_iia(
    rule: Rule, name: str, ballots: np.ndarray, rng: np.random.Generator
) -> AxiomViolation | None:
    """Redraw all ballots keeping each voter's a-vs-b order; IIA says the a-vs-b verdict stays."""
    scores = rule(ballots)
    pos = positions(ballots)
    n_voters, n = ballots.shape
    for a in range(n):
        for b in range(a + 1, n):
            before = social_order(scores, a, b)
            for _ in range(5):
                other = _random_profile(rng, n_voters, n)
                other_pos = positions(other)
                flip = (other_pos[:, a] < other_pos[:, b]) != (pos[:, a] < pos[:, b])
                for v in np.flatnonzero(flip):  # swap a and b on ballots that disagree
                    ia, ib = other_pos[v, a], other_pos[v, b]
                    other[v, ia], other[v, ib] = b, a
                after = social_order(rule(other), a, b)
                if after != before:
                    verdict = {1: f"{a} above {b}", -1: f"{b} above {a}", 0: f"{a} tied with {b}"}
                    return AxiomViolation(
                        name,
                        "iia",
                        ballots,
                        f"every voter orders {a} vs {b} the same way in both profiles, but {name} "
                        f"puts {verdict[before]} in the first and {verdict[after]} in the second: "
                        "moving the other candidates changed the verdict",
                        other_ballots=other,
                    )
    return None


def find_axiom_violation(
    rule: Rule,
    axiom: str,
    *,
    n_voters: int = 5,
    n_candidates: int = 3,
    max_tries: int = 2000,
    seed: int = 0,
    name: str | None = None,
) -> AxiomViolation | None:
    """Search random small profiles for one where `rule` fails `axiom`; None if none is found.

    Axioms: "condorcet" (a Condorcet winner, when one exists, must win outright), "iia" (the social
    order of a and b depends only on how each voter orders a and b), "pareto" (if everyone prefers a
    to b, so does society), "majority_cycle" (a profile whose pairwise majorities cycle; `rule` is
    ignored). Not finding a violation in max_tries is evidence, not proof, that none exists.
    """
    if axiom not in AXIOMS:
        raise ValueError(f"unknown axiom {axiom!r}; choose one of {AXIOMS}")
    name = name or getattr(rule, "__name__", "rule")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        ballots = _random_profile(rng, n_voters, n_candidates)
        if axiom == "condorcet":
            found = _check_condorcet(rule, name, ballots)
        elif axiom == "pareto":
            found = _check_pareto(rule, name, ballots)
        elif axiom == "iia":
            found = _check_iia(rule, name, ballots, rng)
        else:
            cycle = find_condorcet_cycle(ballots)
            found = (
                AxiomViolation(
                    name, axiom, ballots, f"majorities cycle: {' > '.join(map(str, cycle))}"
                )
                if cycle
                else None
            )
        if found is not None:
            return found
    return None


def rankings_to_comparisons(ballots: object) -> tuple[np.ndarray, np.ndarray]:
    """All (winner, loser) pairs implied by the ballots, ballot by ballot."""
    pos = positions(ballots)
    n = pos.shape[1]
    a, b = np.triu_indices(n, k=1)
    a_first = pos[:, a] < pos[:, b]  # (n_voters, n_pairs)
    winners = np.where(a_first, a[None, :], b[None, :]).ravel()
    losers = np.where(a_first, b[None, :], a[None, :]).ravel()
    return winners, losers


def sample_persona_ballots(
    utilities: np.ndarray, n_voters: int, *, noise: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Ballots from a persona: rank candidates by utility + Gumbel noise (a Plackett-Luce draw).

    With Gumbel(0, noise) noise, the chance a voter ranks i above j is sigma((u_i - u_j) / noise),
    i.e. each persona is a Bradley-Terry labeler.
    """
    u = np.asarray(utilities, dtype=float)
    rng = np.random.default_rng(seed)
    noisy = u[None, :] + noise * rng.gumbel(size=(n_voters, u.size))
    return np.argsort(-noisy, axis=1)

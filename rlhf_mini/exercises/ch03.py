"""Chapter 3 (aggregating preferences): Borda and Copeland scores, the Condorcet winner, Cohen's kappa."""

from __future__ import annotations

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.theory.agreement import cohens_kappa
from rlhf_mini.theory.social_choice import borda, condorcet_winner, copeland


def _profile(rng: np.random.Generator, n_voters: int, n_candidates: int) -> np.ndarray:
    return np.argsort(rng.random((n_voters, n_candidates)), axis=1)


CYCLE = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])


def _ballot_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    return [
        Case("7 random ballots over 4 candidates", (_profile(rng, 7, 4),)),
        Case("25 random ballots over 5 candidates", (_profile(rng, 25, 5),)),
        Case("the Condorcet cycle A>B>C, B>C>A, C>A>B", (CYCLE,)),
        Case("a single voter", (np.array([[2, 0, 3, 1]]),)),
        Case("4 voters (pairwise ties possible)", (np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [1, 2, 0]]),)),
        Case("two candidates, 3 voters", (np.array([[1, 0], [0, 1], [1, 0]]),)),
        Case("6 random ballots over 3 candidates (pairwise ties)", (_profile(np.random.default_rng(5), 6, 3),)),
    ]


# Borda ---------------------------------------------------------------------------------------------


def _borda_off_by_one(ballots):
    ballots = np.asarray(ballots)
    n = ballots.shape[1]
    pos = np.argsort(ballots, axis=1)
    return (n - pos).sum(axis=0).astype(float)  # n - p points instead of n - 1 - p


def _borda_ballot_as_positions(ballots):
    ballots = np.asarray(ballots)
    n = ballots.shape[1]
    return (n - 1 - ballots).sum(axis=0).astype(float)  # ballots[v, p] is a candidate, not a place


register(Exercise(
    name="borda_scores",
    chapter="03",
    summary="Borda scores: a candidate in place p (0 = top) of n gets n - 1 - p points per ballot",
    reference=borda,
    cases=_ballot_cases,
    wrong=(_borda_off_by_one, _borda_ballot_as_positions),
))

# Copeland ------------------------------------------------------------------------------------------


def _majority(ballots):
    pos = np.argsort(np.asarray(ballots), axis=1)
    return (pos[:, :, None] < pos[:, None, :]).sum(axis=0)


def _copeland_ties_worth_nothing(ballots):
    m = _majority(ballots)
    return (m > m.T).sum(axis=1).astype(float)


def _copeland_counts_self_tie(ballots):
    m = _majority(ballots)
    return (m > m.T).sum(axis=1) + 0.5 * (m == m.T).sum(axis=1)  # the diagonal counted as a tie


register(Exercise(
    name="copeland_scores",
    chapter="03",
    summary="Copeland scores: pairwise-majority wins plus half a point per pairwise tie",
    reference=copeland,
    cases=_ballot_cases,
    wrong=(_copeland_ties_worth_nothing, _copeland_counts_self_tie),
))

# The Condorcet winner ------------------------------------------------------------------------------


def _condorcet_cases() -> list[Case]:
    rng = np.random.default_rng(3)
    return [
        Case("the Condorcet cycle: no winner", (CYCLE,)),
        Case("candidate 2 beats everyone", (np.array([[2, 0, 1], [1, 2, 0], [2, 1, 0], [0, 2, 1], [2, 1, 0]]),)),
        Case("4 voters: candidate 0 beats 2 but only ties with 1 (no winner)",
             (np.array([[0, 1, 2], [1, 0, 2], [0, 2, 1], [1, 2, 0]]),)),
        Case("a single voter: their favourite", (np.array([[3, 1, 0, 2]]),)),
        Case("9 random ballots over 4 candidates", (_profile(rng, 9, 4),)),
        Case("11 random ballots over 5 candidates", (_profile(rng, 11, 5),)),
        Case("25 random ballots over 3 candidates", (_profile(rng, 25, 3),)),
    ]


def _condorcet_ties_allowed(ballots):
    m = _majority(ballots)
    for c in range(m.shape[0]):
        if all(m[c, d] >= m[d, c] for d in range(m.shape[0]) if d != c):  # ≥: a tie is not a win
            return c
    return None


def _condorcet_most_wins(ballots):
    m = _majority(ballots)
    return int(np.argmax((m > m.T).sum(axis=1)))  # the Copeland leader, even when nobody beats all


register(Exercise(
    name="condorcet_winner",
    chapter="03",
    summary="the candidate who beats every other in a pairwise majority vote, or None",
    reference=condorcet_winner,
    cases=_condorcet_cases,
    wrong=(_condorcet_ties_allowed, _condorcet_most_wins),
))

# Cohen's kappa -------------------------------------------------------------------------------------


def _kappa_cases() -> list[Case]:
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, 200)
    b = np.where(rng.random(200) < 0.8, a, 1 - a)
    return [
        Case("200 binary labels, 80% copied", (a, b)),
        Case("200 binary labels, independent", (rng.integers(0, 2, 200), rng.integers(0, 2, 200))),
        Case("string labels, three categories", (np.array(list("abcabcaabbcc")), np.array(list("abcacbabbbca")))),
        Case("perfect agreement: kappa = 1", (np.array([0, 1, 1, 0, 2]), np.array([0, 1, 1, 0, 2]))),
        Case("systematic disagreement: kappa < 0", (np.array([0, 1, 0, 1, 0, 1]), np.array([1, 0, 1, 0, 1, 0]))),
        Case("skewed labels: high raw agreement, low kappa",
             (np.array([1] * 18 + [0, 1]), np.array([1] * 17 + [0, 1, 1]))),
        Case("one rater uses a category the other never does", (np.array([0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 1]))),
    ]


def _kappa_raw_agreement(a, b):
    return float(np.mean(np.asarray(a) == np.asarray(b)))  # p_o, chance never subtracted


def _kappa_uniform_chance(a, b):
    a, b = np.asarray(a), np.asarray(b)
    p_o = float(np.mean(a == b))
    p_e = 1.0 / np.unique(np.concatenate([a, b])).size  # chance as if labels were uniform
    return (p_o - p_e) / (1.0 - p_e)


register(Exercise(
    name="cohens_kappa",
    chapter="03",
    summary="Cohen's kappa (p_o - p_e) / (1 - p_e) between two raters' labels",
    reference=cohens_kappa,
    cases=_kappa_cases,
    wrong=(_kappa_raw_agreement, _kappa_uniform_chance),
))

"""Chapter 12 (process reward models): aggregating step scores into a solution score; majority voting."""

from __future__ import annotations

from collections import Counter

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.prm import majority_vote, solution_scores


def _aggregate_cases() -> list[Case]:
    rng = np.random.default_rng(12)
    random_solutions = [rng.uniform(0.05, 1.0, size=k) for k in (3, 1, 5, 2, 4, 6)]
    long_sure = [np.full(8, 0.9), np.array([0.99, 0.6, 0.99])]  # min prefers the first, product the second
    edge = [np.array([0.7]), np.array([0.3, 0.0, 0.9]), np.array([0.5, 0.5]), np.array([1.0, 1.0, 1.0])]
    cases = []
    for aggregate in ("min", "prod"):
        cases += [
            Case(f"random step probabilities, aggregate={aggregate!r}", (random_solutions, aggregate)),
            Case(f"eight steps at 0.9 vs three with one at 0.6, aggregate={aggregate!r}", (long_sure, aggregate)),
            Case(f"one step only, a step at 0, a tie, all sure; aggregate={aggregate!r}", (edge, aggregate)),
        ]
    return cases


def _aggregate_reference(step_probs: list[np.ndarray], aggregate: str) -> np.ndarray:
    return solution_scores(step_probs, "prm", aggregate)


def _aggregate_mean(step_probs, aggregate):
    return np.array([float(np.mean(p)) for p in step_probs])


def _aggregate_without_answer(step_probs, aggregate):
    agg = np.min if aggregate == "min" else np.prod
    return np.array([float(agg(p[:-1])) for p in step_probs])  # the last entry (the answer, at EOS) left out


def _aggregate_last_only(step_probs, aggregate):
    return np.array([float(p[-1]) for p in step_probs])  # the ORM's way


register(Exercise(
    name="prm_solution_scores",
    chapter="12",
    summary="a PRM's solution score: the min or the product of its step probabilities",
    reference=_aggregate_reference,
    cases=_aggregate_cases,
    wrong=(_aggregate_mean, _aggregate_without_answer, _aggregate_last_only),
))


def _vote_cases() -> list[Case]:
    def rng(seed: int) -> np.random.Generator:
        return np.random.default_rng(seed)

    return [
        Case("a clear majority", ([3, 3, 5, 3, 7], rng(0))),
        Case("missing answers (None) don't vote", ([None, None, None, 4, 4, 5], rng(0))),
        Case("every answer missing", ([None, None], rng(0))),
        Case("no answers at all", ([], rng(0))),
        Case("a single answer", ([42], rng(0))),
        Case("a two-way tie, seed 0", ([9, 2, 2, 9, 5], rng(0))),
        Case("a two-way tie, seed 1", ([9, 2, 2, 9, 5], rng(1))),
        Case("a three-way tie, seed 0", ([8, 1, 5], rng(0))),
        Case("a three-way tie, seed 1", ([8, 1, 5], rng(1))),
        Case("a tie with missing answers, seed 1", ([None, 7, 3, None, 3, 7, None], rng(1))),
    ]


def _vote_reference(answers: list[int | None], rng: np.random.Generator) -> int | None:
    return majority_vote(answers, rng)


def _vote_counting_missing(answers, rng):
    counts = Counter(answers)  # None votes too
    top = max(counts.values()) if counts else 0
    tied = [a for a, c in counts.items() if c == top]
    return rng.choice(sorted(tied, key=lambda a: (a is None, a or 0))) if tied else None


def _vote_first_seen(answers, rng):
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else None  # ties go to the answer seen first


register(Exercise(
    name="majority_vote",
    chapter="12",
    summary="the most common final answer of N solutions (missing answers don't vote; ties broken at random)",
    reference=_vote_reference,
    cases=_vote_cases,
    wrong=(_vote_counting_missing, _vote_first_seen),
))

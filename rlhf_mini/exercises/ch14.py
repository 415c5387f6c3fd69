"""Chapter 14 (Constitutional AI): the rubric judge's preference from rubric scores, and one pass of
critique-and-revise over a constitution."""

from __future__ import annotations

import math

from rlhf_mini.constitution import (
    CONCISE,
    HARMLESS,
    HELPFUL,
    POLITE,
    ConstitutionalJudge,
    Principle,
    critique_and_revise,
    default_constitution,
)
from rlhf_mini.exercises import Case, Exercise, register

# ---------------------------------------------------------------------------------------------
# the judge: P_AI(a ≻ b) = σ(Σ_p w_p (s_p(a) − s_p(b)) / T)
# ---------------------------------------------------------------------------------------------


def _judge_reference(scores_a: dict[str, float], scores_b: dict[str, float], weights: dict[str, float],
                     temperature: float) -> float:
    """The package's ConstitutionalJudge on principles whose rubric returns the given scores."""
    def rubric(name: str):
        return lambda prompt, response: (scores_a if response == "a" else scores_b)[name]

    principles = [Principle(name, "", "", rubric(name)) for name in scores_a]
    return ConstitutionalJudge(principles, dict(weights), temperature).probability("", "a", "b")


def _judge_cases() -> list[Case]:
    a = {"harmless": 0.0, "helpful": 1.0, "polite": -1.0, "concise": 0.0}
    b = {"harmless": 0.0, "helpful": 1.0, "polite": 0.5, "concise": -1.0}
    return [
        Case("four principles, weights 1 (none given), T = 0.25", (a, b, {}, 0.25)),
        Case("politeness weighted 3×, the rest 1, T = 1", (a, b, {"polite": 3.0}, 1.0)),
        Case("every weight given, T = 2", (a, b, {"harmless": 2.0, "helpful": 1.0, "polite": 0.5,
                                                  "concise": 4.0}, 2.0)),
        Case("equal scores: the judge is indifferent (0.5)", (b, dict(b), {"polite": 2.0}, 0.25)),
        Case("a decisive judge: the exponent is far outside what exp() can take",
             ({"harmless": -2.0}, {"harmless": 1.0}, {"harmless": 100.0}, 0.01)),
    ]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def _judge_sign_flipped(scores_a, scores_b, weights, temperature):
    z = sum(weights.get(k, 1.0) * (scores_b[k] - scores_a[k]) for k in scores_a) / temperature
    return _sigmoid(z)  # P(b ≻ a)


def _judge_without_temperature(scores_a, scores_b, weights, temperature):
    return _sigmoid(sum(weights.get(k, 1.0) * (scores_a[k] - scores_b[k]) for k in scores_a))


def _judge_missing_weight_zero(scores_a, scores_b, weights, temperature):
    z = sum(weights.get(k, 0.0) * (scores_a[k] - scores_b[k]) for k in scores_a) / temperature
    return _sigmoid(z)  # principles without a weight ignored instead of weighing 1


register(Exercise(
    name="judge_probability",
    chapter="14",
    summary="the rubric judge's P(a ≻ b) = σ(Σ_p w_p (s_p(a) − s_p(b)) / T) from per-principle rubric scores",
    reference=_judge_reference,
    cases=_judge_cases,
    wrong=(_judge_sign_flipped, _judge_without_temperature, _judge_missing_weight_zero),
))


# ---------------------------------------------------------------------------------------------
# critique and revise: each principle's revision in turn, kept only when its score rises
# ---------------------------------------------------------------------------------------------

_CAPITAL = "What is the capital of Peru?"
_HARMFUL = "How do I poison a well?"


def _revise_cases() -> list[Case]:
    keywords = default_constitution()  # harmless, helpful, polite, concise: no language model
    return [
        Case("a rude opener", (keywords, _CAPITAL, "Ugh, that is obvious. The capital of Peru is Lima.")),
        Case("a rude opener and filler: both revisions, one after the other",
             (keywords, _CAPITAL, "Ugh, that is obvious. The capital of Peru is Lima. I hope this helps.")),
        Case("compliance with a harmful request", (keywords, _HARMFUL,
                                                   "Happy to help. Sure, here is how. First, wait until night.")),
        Case("a refusal already there: the rewrite does not raise the score, so it is not kept",
             (keywords, _HARMFUL, "I can't help with that.")),
        Case("a response that is all rudeness: the revision would be empty, so it is not kept",
             (keywords, _CAPITAL, "Ugh, that is silly.")),
        Case("a good answer: nothing to revise", (keywords, _CAPITAL, "The capital of Peru is Lima.")),
        Case("another order of principles", ([CONCISE, POLITE, HELPFUL, HARMLESS], _HARMFUL,
                                             "Ugh, if you must. Sure, here is how. Let me know.")),
    ]


def _revise_whenever_changed(principles, prompt, response):
    notes = []
    for p in principles:
        if p.revise is not None:
            revised = p.revise(prompt, response)
            if revised and revised != response:  # kept without checking that the score rose
                notes.append(f"{p.name}: {p.text}")
                response = revised
    return response, notes


def _revise_from_the_original(principles, prompt, response):
    original, notes = response, []
    for p in principles:
        if p.revise is None:
            continue
        revised = p.revise(prompt, original)  # each revision of the original, not of the last revision
        if revised and revised != original and p.score(prompt, revised) > p.score(prompt, original):
            notes.append(f"{p.name}: {p.text}")
            response = revised
    return response, notes


def _revise_keeps_empty(principles, prompt, response):
    notes = []
    for p in principles:
        if p.revise is None:
            continue
        revised = p.revise(prompt, response)
        if revised != response and p.score(prompt, revised) > p.score(prompt, response):
            notes.append(f"{p.name}: {p.text}")
            response = revised  # an empty revision kept
    return response, notes


register(Exercise(
    name="critique_and_revise",
    chapter="14",
    summary="one critique-and-revise pass: each principle's revision in turn, kept when its score rises",
    reference=critique_and_revise,
    cases=_revise_cases,
    wrong=(_revise_whenever_changed, _revise_from_the_original, _revise_keeps_empty),
))

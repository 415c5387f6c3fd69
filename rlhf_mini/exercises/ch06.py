"""Chapter 6 (preference data): from an 8-point Likert rating to a chosen/rejected pair, a simulated
labeler's Bradley–Terry label, and the good/bad quadrant of a pair."""

from __future__ import annotations

import numpy as np

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.labelstore import LIKERT_MAX, LIKERT_MIDPOINT

# ---------------------------------------------------------------------------------------------
# a Likert rating (1 = A much better … 8 = B much better) as chosen, rejected and the strength
# of the preference seen from the chosen side (1 = much better … 4 = slightly better)
# ---------------------------------------------------------------------------------------------


def _likert_reference(response_a: str, response_b: str, likert: int) -> tuple[str, str, int]:
    # the same rule as LabelStore.to_records, for one label
    if likert <= LIKERT_MIDPOINT:
        return response_a, response_b, likert
    return response_b, response_a, LIKERT_MAX + 1 - likert


def _likert_cases() -> list[Case]:
    a, b = "Paris is the capital of France.", "I think it might be Lyon, or maybe Paris."
    return [
        Case("likert 1: A much better", (a, b, 1)),
        Case("likert 3: A better", (a, b, 3)),
        Case("likert 4: A slightly better (the last point on A's side)", (a, b, 4)),
        Case("likert 5: B slightly better (the first point on B's side)", (a, b, 5)),
        Case("likert 7: B better", (a, b, 7)),
        Case("likert 8: B much better", (b, a, 8)),
    ]


def _likert_midpoint_to_b(response_a, response_b, likert):
    if likert < LIKERT_MIDPOINT:  # off by one: 4 ("A slightly better") goes to B
        return response_a, response_b, likert
    return response_b, response_a, LIKERT_MAX + 1 - likert


def _likert_strength_not_flipped(response_a, response_b, likert):
    chosen, rejected, _ = _likert_reference(response_a, response_b, likert)
    return chosen, rejected, likert  # 8 ("B much better") stored as if it were a weak preference


def _likert_strength_off_by_one(response_a, response_b, likert):
    if likert <= LIKERT_MIDPOINT:
        return response_a, response_b, likert
    return response_b, response_a, LIKERT_MAX - likert  # 8 becomes 0, off the scale


register(Exercise(
    name="likert_to_preference",
    chapter="06",
    summary="turn a 1–8 Likert rating of (A, B) into chosen, rejected and the strength seen from the chosen side",
    reference=_likert_reference,
    cases=_likert_cases,
    wrong=(_likert_midpoint_to_b, _likert_strength_not_flipped, _likert_strength_off_by_one),
))

# ---------------------------------------------------------------------------------------------
# a simulated labeler's noisy label: P(a ≻ b) = σ((u_a − u_b) / temperature), prefer a when U < P
# ---------------------------------------------------------------------------------------------


def _label_reference(utility_a: np.ndarray, utility_b: np.ndarray, temperature: float,
                     uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # σ(z) = (1 + tanh(z/2)) / 2 is σ without the overflow of exp(−z) at large |z|
    p_prefer_a = 0.5 * (1.0 + np.tanh((utility_a - utility_b) / temperature / 2.0))
    return p_prefer_a, uniforms < p_prefer_a


def _label_cases() -> list[Case]:
    rng = np.random.default_rng(0)

    def case(n: int, temperature: float, scale: float = 1.0):
        return (scale * rng.normal(size=n), scale * rng.normal(size=n), temperature, rng.random(n))

    ties = rng.normal(size=5)
    return [
        Case("eight random pairs, temperature 0.5 (the course's labelers)", case(8, 0.5)),
        Case("twelve random pairs, temperature 2 (a noisy labeler)", case(12, 2.0)),
        Case("tied utilities: P = 0.5, the draw alone decides", (ties, ties.copy(), 0.5, rng.random(5))),
        Case("huge gaps at temperature 0.01: P is 0 or 1 to machine precision", case(6, 0.01, 50.0)),
        Case("a single pair", case(1, 1.0)),
    ]


def _label_sign_flipped(utility_a, utility_b, temperature, uniforms):
    return _label_reference(utility_b, utility_a, temperature, uniforms)  # P(b ≻ a) instead


def _label_times_temperature(utility_a, utility_b, temperature, uniforms):
    gap = (utility_a - utility_b) * temperature  # a larger temperature makes the labeler *less* noisy
    return _label_reference(gap, np.zeros_like(gap), 1.0, uniforms)


def _label_draw_reversed(utility_a, utility_b, temperature, uniforms):
    p_prefer_a, _ = _label_reference(utility_a, utility_b, temperature, uniforms)
    return p_prefer_a, uniforms > p_prefer_a  # prefers a with probability 1 − P


register(Exercise(
    name="bradley_terry_label",
    chapter="06",
    summary="a simulated labeler's P(a ≻ b) = σ((u_a − u_b)/temperature) and its label from uniform draws",
    reference=_label_reference,
    cases=_label_cases,
    wrong=(_label_sign_flipped, _label_times_temperature, _label_draw_reversed),
    atol=1e-9,
))


# ---------------------------------------------------------------------------------------------
# the quadrant of a pair: good–good, good–bad or bad–bad (good = gold utility > 0)
# ---------------------------------------------------------------------------------------------


def _quadrant_reference(chosen_gold: np.ndarray, rejected_gold: np.ndarray) -> list[str]:
    good_chosen, good_rejected = np.asarray(chosen_gold) > 0, np.asarray(rejected_gold) > 0
    return [str(q) for q in np.select([good_chosen & good_rejected, good_chosen ^ good_rejected],
                                      ["good–good", "good–bad"], "bad–bad")]


def _quadrant_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    return [
        Case("ten random pairs", (rng.normal(size=10), rng.normal(size=10))),
        Case("the good response was rejected: still good–bad", (np.array([-1.0, -0.2, 2.0]),
                                                                 np.array([1.5, 0.3, -2.0]))),
        Case("gold utility exactly 0 is not good", (np.array([0.0, 0.0, 0.5, 0.0]),
                                                    np.array([0.0, 0.5, 0.0, -0.5]))),
        Case("a tie in gold utility", (np.array([0.8, -0.8]), np.array([0.8, -0.8]))),
        Case("a single pair", (np.array([1.0]), np.array([2.0]))),
        Case("no pairs: an empty list", (np.zeros(0), np.zeros(0))),
    ]


def _quadrant_zero_is_good(chosen_gold, rejected_gold):
    return _quadrant_reference(np.asarray(chosen_gold) + 1e-12 * (np.asarray(chosen_gold) == 0),
                               np.asarray(rejected_gold) + 1e-12 * (np.asarray(rejected_gold) == 0))


def _quadrant_by_side(chosen_gold, rejected_gold):
    names = {(True, True): "good–good", (True, False): "good–bad", (False, True): "bad–good",
             (False, False): "bad–bad"}  # a good rejected response makes a fourth quadrant
    return [names[(bool(c > 0), bool(r > 0))] for c, r in zip(chosen_gold, rejected_gold)]


register(Exercise(
    name="pair_quadrant",
    chapter="06",
    summary="classify each pair as good–good, good–bad or bad–bad from the gold utilities of its two responses",
    reference=_quadrant_reference,
    cases=_quadrant_cases,
    wrong=(_quadrant_zero_is_good, _quadrant_by_side),
))


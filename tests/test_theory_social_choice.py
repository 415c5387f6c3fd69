import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_mini.theory.social_choice import (
    borda,
    condorcet_winner,
    copeland,
    find_axiom_violation,
    find_condorcet_cycle,
    majority_matrix,
    plurality,
    pooled_bradley_terry,
    rankings_to_comparisons,
)

# Hand example: 4 voters A>B>C, 3 voters B>C>A, 2 voters C>B>A (A=0, B=1, C=2).
HAND = np.array([[0, 1, 2]] * 4 + [[1, 2, 0]] * 3 + [[2, 1, 0]] * 2)
CYCLE = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])


def test_hand_example():
    np.testing.assert_array_equal(plurality(HAND), [4, 3, 2])
    # Borda: A = 4*2 = 8; B = 4*1 + 3*2 + 2*1 = 12; C = 3*1 + 2*2 = 7.
    np.testing.assert_array_equal(borda(HAND), [8, 12, 7])
    m = majority_matrix(HAND)
    assert m[1, 0] == 5 and m[0, 1] == 4 and m[1, 2] == 7
    assert condorcet_winner(HAND) == 1  # B beats A 5-4 and C 7-2, though plurality picks A
    np.testing.assert_array_equal(copeland(HAND), [0, 2, 1])  # C beats A 5-4
    s = pooled_bradley_terry(HAND)
    assert s.argmax() == 1


def test_condorcet_cycle():
    assert condorcet_winner(CYCLE) is None
    cycle = find_condorcet_cycle(CYCLE)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 4
    m = majority_matrix(CYCLE)
    for a, b in zip(cycle[:-1], cycle[1:]):
        assert m[a, b] > m[b, a]
    assert find_condorcet_cycle(HAND) is None


def test_rankings_to_comparisons():
    w, loss = rankings_to_comparisons(np.array([[2, 0, 1]]))
    assert sorted(zip(w.tolist(), loss.tolist())) == [(0, 1), (2, 0), (2, 1)]


@pytest.mark.parametrize(
    "ballots",
    [[[0, 0, 1]], [[0, 1, 3]], [0, 1, 2], [[0.0, 1.0]], np.zeros((0, 3), dtype=int)],
)
def test_bad_ballots(ballots):
    with pytest.raises(ValueError):
        borda(ballots)


def test_named_rules_fail_named_axioms():
    assert find_axiom_violation(plurality, "condorcet") is not None
    assert find_axiom_violation(borda, "condorcet") is not None
    assert find_axiom_violation(plurality, "iia") is not None
    assert find_axiom_violation(borda, "iia") is not None
    assert find_axiom_violation(copeland, "iia", n_candidates=4) is not None
    # Copeland always elects a Condorcet winner; every rule here is Pareto-efficient.
    assert find_axiom_violation(copeland, "condorcet", max_tries=300) is None
    assert find_axiom_violation(borda, "pareto", max_tries=300) is None
    assert find_axiom_violation(plurality, "majority_cycle") is not None
    with pytest.raises(ValueError):
        find_axiom_violation(borda, "monotonicity")


def test_iia_violation_is_genuine():
    v = find_axiom_violation(borda, "iia", seed=1)
    assert v is not None and v.other_ballots is not None


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(2, 6), st.integers(0, 10_000))
def test_borda_total_is_constant(n_voters, n_candidates, seed):
    rng = np.random.default_rng(seed)
    ballots = np.argsort(rng.random((n_voters, n_candidates)), axis=1)
    assert borda(ballots).sum() == n_voters * n_candidates * (n_candidates - 1) / 2
    assert plurality(ballots).sum() == n_voters
    m = majority_matrix(ballots)
    np.testing.assert_array_equal(m + m.T, n_voters * (1 - np.eye(n_candidates)))

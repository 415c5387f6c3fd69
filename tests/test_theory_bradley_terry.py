import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_mini.theory.bradley_terry import (
    bootstrap_bradley_terry,
    bootstrap_interval,
    bradley_terry_hessian_ci,
    bradley_terry_standard_errors,
    fit_bradley_terry,
    simulate_comparisons,
    win_probability,
)
from rlhf_mini.theory.elo import elo_ratings, elo_to_log_strength


def _pairs(w12: int, w21: int) -> tuple[np.ndarray, np.ndarray]:
    winners = np.array([0] * w12 + [1] * w21)
    return winners, 1 - winners


def test_two_items_closed_form():
    winners, losers = _pairs(7, 3)
    s = fit_bradley_terry(winners, losers, 2)
    assert s[0] - s[1] == pytest.approx(np.log(7 / 3), abs=1e-8)
    assert s.sum() == pytest.approx(0.0, abs=1e-12)


def test_two_items_standard_error_closed_form():
    # Var(s1 - s2) = 1 / (n p (1 - p)); centred s1 = (s1 - s2) / 2 has SE half of that.
    winners, losers = _pairs(30, 10)
    se = bradley_terry_standard_errors(winners, losers, 2)
    p = 0.75
    assert se[0] == pytest.approx(0.5 / np.sqrt(40 * p * (1 - p)), rel=1e-6)


def test_recovers_strengths_and_gradient_zero():
    true = np.linspace(-1.5, 1.5, 8)
    w, loss = simulate_comparisons(true, 4000, seed=1)
    s = fit_bradley_terry(w, loss, 8)
    assert np.corrcoef(s, true)[0, 1] > 0.98
    # MLE condition: observed wins = expected wins for every item.
    p = win_probability(s[w], s[loss])
    observed = np.bincount(w, minlength=8)
    expected = np.bincount(w, weights=p, minlength=8) + np.bincount(loss, weights=1 - p, minlength=8)
    np.testing.assert_allclose(observed, expected, atol=1e-6)


def test_l2_shrinks_towards_zero():
    winners, losers = _pairs(9, 1)
    assert np.abs(fit_bradley_terry(winners, losers, 2, l2=5.0)).max() < np.log(9) / 2


def test_not_strongly_connected_raises_and_names_items():
    # item 2 never loses; items 0 and 1 play each other.
    winners = np.array([0, 1, 2, 2])
    losers = np.array([1, 0, 0, 1])
    with pytest.raises(ValueError, match=r"\[\[2\]\]"):
        fit_bradley_terry(winners, losers, 3)
    s = fit_bradley_terry(winners, losers, 3, l2=0.1)  # the MAP fit exists
    assert s[2] > s[0] and np.all(np.isfinite(s))


@pytest.mark.parametrize(
    "winners, losers, n, message",
    [
        ([0, 1], [1], 2, "differ in length"),
        ([0, 3], [1, 0], 3, "outside range"),
        ([0.5, 1], [1, 0], 2, "integer"),
        ([], [], 2, "empty"),
        ([1], [1], 2, "itself"),
        (["a"], ["b"], 2, "integer"),
    ],
)
def test_bad_input(winners, losers, n, message):
    with pytest.raises(ValueError, match=message):
        fit_bradley_terry(winners, losers, n)


def test_intervals_cover_truth_mostly():
    true = np.linspace(-1, 1, 6)
    true -= true.mean()
    covered = []
    for seed in range(20):
        w, loss = simulate_comparisons(true, 600, seed=seed)
        _, lo, hi = bradley_terry_hessian_ci(w, loss, 6)
        covered.append((lo <= true) & (true <= hi))
    assert 0.88 < np.mean(covered) <= 1.0


def test_bootstrap_matches_hessian_width():
    true = np.linspace(-1, 1, 5)
    w, loss = simulate_comparisons(true, 800, seed=3)
    samples = bootstrap_bradley_terry(w, loss, 5, n_boot=100, seed=0)
    assert samples.shape == (100, 5)
    se = bradley_terry_standard_errors(w, loss, 5)
    np.testing.assert_allclose(samples.std(axis=0), se, rtol=0.3)
    lo, hi = bootstrap_interval(samples)
    assert np.all(lo < hi)


def test_elo_single_update_by_hand():
    r = elo_ratings([0], [1], 2, k=32, base=1000, scale=400)
    np.testing.assert_allclose(r, [1016.0, 984.0])
    r2 = elo_ratings([0, 1], [1, 0], 2)
    expected_1 = 1 / (1 + 10 ** ((1016 - 984) / 400))
    assert r2[1] == pytest.approx(984 + 32 * (1 - expected_1))


def test_elo_is_sgd_on_bt_likelihood():
    # One Elo step == one gradient step on log sigma(s_w - s_l) with lr k ln10 / scale.
    k, scale = 24.0, 400.0
    r = elo_ratings([0], [1], 2, k=k, scale=scale)
    s = elo_to_log_strength(r, scale=scale)
    lr = k * np.log(10) / scale
    grad = 1 - win_probability(0.0, 0.0)
    np.testing.assert_allclose(s, [lr * grad, -lr * grad])


def test_elo_tracks_bt_fit():
    true = np.linspace(-1.5, 1.5, 6)
    w, loss = simulate_comparisons(true, 3000, seed=0)
    elo = elo_to_log_strength(elo_ratings(w, loss, 6, k=8))
    assert np.corrcoef(elo, fit_bradley_terry(w, loss, 6))[0, 1] > 0.95


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=2, max_size=6),
    st.floats(-100, 100),
)
def test_win_probability_shift_invariant(strengths, shift):
    s = np.array(strengths)
    p = win_probability(s[:, None], s[None, :])
    q = win_probability(s[:, None] + shift, s[None, :] + shift)
    np.testing.assert_allclose(p, q, atol=1e-9)
    np.testing.assert_allclose(p + p.T, 1.0, atol=1e-12)

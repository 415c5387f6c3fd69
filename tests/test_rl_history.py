import numpy as np
import pytest

from rlhf_mini.theory.bandits import RANDOM_WALK_TRUE_VALUES, td0_random_walk


def _rms(history: np.ndarray) -> np.ndarray:
    return np.sqrt(((history - RANDOM_WALK_TRUE_VALUES) ** 2).mean(axis=-1))


def test_random_walk_starts_from_one_half_everywhere():
    history = td0_random_walk(3, n_runs=2, seed=0)
    assert history.shape == (2, 4, 5)
    assert np.all(history[:, 0] == 0.5)
    assert _rms(history)[0, 0] == pytest.approx(np.sqrt(5 / 90))  # errors 1/3, 1/6, 0, 1/6, 1/3


def test_both_methods_converge_to_the_true_values_and_td_has_less_spread():
    td, mc = (td0_random_walk(300, alpha=0.02, n_runs=20, method=m, seed=1) for m in ("td", "mc"))
    for history in (td, mc):
        # averaged over runs, the estimates sit on v(k) = k / 6 (constant alpha leaves only noise)
        assert np.abs(history[:, -1].mean(axis=0) - RANDOM_WALK_TRUE_VALUES).max() < 0.06
    # one run's estimates scatter less with TD's bootstrapped targets than with MC's returns
    assert _rms(td)[:, -1].mean() < 0.5 * _rms(mc)[:, -1].mean()


def test_first_td_episode_moves_only_the_state_next_to_the_exit():
    history = td0_random_walk(1, alpha=0.1, n_runs=20, seed=0)
    change = history[:, 1] - history[:, 0]
    # inside the chain r + V(s') - V(s) = 0 + 0.5 - 0.5: only the last step (into a terminal) moves V
    assert np.all((change != 0).sum(axis=1) == 1)
    assert set(np.round(change[change != 0], 6)) <= {-0.05, 0.05}
    assert np.array_equal(history, td0_random_walk(1, alpha=0.1, n_runs=20, seed=0))  # seeded


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="'td' or 'mc'"):
        td0_random_walk(1, method="dp")

import numpy as np

from rlhf_mini.theory.preference_rl import (
    GridWorld,
    SimulatedHuman,
    fit_reward_from_comparisons,
    fit_reward_from_scores,
    normalized_return,
    plan,
    random_policy_return,
    run_feedback_experiment,
    true_return,
)


def test_planning_on_true_reward_is_optimal():
    env = GridWorld()
    assert normalized_return(env, env.true_reward) == 1.0
    assert true_return(env, plan(env, env.true_reward)) > random_policy_return(env)
    # Shifting the reward by a constant changes nothing over a fixed horizon.
    assert normalized_return(env, env.true_reward + 3.0) == 1.0


def test_reward_fits_recover_truth_with_clean_data():
    rng = np.random.default_rng(0)
    n_states = 5
    truth = np.array([0.0, 1.0, -1.0, 0.5, 2.0])
    states = rng.integers(0, n_states, 2000)
    theta = fit_reward_from_scores(states, truth[states] + 0.01 * rng.standard_normal(2000), n_states, l2=0.0)
    np.testing.assert_allclose(theta - theta.mean(), truth - truth.mean(), atol=0.01)
    phi1 = rng.poisson(1.0, (4000, n_states)).astype(float)
    phi2 = rng.poisson(1.0, (4000, n_states)).astype(float)
    prefs = (rng.random(4000) < 1 / (1 + np.exp(-(phi1 - phi2) @ truth))).astype(float)
    theta = fit_reward_from_comparisons(phi1, phi2, prefs, l2=1e-3)
    assert np.corrcoef(theta, truth)[0, 1] > 0.98


def test_comparisons_beat_miscalibrated_scalar_at_large_budget():
    res = run_feedback_experiment(GridWorld(), SimulatedHuman(), [800], list(range(6)))
    assert res["comparison"].mean() > res["scalar"].mean() + 0.05

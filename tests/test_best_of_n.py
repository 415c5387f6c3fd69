"""Best-of-N: argmax selection, the measured KL against log n − (n − 1)/n, the unbiased estimator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rlhf_mini.best_of_n import best_of_n, best_of_n_expected, measured_best_of_n_kl
from rlhf_mini.sampling import best_of_n_kl
from rlhf_mini.scoring import sample_pool
from rlhf_mini.worlds import get_world


def length_scorer(prompts, responses):
    # a continuous-ish score that differs between samples: characters, plus a tiny prompt-dependent offset
    return np.array([len(r) + 0.001 * (hash(p) % 7) for p, r in zip(prompts, responses)], dtype=float)


def test_best_of_n_picks_the_argmax(tiny_policy, tiny_tokenizer):
    world = get_world("sentiment")
    prompts = world.prompts(3, seed=0)
    result = best_of_n(tiny_policy, tiny_tokenizer, world, prompts, 5, length_scorer, max_new_tokens=12,
                       seed=1, progress=False)
    assert result.scores.shape == (3, 5)
    assert len(result.samples) == 3 and all(len(row) == 5 for row in result.samples)
    for i, prompt in enumerate(prompts):
        expected = length_scorer([prompt] * 5, result.samples[i])
        np.testing.assert_allclose(result.scores[i], expected)
        assert result.chosen_index[i] == int(np.argmax(expected))
        assert result.responses[i] == result.samples[i][result.chosen_index[i]]
        assert result.chosen_scores[i] == expected.max()


def test_sample_pool_is_seeded(tiny_policy, tiny_tokenizer):
    world = get_world("sentiment")
    prompts = world.prompts(2, seed=0)
    a = sample_pool(tiny_policy, tiny_tokenizer, world, prompts, 3, max_new_tokens=8, seed=3, progress=False)
    b = sample_pool(tiny_policy, tiny_tokenizer, world, prompts, 3, max_new_tokens=8, seed=3, progress=False)
    assert a == b


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_measured_kl_matches_analytic_for_continuous_scores(n):
    scores = np.random.default_rng(n).normal(size=(40, 256))
    measured = measured_best_of_n_kl(scores, n)
    assert measured == pytest.approx(best_of_n_kl(n), rel=0.01)


def test_measured_kl_is_smaller_with_ties_and_zero_for_n1():
    rng = np.random.default_rng(0)
    tied = rng.integers(0, 4, size=(30, 256)).astype(float)  # four reward levels
    for n in (2, 4, 8):
        assert measured_best_of_n_kl(tied, n) < best_of_n_kl(n)
    assert measured_best_of_n_kl(tied, 1) == pytest.approx(0.0, abs=1e-12)
    # a constant reward: best-of-n is π itself
    assert measured_best_of_n_kl(np.ones((2, 10)), 8) == pytest.approx(0.0, abs=1e-12)


def test_measured_kl_on_a_two_level_reward_is_exact():
    # p(high) = 1/2: BoN-n puts 1 − 2^−n on it
    scores = np.array([[0.0, 1.0] * 50])
    n = 3
    p_hi = 1 - 0.5**n
    expected = p_hi * np.log(p_hi / 0.5) + (1 - p_hi) * np.log((1 - p_hi) / 0.5)
    assert measured_best_of_n_kl(scores, n) == pytest.approx(expected)


def test_best_of_n_expected_is_the_mean_over_all_subsets():
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(3, 7))
    gold = rng.normal(size=(3, 7))
    for n in (1, 2, 3, 7):
        est = best_of_n_expected(proxy, n, gold)
        for i in range(3):
            subsets = list(itertools.combinations(range(7), n))
            exact = np.mean([gold[i, max(s, key=lambda j: proxy[i, j])] for s in subsets])
            assert est[i] == pytest.approx(exact)
    np.testing.assert_allclose(best_of_n_expected(proxy, 1), proxy.mean(1))
    np.testing.assert_allclose(best_of_n_expected(proxy, 7), proxy.max(1))


def test_best_of_n_expected_with_ties_breaks_them_uniformly_and_ignores_pool_order():
    rng = np.random.default_rng(3)
    proxy = rng.integers(0, 3, size=(4, 7)).astype(float)  # discrete scores: many ties
    gold = rng.normal(size=(4, 7))
    for n in (2, 3, 5):
        est = best_of_n_expected(proxy, n, gold)
        for i in range(4):
            # the best of each subset, ties broken uniformly: the mean gold of its tied maxima
            exact = np.mean([np.mean([gold[i, j] for j in s if proxy[i, j] == max(proxy[i, list(s)])])
                             for s in itertools.combinations(range(7), n)])
            assert est[i] == pytest.approx(exact)
        shuffled = rng.permutation(7)
        np.testing.assert_allclose(best_of_n_expected(proxy[:, shuffled], n, gold[:, shuffled]), est)


def test_best_of_n_expected_handles_large_pools():
    proxy = np.random.default_rng(2).normal(size=(2, 256))
    est = best_of_n_expected(proxy, 256)
    np.testing.assert_allclose(est, proxy.max(1))
    assert np.all(np.diff([best_of_n_expected(proxy, n).mean() for n in (1, 4, 16, 64, 256)]) > 0)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="pool of at least"):
        best_of_n_expected(np.zeros((2, 4)), 5)
    with pytest.raises(ValueError, match="proxy's shape"):
        best_of_n_expected(np.zeros((2, 4)), 2, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="values contain NaN"):
        best_of_n_expected(np.zeros((2, 4)), 2, np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="n must be"):
        measured_best_of_n_kl(np.zeros((2, 4)), 0)
    with pytest.raises(ValueError, match="NaN"):
        measured_best_of_n_kl(np.array([[0.0, np.nan]]), 2)


def test_sweep_config_validation():
    from rlhf_mini.best_of_n import BestOfNConfig

    with pytest.raises(ValueError, match="pool_size"):
        BestOfNConfig(ns=(1, 8), pool_size=4)
    with pytest.raises(ValueError, match="ns"):
        BestOfNConfig(ns=(0, 2))
    with pytest.raises(ValueError, match="temperature"):
        BestOfNConfig(temperature=0.0)


def test_sweep_measures_every_n_from_one_pool_and_round_trips(tiny_policy, tiny_tokenizer, tmp_path):
    from rlhf_mini.best_of_n import BestOfNConfig, best_of_n_sweep, load_best_of_n_sweep

    world = get_world("sentiment")
    config = BestOfNConfig(ns=(1, 2, 4), pool_size=8, n_prompts=3, max_new_tokens=10, seed=2)
    sweep = best_of_n_sweep(config, tiny_policy, tiny_tokenizer, world, length_scorer, progress=False)
    assert sweep.proxy.shape == sweep.gold.shape == (3, 8)
    assert [row["n"] for row in sweep.metrics] == [1, 2, 4]
    flat_prompts = [p for p in sweep.prompts for _ in range(8)]
    flat_responses = [r for row in sweep.samples for r in row]
    np.testing.assert_allclose(sweep.gold.ravel(), world.gold_rewards(flat_prompts, flat_responses))
    # N = 1 is the pool's mean; the proxy of the pick cannot fall as N grows
    assert sweep.metrics[0]["proxy"] == pytest.approx(sweep.proxy.mean())
    assert sweep.metrics[0]["gold"] == pytest.approx(sweep.gold.mean())
    assert sweep.metrics[0]["kl_measured"] == pytest.approx(0.0, abs=1e-12)
    assert sweep.metrics[0]["proxy"] <= sweep.metrics[1]["proxy"] <= sweep.metrics[2]["proxy"]
    loaded = load_best_of_n_sweep(sweep.save(tmp_path))
    assert loaded.samples == sweep.samples and loaded.config == config
    assert loaded.metrics == sweep.metrics  # JSON keeps every float64 digit
    lines = (tmp_path / "pool.jsonl").read_text().splitlines()
    (tmp_path / "pool.jsonl").write_text("\n".join(lines[:1] + ['{"prompt": "x", "responses": []}']) + "\n")
    with pytest.raises(ValueError, match=r"pool.jsonl, line 2: missing field 'proxy'"):
        load_best_of_n_sweep(tmp_path)

import itertools

import numpy as np
import pytest

from rlhf_mini.eval import (
    ELO_BASE,
    ELO_SCALE,
    arena_leaderboard,
    battle_prompts,
    bootstrap_mean,
    fit_length_controlled,
    fit_temperature,
    gold_battles,
    gold_win_rate,
    judge_win_rate,
    length_biased_judge,
    mt_bench,
)
from rlhf_mini.worlds import get_world


def test_bootstrap_ci_covers_true_rate():
    """A 95% percentile interval covers the true win rate in about 95% of simulated evaluations."""
    rng = np.random.default_rng(0)
    true_rate, n, covered, widths = 0.62, 150, 0, []
    for trial in range(200):
        outcomes = (rng.random(n) < true_rate).astype(float)
        ci = bootstrap_mean(outcomes, n_boot=400, seed=trial)
        covered += ci["ci_low"] <= true_rate <= ci["ci_high"]
        widths.append(ci["ci_high"] - ci["ci_low"])
    # two-sided: an interval too wide (say [0, 1]) would cover every time
    assert 0.9 <= covered / 200 <= 0.99
    normal_width = 2 * 1.96 * np.sqrt(true_rate * (1 - true_rate) / n)
    assert np.mean(widths) == pytest.approx(normal_width, rel=0.1)


def test_gold_win_rate_ties_and_order():
    world = get_world("assistant")
    prompt = "What is the capital of " + world.atlas[0].name + "?"
    good = world.fact_sentence(world.atlas[0].name, "capital", world.atlas[0].capital)
    bad = "Ugh, that is obvious."
    r = gold_win_rate(world, [prompt] * 4, [good, good, bad, good], [bad, bad, good, good], n_boot=200)
    assert r["win_rate"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert r["ci_low"] <= r["win_rate"] <= r["ci_high"]


def test_win_rate_bad_input():
    world = get_world("assistant")
    with pytest.raises(ValueError, match="differ in length"):
        gold_win_rate(world, ["a", "b"], ["x"], ["y", "z"])
    with pytest.raises(ValueError, match="no prompts"):
        gold_win_rate(world, [], [], [])
    with pytest.raises(ValueError, match="n_boot"):
        gold_win_rate(world, ["a"], ["x"], ["y"], n_boot=0)
    with pytest.raises(ValueError, match="probabilities"):
        judge_win_rate(lambda p, a, b: 2.0, ["a"], ["x"], ["y"])
    with pytest.raises(ValueError, match="entry 1 is nan"):
        bootstrap_mean(np.array([1.0, np.nan, 0.0]))


def test_length_controlled_removes_length_bias():
    """A judge that only likes length: raw win rate far from ½, length-controlled close to ½."""
    rng = np.random.default_rng(1)
    n = 400
    diff = rng.normal(2.0, 3.0, size=n)  # A is usually longer
    prefs = 1 / (1 + np.exp(-0.8 * np.tanh(diff / diff.std())))
    theta, phi = fit_length_controlled(prefs, diff)
    assert abs(theta) < 0.05 and phi > 0.5
    world = get_world("assistant")
    prompts = world.prompts(200, seed=0)
    a = [world.sample_response(p, rng) for p in prompts]
    judge = length_biased_judge(world, length_bias=0.4)
    pads = ["I hope this helps.", "There is much more to say about it."]
    padded = [" ".join([r, *pads[: rng.integers(0, 3)]]) for r in a]
    raw = judge_win_rate(judge, prompts, padded, a, n_boot=50)
    lc = judge_win_rate(judge, prompts, padded, a, length_controlled=True, n_boot=50)
    assert raw["win_rate"] > 0.6  # the biased judge pays for padding ...
    assert lc["length_coef"] > 0 and lc["win_rate"] < raw["win_rate"] - 0.05
    gold = gold_win_rate(world, prompts, padded, a, n_boot=50)
    assert gold["win_rate"] < 0.5  # ... which gold penalises


def test_arena_recovers_order_and_elo_scale():
    rng = np.random.default_rng(0)
    names = ["base", "sft", "rlhf"]
    strength = {"base": -1.0, "sft": 0.0, "rlhf": 1.0}
    battles = []
    for _ in range(600):
        x, y = rng.choice(3, size=2, replace=False)
        a, b = names[x], names[y]
        p = 1 / (1 + np.exp(-(strength[a] - strength[b])))
        u = rng.random()
        battles.append((a, b, 0.5 if abs(u - p) < 0.02 else float(u < p)))
    table = arena_leaderboard(battles, names, n_boot=50, seed=0, l2=0.0)
    assert list(table.policy) == ["rlhf", "sft", "base"]
    assert table.elo.mean() == pytest.approx(ELO_BASE)
    gap = table.elo.iloc[0] - table.elo.iloc[2]
    assert gap == pytest.approx(2 * ELO_SCALE, rel=0.3)
    assert (table.ci_low <= table.elo).all() and (table.elo <= table.ci_high).all()


def test_arena_intervals_resample_prompts_when_battles_share_them():
    """Battles on one prompt are correlated; only a bootstrap over prompts covers at 95%.

    Each prompt draws one utility per policy (strength + N(0, 1)) and every pair battles on it, as
    ``gold_battles`` does. The target is the Bradley–Terry fit on 40,000 such prompts.
    """
    names = [f"p{i}" for i in range(6)]
    strength = np.linspace(-0.75, 0.75, 6)
    pairs = list(itertools.combinations(range(6), 2))

    def battles(n_prompts, rng):
        u = strength + rng.standard_normal((n_prompts, 6))
        return [(names[x], names[y], float(u[p, x] > u[p, y])) for p in range(n_prompts) for x, y in pairs]

    rng = np.random.default_rng(0)
    truth = arena_leaderboard(battles(40_000, rng), names, n_boot=1, l2=0.0).set_index("policy").elo.loc[names]
    trials, n_prompts = 60, 40
    coverage, width = {"prompts": 0.0, "battles": 0.0}, {"prompts": 0.0, "battles": 0.0}
    for trial in range(trials):
        sample = battles(n_prompts, rng)
        for unit, groups in (("prompts", battle_prompts(n_prompts, 6)), ("battles", None)):
            table = arena_leaderboard(sample, names, n_boot=60, seed=trial, groups=groups, l2=0.0)
            table = table.set_index("policy").loc[names]
            coverage[unit] += ((table.ci_low <= truth) & (truth <= table.ci_high)).mean() / trials
            width[unit] += (table.ci_high - table.ci_low).mean() / trials
    assert 0.88 <= coverage["prompts"] <= 0.99
    assert coverage["battles"] < 0.85  # too narrow: the correlated battles counted as independent
    assert width["prompts"] > 1.3 * width["battles"]


def test_battle_prompts_follow_gold_battles_order():
    assert battle_prompts(2, 3).tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="groups has 2 labels for 3 battles"):
        arena_leaderboard([("a", "b", 1), ("a", "b", 0), ("b", "a", 1)], ["a", "b"], groups=[0, 1])


def test_arena_bad_input():
    with pytest.raises(ValueError, match="unknown policy"):
        arena_leaderboard([("a", "c", 1)], ["a", "b"])
    with pytest.raises(ValueError, match="outcome"):
        arena_leaderboard([("a", "b", 2)], ["a", "b"])
    with pytest.raises(ValueError, match="itself"):
        arena_leaderboard([("a", "a", 1)], ["a", "b"])
    with pytest.raises(ValueError, match="no battles"):
        arena_leaderboard([], ["a", "b"])


def test_arena_gives_a_policy_without_battles_no_rating():
    table = arena_leaderboard([("a", "b", 1), ("a", "b", 0), ("a", "b", 1)], ["a", "b", "idle"], n_boot=50)
    idle = table[table.policy == "idle"].iloc[0]
    assert idle.battles == 0 and np.isnan(idle.elo) and np.isnan(idle.ci_low) and np.isnan(idle.win_rate)
    assert list(table.policy) == ["a", "b", "idle"]


def test_gold_battles_and_mt_bench():
    world = get_world("assistant")
    prompts = world.prompts(20, seed=3)
    rng = np.random.default_rng(0)
    good = []
    for p in prompts:
        if world.is_harmful(p):
            good.append("I won't help with that, it is harmful.")
        else:
            c, attr = world._question_index[p]
            good.append(world.fact_sentence(c, attr, world.by_name[c].fact(attr)))
    bad = [world.sample_response(p, rng) + " What a silly question." for p in prompts]
    battles = gold_battles(world, prompts, {"good": good, "bad": bad})
    assert len(battles) == 20 and all(o == 1.0 for _, _, o in battles)
    table = arena_leaderboard(battles, ["good", "bad"], n_boot=20)
    assert table.policy.iloc[0] == "good"

    lookup = dict(zip(prompts, good))

    def oracle(contexts):  # answers the question asked in the first turn, again in the second
        return [next(v for k, v in lookup.items() if f"<|user|>{k}\n" in c) for c in contexts]

    scores = mt_bench(world, oracle, prompts, n_boot=50)
    assert scores["turn1"] > 6 and scores["turn2"] == pytest.approx(scores["turn1"])

    def forgets_in_turn_two(contexts):  # drops an answer in the second turn
        answers = oracle(contexts)
        return answers if "Are you sure" not in contexts[0] else answers[:-1]

    with pytest.raises(ValueError, match="19 second-turn responses for 20 prompts"):
        mt_bench(world, forgets_in_turn_two, prompts, n_boot=50)


def test_fit_length_controlled_bad_input():
    with pytest.raises(ValueError, match="one length"):
        fit_length_controlled(np.array([0.5, 1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        fit_length_controlled(np.array([]), np.array([]))
    with pytest.raises(ValueError, match=r"entry 1 is 1.5"):
        fit_length_controlled(np.array([0.5, 1.5]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="finite"):
        fit_length_controlled(np.array([0.5, np.nan]), np.array([1.0, 2.0]))


def test_fit_temperature_recovers_the_overconfidence_factor():
    # Pairs whose true P(a ≻ b) = σ(Δ); the model reports margins 3Δ (overconfident) or Δ/2.
    rng = np.random.default_rng(0)
    true_margin = rng.normal(0.0, 1.5, 20_000)
    a_wins = rng.random(true_margin.size) < 1 / (1 + np.exp(-true_margin))
    chosen_minus_rejected = np.where(a_wins, true_margin, -true_margin)
    assert abs(fit_temperature(3.0 * chosen_minus_rejected) / 3.0 - 1) < 0.05
    assert abs(fit_temperature(0.5 * chosen_minus_rejected) / 0.5 - 1) < 0.05
    assert abs(fit_temperature(chosen_minus_rejected) - 1) < 0.05


def test_fit_temperature_rejects_bad_margins():
    with pytest.raises(ValueError, match="non-empty"):
        fit_temperature(np.array([]))
    with pytest.raises(ValueError, match="non-finite"):
        fit_temperature(np.array([1.0, np.nan]))

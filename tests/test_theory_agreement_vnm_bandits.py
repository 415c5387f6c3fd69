import numpy as np
import pytest

from rlhf_mini.theory.agreement import cohens_kappa, fleiss_kappa
from rlhf_mini.theory.bandits import (
    ContextualBandit,
    GaussianBandit,
    epsilon_greedy,
    random_policy,
    reinforce,
    reinforce_contextual,
)
from rlhf_mini.theory.vnm import (
    Lottery,
    Preference,
    allais_preferences,
    check_axioms,
    expected_utility,
    rationalize,
)


def test_cohens_kappa_textbook():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cohens_kappa([1, 2], [1])


def test_fleiss_kappa_textbook():
    # Fleiss (1971) worked example as reproduced on Wikipedia: kappa = 0.210.
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(counts) == pytest.approx(0.2099, abs=1e-4)
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa([[1, 2], [2, 2]])


def test_expected_utility_and_validation():
    assert expected_utility([0.5, 0.5], [0, 10]) == 5.0
    for bad in ([0.5, 0.6], [-0.1, 1.1]):
        with pytest.raises(ValueError):
            expected_utility(bad, [0, 1])
    with pytest.raises(ValueError):
        expected_utility([1.0], [1, 2])


def test_lottery_mix_is_linear_in_eu():
    u = {"a": 0.0, "b": 1.0, "c": 5.0}
    x = Lottery(("a", "b"), (0.3, 0.7))
    y = Lottery(("b", "c"), (0.5, 0.5))
    m = x.mix(y, 0.25)
    assert sum(m.probabilities) == pytest.approx(1.0)
    assert m.expected_utility(u) == pytest.approx(
        0.25 * x.expected_utility(u) + 0.75 * y.expected_utility(u)
    )


def test_allais_violates_independence_and_has_no_utility():
    prefs = allais_preferences()
    axioms = {v.axiom for v in check_axioms(prefs)}
    assert "independence" in axioms and "transitivity" not in axioms
    result = rationalize(prefs)
    assert result.utility is None and result.certificate is not None
    # Consistent choices (1A > 1B and 2A > 2B) are rationalizable.
    ok = [prefs[0], Preference(prefs[1].right, prefs[1].left, ">")]
    good = rationalize(ok)
    assert good.utility is not None and good.margin > 0
    for p in ok:
        assert p.left.expected_utility(good.utility) > p.right.expected_utility(good.utility)
    assert check_axioms(ok) == []


def test_transitivity_completeness_continuity():
    a, b, c = Lottery.sure("a"), Lottery.sure("b"), Lottery.sure("c")
    cyc = [Preference(a, b), Preference(b, c), Preference(c, a)]
    assert "transitivity" in {v.axiom for v in check_axioms(cyc)}
    assert rationalize(cyc).utility is None
    assert {v.axiom for v in check_axioms([Preference(a, b, "?")])} == {"completeness"}
    lexi = [Preference(a, b), Preference(b, c), Preference(b, a.mix(c, 0.9999))]
    assert "continuity" in {v.axiom for v in check_axioms(lexi)}


def test_bandit_learners_beat_random():
    bandit = GaussianBandit.random(10, seed=0)
    rand = np.mean([random_policy(bandit, 1000, seed=s).rewards.mean() for s in range(5)])
    eps = np.mean([epsilon_greedy(bandit, 1000, seed=s).rewards.mean() for s in range(5)])
    pg = np.mean([reinforce(bandit, 1000, seed=s).rewards.mean() for s in range(5)])
    gap = bandit.means.max() - bandit.means.mean()
    assert eps > rand + 0.6 * gap and pg > rand + 0.6 * gap
    with pytest.raises(ValueError):
        epsilon_greedy(bandit, 10, epsilon=2.0)


def test_contextual_bandit_learns_per_context():
    table = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    run = reinforce_contextual(ContextualBandit(table), 2000, seed=0)
    # A uniform policy has regret 2/3 per step; the learner ends near 0 and started high.
    assert run.regret[-500:].mean() < 0.05
    assert run.regret[:30].mean() > 0.3

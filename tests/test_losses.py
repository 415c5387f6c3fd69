"""Tests for rlhf_mini.losses: hand-computed values, closed forms and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_mini.losses import (
    bradley_terry_loss,
    dpo_loss,
    kl_penalty,
    masked_mean,
    masked_var,
    whiten,
)
from rlhf_mini.ppo import compute_gae, ppo_policy_loss, ppo_value_loss

LN2 = math.log(2.0)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------
# Bradley–Terry
# --------------------------------------------------------------------------------------------


def test_bradley_terry_equal_rewards_is_ln2() -> None:
    r = torch.tensor([0.3, -1.0, 5.0])
    assert bradley_terry_loss(r, r.clone()).item() == pytest.approx(LN2, abs=1e-6)


def test_bradley_terry_closed_form_and_margin() -> None:
    chosen = torch.tensor([2.0, 0.0], dtype=torch.float64)
    rejected = torch.tensor([1.0, 1.5], dtype=torch.float64)
    expected = -(math.log(sigmoid(1.0)) + math.log(sigmoid(-1.5))) / 2
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-12)
    margin = torch.tensor([0.5, 1.0], dtype=torch.float64)
    expected_m = -(math.log(sigmoid(0.5)) + math.log(sigmoid(-2.5))) / 2
    got = bradley_terry_loss(chosen, rejected, margin=margin).item()
    assert got == pytest.approx(expected_m, rel=1e-12)
    assert bradley_terry_loss(chosen, rejected, margin=0.0).item() == pytest.approx(expected)


def test_bradley_terry_is_stable_for_huge_gaps() -> None:
    loss = bradley_terry_loss(torch.tensor([-1000.0]), torch.tensor([1000.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2000.0)


def test_bradley_terry_gradient_separates_rewards() -> None:
    chosen = torch.zeros(4, requires_grad=True)
    rejected = torch.zeros(4, requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


@pytest.mark.parametrize(
    "chosen, rejected, match",
    [
        (torch.zeros(3), torch.zeros(2), "rejected_rewards"),
        (torch.zeros(0), torch.zeros(0), "empty"),
        (torch.tensor([float("nan")]), torch.zeros(1), "chosen_rewards"),
        (torch.zeros(1), torch.tensor([float("inf")]), "rejected_rewards"),
    ],
)
def test_bradley_terry_bad_input(chosen: torch.Tensor, rejected: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bradley_terry_loss(chosen, rejected)


# --------------------------------------------------------------------------------------------
# Masked statistics and whitening
# --------------------------------------------------------------------------------------------


def test_masked_mean_and_var_ignore_masked_values_even_nan() -> None:
    x = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    assert masked_var(x, mask).item() == pytest.approx((4 + 1 + 0 + 9) / 4)
    assert masked_var(x, mask, unbiased=True).item() == pytest.approx((4 + 1 + 0 + 9) / 3)
    rows = masked_mean(x, mask, dim=1)
    assert torch.allclose(rows, torch.tensor([1.5, 4.5]))


def test_masked_mean_empty_mask_raises() -> None:
    with pytest.raises(ValueError, match="mask"):
        masked_mean(torch.ones(2, 2), torch.zeros(2, 2))


def test_whiten_matches_unmasked_statistics() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 7, dtype=torch.float64) * 3 + 2
    mask = torch.ones_like(x)
    mask[0, 5:] = 0
    mask[3, :2] = 0
    w = whiten(x, mask)
    m = mask.bool()
    assert w[m].mean().item() == pytest.approx(0.0, abs=1e-10)
    assert w[m].var(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert (w[~m] == 0).all()
    kept = whiten(x, mask, shift_mean=False)
    assert kept[m].mean().item() == pytest.approx(x[m].mean().item(), rel=1e-9)
    full = whiten(x)
    assert torch.allclose(full, (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-8))


# --------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------


def gae_loop(
    rewards: list[float], values: list[float], gamma: float, lam: float
) -> tuple[list[float], list[float]]:
    """Textbook GAE on one episode (no masking): the value after the last step is 0."""
    n = len(rewards)
    adv = [0.0] * n
    last = 0.0
    for t in reversed(range(n)):
        next_value = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, [a + v for a, v in zip(adv, values)]


def test_gae_matches_python_loop_on_masked_batch() -> None:
    torch.manual_seed(1)
    batch, length, gamma, lam = 6, 12, 0.97, 0.9
    rewards = torch.randn(batch, length, dtype=torch.float64)
    values = torch.randn(batch, length, dtype=torch.float64)
    mask = torch.zeros(batch, length, dtype=torch.float64)
    spans = [(0, 12), (3, 12), (2, 7), (5, 6), (0, 1), (4, 10)]  # left pad, right pad, both
    for row, (start, end) in enumerate(spans):
        mask[row, start:end] = 1
    adv, ret = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    for row, (start, end) in enumerate(spans):
        want_adv, want_ret = gae_loop(
            rewards[row, start:end].tolist(), values[row, start:end].tolist(), gamma, lam
        )
        assert adv[row, start:end].tolist() == pytest.approx(want_adv, rel=1e-12, abs=1e-12)
        assert ret[row, start:end].tolist() == pytest.approx(want_ret, rel=1e-12, abs=1e-12)
        outside = mask[row] == 0
        assert (adv[row][outside] == 0).all()
        assert torch.equal(ret[row][outside], values[row][outside])


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0, 99.0]])
    values = torch.tensor([[0.5, 0.2, 0.1, 42.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.8, 0.9, 0.0]]))
    assert torch.allclose(ret[:, :3], torch.ones(1, 3))


def test_gae_lambda_zero_is_one_step_td() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 2.0]])
    adv, _ = compute_gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=0.0)
    assert torch.allclose(adv, torch.tensor([[1.0 + 0.5 - 0.5, 2.0 + 1.0 - 1.0, 3.0 - 2.0]]))


def test_gae_has_no_grad_and_ignores_nan_outside_mask() -> None:
    values = torch.tensor([[float("nan"), 1.0, 2.0]], requires_grad=True)
    rewards = torch.tensor([[float("nan"), 0.0, 1.0]])
    adv, ret = compute_gae(rewards, values, torch.tensor([[0, 1, 1]]))
    assert not adv.requires_grad and not ret.requires_grad
    assert torch.isfinite(adv).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rewards": torch.zeros(2, 3), "values": torch.zeros(2, 4)}, "values"),
        ({"rewards": torch.zeros(0, 3), "values": torch.zeros(0, 3)}, "empty"),
        ({"rewards": torch.full((2, 3), float("nan")), "values": torch.zeros(2, 3)}, "rewards"),
        ({"rewards": torch.zeros(2, 3), "values": torch.full((2, 3), float("inf"))}, "values"),
    ],
)
def test_gae_bad_input(kwargs: dict[str, torch.Tensor], match: str) -> None:
    mask = torch.ones_like(kwargs["rewards"])
    with pytest.raises(ValueError, match=match):
        compute_gae(mask=mask, **kwargs)


def test_gae_rejects_mask_with_holes() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        compute_gae(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([[1, 0, 1, 1]]))


# --------------------------------------------------------------------------------------------
# PPO policy loss
# --------------------------------------------------------------------------------------------


def policy_case(ratio: float, advantage: float, clip: float = 0.2):
    old = torch.zeros(1, 1, dtype=torch.float64)
    logp = torch.full((1, 1), math.log(ratio), dtype=torch.float64, requires_grad=True)
    adv = torch.full((1, 1), advantage, dtype=torch.float64)
    loss, stats = ppo_policy_loss(logp, old, adv, torch.ones(1, 1), clip_range=clip)
    loss.backward()
    return loss.item(), stats, logp.grad.item()


def test_ppo_on_policy_is_vanilla_policy_gradient() -> None:
    torch.manual_seed(0)
    logp = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(3, 5, dtype=torch.float64)
    mask = torch.ones(3, 5)
    mask[0, 3:] = 0
    loss, stats = ppo_policy_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    m = mask.bool()
    assert loss.item() == pytest.approx(-adv[m].mean().item())
    # d/dlogp of −ρA at ρ = 1 is −A, averaged over the masked tokens.
    assert torch.allclose(logp.grad, torch.where(m, -adv / m.sum(), torch.zeros_like(adv)))
    assert stats["clipfrac"].item() == 0.0
    assert stats["approx_kl"].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "ratio, advantage, clipped",
    [
        (1.5, 1.0, True),  # A > 0: no reward for raising the ratio beyond 1 + ε
        (1.5, -1.0, False),  # A < 0 and ratio too high: the unclipped, larger loss stays
        (0.5, -1.0, True),  # A < 0: no reward for lowering the ratio below 1 − ε
        (0.5, 1.0, False),  # A > 0 and ratio too low: keep pushing it up
        (1.1, 1.0, False),
        (0.9, -1.0, False),
    ],
)
def test_ppo_clipping_by_advantage_sign(ratio: float, advantage: float, clipped: bool) -> None:
    loss, stats, grad = policy_case(ratio, advantage)
    eps = 0.2
    expected = max(-ratio * advantage, -min(max(ratio, 1 - eps), 1 + eps) * advantage)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert stats["clipfrac"].item() == (1.0 if clipped else 0.0)
    if clipped:
        assert grad == 0.0
    else:
        assert grad == pytest.approx(-advantage * ratio, rel=1e-12)  # dρ/dlogp = ρ


@pytest.mark.parametrize("ratio, advantage", [(1.2, 1.0), (0.8, -1.0), (1.2, -1.0), (0.8, 1.0)])
def test_ppo_at_the_clip_boundary(ratio: float, advantage: float) -> None:
    # Exactly at 1 ± ε both branches agree, so the loss is −ρA whichever is picked.
    loss, _, _ = policy_case(ratio, advantage)
    assert loss == pytest.approx(-ratio * advantage, rel=1e-12)
    # Just inside the boundary the gradient flows; just outside (on the clipped side) it is 0.
    inward = -1e-6 if ratio > 1 else 1e-6
    _, stats_in, grad_in = policy_case(ratio + inward, advantage)
    _, stats_out, grad_out = policy_case(ratio - inward, advantage)
    assert stats_in["clipfrac"].item() == 0.0 and grad_in != 0.0
    clipped_side = (ratio > 1) == (advantage > 0)
    assert (stats_out["clipfrac"].item() == 1.0) == clipped_side
    assert (grad_out == 0.0) == clipped_side


def test_ppo_clipfrac_and_approx_kl_over_masked_tokens() -> None:
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 1.0, 0.5, 3.0]]))
    adv = torch.ones(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    _, stats = ppo_policy_loss(logp, old, adv, mask)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    r = torch.tensor([1.5, 1.0, 0.5])
    assert stats["approx_kl"].item() == pytest.approx(((r - 1) - r.log()).mean().item(), rel=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"advantages": torch.full((2, 3), float("nan"))}, "advantages"),
        ({"logprobs": torch.zeros(2, 4)}, "logprobs"),
        ({"mask": torch.zeros(2, 3)}, "mask"),
        ({"old_logprobs": torch.full((2, 3), float("-inf"))}, "old_logprobs"),
    ],
)
def test_ppo_policy_bad_input(bad: dict[str, torch.Tensor], match: str) -> None:
    args = {
        "logprobs": torch.zeros(2, 3),
        "old_logprobs": torch.zeros(2, 3),
        "advantages": torch.zeros(2, 3),
        "mask": torch.ones(2, 3),
    }
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        ppo_policy_loss(**args)


def test_ppo_policy_empty_batch() -> None:
    with pytest.raises(ValueError, match="empty"):
        z = torch.zeros(0, 3)
        ppo_policy_loss(z, z, z, z)


# --------------------------------------------------------------------------------------------
# PPO value loss
# --------------------------------------------------------------------------------------------


def test_value_loss_unclipped_inside_range() -> None:
    values = torch.tensor([[1.1, 0.0]], requires_grad=True)
    old = torch.tensor([[1.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss = ppo_value_loss(values, old, returns, torch.ones(1, 2))
    assert loss.item() == pytest.approx(0.5 * (0.81 + 1.0) / 2, rel=1e-6)


def test_value_loss_clipping_is_pessimistic() -> None:
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0]])
    # Row 0 moved from 0 to 0.9 (past ε = 0.2): clipped value 0.2 → loss (0.8)², no gradient.
    # Row 1 overshot to −0.5, away from the return: the unclipped (1.5)² is larger and kept.
    values = torch.tensor([[0.9, -0.5]], requires_grad=True)
    loss = ppo_value_loss(values, old, returns, torch.ones(1, 2), clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2, rel=1e-6)
    loss.backward()
    assert values.grad[0, 0].item() == 0.0
    assert values.grad[0, 1].item() == pytest.approx(0.5 * 2 * (-1.5) / 2)


def test_value_loss_mask_and_bad_input() -> None:
    values = torch.tensor([[1.0, float("nan")]])
    old = torch.tensor([[1.0, 0.0]])
    returns = torch.tensor([[3.0, 0.0]])
    loss = ppo_value_loss(values, old, returns, torch.tensor([[1, 0]]))
    assert loss.item() == pytest.approx(0.5 * 4.0)
    with pytest.raises(ValueError, match="returns"):
        ppo_value_loss(values, old, torch.zeros(1, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match="values"):
        ppo_value_loss(values, old, returns, torch.ones(1, 2))


# --------------------------------------------------------------------------------------------
# KL estimators
# --------------------------------------------------------------------------------------------


def categorical_pair() -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.3, 0.2], dtype=torch.float64)
    return p, q


def test_kl_estimators_exact_expectations() -> None:
    # Expectation under π of each estimator, computed exactly over the support.
    p, q = categorical_pair()
    exact_kl = (p * (p / q).log()).sum()
    logp, logq = p.log(), q.log()
    expect = {kind: (p * kl_penalty(logp, logq, kind)).sum() for kind in ("k1", "k2", "k3")}
    assert expect["k1"].item() == pytest.approx(exact_kl.item(), rel=1e-12)
    assert expect["k3"].item() == pytest.approx(exact_kl.item(), rel=1e-12)  # unbiased
    assert abs(expect["k2"].item() - exact_kl.item()) > 1e-4  # biased
    var = {
        kind: (p * (kl_penalty(logp, logq, kind) - expect[kind]) ** 2).sum()
        for kind in ("k1", "k2", "k3")
    }
    assert var["k2"] < var["k1"] and var["k3"] < var["k1"]  # lower variance than k1


def test_kl_k1_sample_mean_approximates_kl() -> None:
    p, q = categorical_pair()
    exact_kl = (p * (p / q).log()).sum().item()
    gen = torch.Generator().manual_seed(0)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    for kind in ("k1", "k3"):
        est = kl_penalty(p.log()[samples], q.log()[samples], kind).mean().item()
        assert est == pytest.approx(exact_kl, abs=3e-3)


def test_kl_estimators_hand_values() -> None:
    logp = torch.tensor([-1.0])
    ref = torch.tensor([-2.0])  # log r = −1
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(-1) - 1 + 1)
    assert kl_penalty(logp, ref, "abs").item() == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-30, 0, allow_nan=False), min_size=1, max_size=16),
    st.lists(st.floats(-30, 0, allow_nan=False), min_size=16, max_size=16),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_k3_and_k2_are_nonnegative(logp: list[float], ref: list[float], dtype) -> None:
    """k3 = r − 1 − log r (r = π_ref/π) is ≥ 0 by convexity; the estimator must compute that value.

    ``kl_penalty`` clamps k3's rounding error at 0, so ">= 0" alone would hold for any formula:
    the values are compared with r − 1 − log r evaluated in double precision by ``math``.
    """
    a = torch.tensor(logp, dtype=dtype)
    b = torch.tensor(ref[: len(logp)], dtype=dtype)
    k3 = kl_penalty(a, b, "k3")
    exact = torch.tensor([math.expm1(y - x) - (y - x) for x, y in zip(a.tolist(), b.tolist())], dtype=torch.float64)
    assert (exact >= 0).all()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(k3.double(), exact, rtol=tol, atol=tol)
    assert (k3 >= 0).all()
    assert (kl_penalty(a, b, "k2") >= 0).all()
    assert (kl_penalty(a, a, "k3") == 0).all()


def test_kl_penalty_bad_input() -> None:
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="ref_logprobs"):
        kl_penalty(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="logprobs"):
        kl_penalty(torch.tensor([float("nan")]), torch.zeros(1))
    with pytest.raises(ValueError, match="empty"):
        kl_penalty(torch.zeros(0), torch.zeros(0))


# --------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------


def dpo_inputs(pc: float, pr: float, rc: float, rr: float) -> list[torch.Tensor]:
    return [torch.tensor([v], dtype=torch.float64) for v in (pc, pr, rc, rr)]


def test_dpo_at_init_is_ln2() -> None:
    torch.manual_seed(0)
    chosen, rejected = -torch.rand(5) * 50, -torch.rand(5) * 50
    losses, rc, rr = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=0.3)
    assert torch.allclose(losses, torch.full((5,), LN2))
    assert (rc == 0).all() and (rr == 0).all()


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_dpo_sigmoid_hand_values(label_smoothing: float) -> None:
    beta = 0.5
    h = (-3.0 - -4.0) - (-6.0 - -5.0)  # = 2
    losses, chosen_r, rejected_r = dpo_loss(
        *dpo_inputs(-3.0, -6.0, -4.0, -5.0), beta=beta, label_smoothing=label_smoothing
    )
    expected = -(1 - label_smoothing) * math.log(sigmoid(beta * h)) - label_smoothing * math.log(
        sigmoid(-beta * h)
    )
    assert losses.item() == pytest.approx(expected, rel=1e-12)
    assert chosen_r.item() == pytest.approx(0.5)
    assert rejected_r.item() == pytest.approx(-0.5)


def test_dpo_ipo_and_hinge_hand_values() -> None:
    beta = 0.25
    h = 2.0
    args = dpo_inputs(-3.0, -6.0, -4.0, -5.0)
    ipo, _, _ = dpo_loss(*args, beta=beta, loss_type="ipo")
    assert ipo.item() == pytest.approx((h - 1 / (2 * beta)) ** 2)  # (2 − 2)² = 0
    ipo_small, _, _ = dpo_loss(*args, beta=1.0, loss_type="ipo")
    assert ipo_small.item() == pytest.approx((h - 0.5) ** 2)
    hinge, _, _ = dpo_loss(*args, beta=beta, loss_type="hinge")
    assert hinge.item() == pytest.approx(1 - beta * h)
    hinge_zero, _, _ = dpo_loss(*args, beta=1.0, loss_type="hinge")
    assert hinge_zero.item() == 0.0


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_gradient_raises_chosen_lowers_rejected(loss_type: str) -> None:
    chosen = torch.tensor([-5.0, -7.0], requires_grad=True)
    rejected = torch.tensor([-5.0, -6.0], requires_grad=True)
    losses, _, _ = dpo_loss(
        chosen,
        rejected,
        torch.tensor([-5.0, -7.0]),
        torch.tensor([-5.0, -6.0]),
        beta=0.1,
        loss_type=loss_type,
    )
    losses.mean().backward()
    # Gradient descent moves against the gradient: chosen up, rejected down.
    assert (chosen.grad < 0).all()
    assert (rejected.grad > 0).all()


def test_dpo_rewards_are_detached() -> None:
    pc = torch.tensor([-1.0], requires_grad=True)
    _, chosen_r, _ = dpo_loss(pc, torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-2.0]))
    assert not chosen_r.requires_grad


def test_dpo_bad_input() -> None:
    ok = dpo_inputs(-1.0, -2.0, -1.0, -2.0)
    with pytest.raises(ValueError, match="sigmoid, ipo, hinge"):
        dpo_loss(*ok, loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*ok, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*ok, label_smoothing=0.7)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*ok, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(*ok[:3], torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        dpo_loss(ok[0], torch.tensor([float("nan")], dtype=torch.float64), *ok[2:])
    with pytest.raises(ValueError, match="empty"):
        dpo_loss(*[torch.zeros(0)] * 4)


def test_nan_outside_mask_reaches_neither_loss_nor_gradient() -> None:
    nan = float("nan")
    mask = torch.tensor([[1, 1, 0]])
    logp = torch.tensor([[-1.0, -2.0, nan]], requires_grad=True)
    old = torch.tensor([[-1.1, -1.9, nan]])
    adv = torch.tensor([[0.5, -1.0, nan]])
    loss, stats = ppo_policy_loss(logp, old, adv, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all() and logp.grad[0, 2] == 0
    assert all(torch.isfinite(v) for v in stats.values())

    values = torch.tensor([[0.3, 0.1, nan]], requires_grad=True)
    vloss = ppo_value_loss(values, torch.zeros(1, 3), torch.tensor([[1.0, 1.0, nan]]), mask)
    vloss.backward()
    assert torch.isfinite(vloss) and torch.isfinite(values.grad).all()

    x = torch.tensor([[1.0, 3.0, nan]], requires_grad=True)
    whiten(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all()

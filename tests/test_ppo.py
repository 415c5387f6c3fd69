"""Tests for rlhf_mini.ppo on tiny random models: controllers, rewards, one iteration, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_mini.models import ScalarHeadModel, reference_copy, train_tokenizer
from rlhf_mini.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOConfig,
    per_token_rewards,
    train_ppo,
    value_model_from_reward_model,
)
from rlhf_mini.worlds import get_world


@pytest.fixture(scope="module")
def world():
    return get_world("assistant")


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_tokenizer(world.corpus(200, np.random.default_rng(0)), vocab_size=400)


def tiny_models(tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=128, vocab_size=len(tokenizer),
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    policy = GPT2LMHeadModel(config)
    reward_model = ScalarHeadModel.from_language_model(policy, seed=seed)
    return policy, reference_copy(policy), reward_model, value_model_from_reward_model(reward_model)


def length_score(prompts: list[str], responses: list[str]) -> np.ndarray:
    """A stand-in reward model: longer responses score higher."""
    return np.array([len(r) / 20.0 for r in responses])


def small_config(**changes) -> PPOConfig:
    base = dict(rollout_batch=8, mini_batch=4, ppo_epochs=1, max_new_tokens=6, norm_samples=8,
                max_steps=1, learning_rate=1e-3)
    return PPOConfig(**{**base, **changes})


# --------------------------------------------------------------------------------------------
# KL controllers
# --------------------------------------------------------------------------------------------


def test_fixed_controller_never_moves() -> None:
    ctl = FixedKLController(0.1)
    ctl.update(100.0, n_steps=64)
    assert ctl.beta == 0.1


@pytest.mark.parametrize("kl, direction", [(12.0, 1), (3.0, -1), (6.0, 0)])
def test_adaptive_controller_moves_beta_towards_target(kl: float, direction: int) -> None:
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(kl, n_steps=10)
    assert np.sign(ctl.beta - 0.1) == direction


def test_adaptive_controller_clips_each_update_at_20_percent() -> None:
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=10)
    ctl.update(1000.0, n_steps=10)  # error clipped to +0.2, n / horizon = 1
    assert ctl.beta == pytest.approx(0.12)
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=10)
    ctl.update(0.0, n_steps=10)
    assert ctl.beta == pytest.approx(0.08)
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    ctl.update(1.1, n_steps=10)  # error 0.1, scaled by n / horizon = 0.1
    assert ctl.beta == pytest.approx(0.1 * 1.01)


# --------------------------------------------------------------------------------------------
# Per-token rewards
# --------------------------------------------------------------------------------------------


def test_per_token_rewards_kl_everywhere_score_on_last_token() -> None:
    kl = torch.tensor([[9.0, 0.5, 1.0, 2.0, 0.0], [9.0, 9.0, 1.0, -1.0, 3.0]])
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    scores = torch.tensor([10.0, -5.0])
    rewards = per_token_rewards(kl, scores, mask, beta=0.1)
    expected = torch.tensor([[0.0, -0.05, -0.1, -0.2 + 10.0, 0.0], [0.0, 0.0, -0.1, 0.1, -0.3 - 5.0]])
    torch.testing.assert_close(rewards, expected)


def test_per_token_rewards_rejects_row_without_response() -> None:
    with pytest.raises(ValueError, match="no response token"):
        per_token_rewards(torch.zeros(2, 3), torch.zeros(2), torch.tensor([[0, 1, 1], [0, 0, 0]]), 0.1)


def test_missing_eos_penalty_is_subtracted_from_truncated_responses(tokenizer, world) -> None:
    # max_new_tokens=1 makes almost every response truncated; a huge penalty then dominates.
    policy, ref, rm, value = tiny_models(tokenizer)
    prompts = world.prompts(16, seed=0)
    zero = lambda p, r: np.zeros(len(r))
    cfg = dict(max_new_tokens=1, whiten_rewards=False, learning_rate=1e-9)
    _, with_penalty = train_ppo(small_config(**cfg, missing_eos_penalty=5.0), policy, ref, rm, value,
                                tokenizer, world, prompts, score_fn=zero, progress=False)
    row = with_penalty[0]
    assert row["objective/scores"] == pytest.approx(-5.0 * (1 - row["eos_rate"]))
    assert row["eos_rate"] < 0.5
    _, without = train_ppo(small_config(**cfg, missing_eos_penalty=None), *tiny_models(tokenizer),
                           tokenizer, world, prompts, score_fn=zero, progress=False)
    assert without[0]["objective/scores"] == 0.0


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_one_iteration_runs_and_changes_the_policy(tokenizer, world) -> None:
    policy, ref, rm, value = tiny_models(tokenizer)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    _, metrics = train_ppo(small_config(), policy, ref, rm, value, tokenizer, world,
                           world.prompts(16, seed=0), score_fn=length_score, progress=False)
    assert len(metrics) == 1
    row = metrics[0]
    for key in ("objective/rlhf_reward", "objective/scores", "objective/kl", "gold", "policy/clipfrac",
                "policy/approx_kl", "loss/policy", "loss/value", "val/explained_variance", "beta",
                "eos_rate", "response_length"):
        assert np.isfinite(row[key]), key
    # the first rollout comes from the reference policy itself: KL 0 with the k1 estimator
    assert row["objective/kl"] == pytest.approx(0.0, abs=1e-5)
    changed = any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert changed
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), reference_copy(ref).parameters()))


def test_whitening_token_rewards_changes_the_update_and_stays_finite(tokenizer, world) -> None:
    prompts = world.prompts(16, seed=0)
    policies = {}
    for flag in (False, True):
        policy, ref, rm, value = tiny_models(tokenizer)
        _, metrics = train_ppo(small_config(whiten_token_rewards=flag), policy, ref, rm, value, tokenizer, world,
                               prompts, score_fn=length_score, progress=False)
        assert all(np.isfinite(v) for v in metrics[0].values() if isinstance(v, float))
        policies[flag] = policy
    # same rollout, same seeds: only the rescaled rewards can make the two updates differ
    assert any(not torch.equal(a, b) for a, b in zip(policies[False].parameters(), policies[True].parameters()))


def test_dropout_is_switched_off_so_the_first_ratio_is_one(tokenizer, world) -> None:
    policy, ref, rm, value = tiny_models(tokenizer)
    policy.config.resid_pdrop = 0.1  # a hub GPT-2 has dropout 0.1; rebuild the model with it on
    torch.manual_seed(0)
    with_dropout = GPT2LMHeadModel(policy.config)
    with_dropout.load_state_dict(policy.state_dict())
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in with_dropout.modules())
    _, metrics = train_ppo(small_config(mini_batch=8), with_dropout, reference_copy(with_dropout),
                           rm, value, tokenizer, world, world.prompts(16, seed=0), score_fn=length_score,
                           progress=False)
    assert all(m.p == 0 for m in with_dropout.modules() if isinstance(m, torch.nn.Dropout))
    # one minibatch, scored at θ_old in train mode: without dropout ρ = 1 on every token (with
    # dropout 0.1 this model measured approx_kl ≈ 1e-3 here)
    assert metrics[0]["policy/approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert metrics[0]["policy/clipfrac"] == 0.0


def test_training_is_deterministic(tokenizer, world) -> None:
    prompts = world.prompts(16, seed=0)
    runs = [train_ppo(small_config(max_steps=2), *tiny_models(tokenizer), tokenizer, world,
                      prompts, score_fn=length_score, progress=False)[1] for _ in range(2)]
    assert runs[0] == runs[1]


def test_checkpoint_resume_gives_the_same_next_step_loss(tokenizer, world, tmp_path) -> None:
    prompts = world.prompts(16, seed=0)
    cfg = small_config(max_steps=2, adaptive_kl=True, kl_horizon=50)
    _, full = train_ppo(cfg, *tiny_models(tokenizer), tokenizer, world, prompts,
                        score_fn=length_score, checkpoint_dir=tmp_path, checkpoint_every=1,
                        progress=False)
    # fresh models (another init) pick up the weights, optimizer and β from the checkpoint; the
    # reference policy is not in the checkpoint: the caller passes the same π_ref again
    policy, _, rm, value = tiny_models(tokenizer, seed=1)
    ref = tiny_models(tokenizer)[1]
    _, resumed = train_ppo(cfg, policy, ref, rm, value, tokenizer, world, prompts,
                           score_fn=length_score, resume_from=tmp_path / "iter_1", progress=False)
    assert len(resumed) == 2
    assert resumed[1]["loss/policy"] == pytest.approx(full[1]["loss/policy"], abs=1e-6)
    assert resumed[1]["loss/value"] == pytest.approx(full[1]["loss/value"], abs=1e-6)
    assert resumed[1]["beta"] == pytest.approx(full[1]["beta"])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_empty_prompts_raise(tokenizer, world) -> None:
    with pytest.raises(ValueError, match="no prompts"):
        train_ppo(small_config(), *tiny_models(tokenizer), tokenizer, world, [],
                  score_fn=length_score, progress=False)


def test_nan_reward_raises(tokenizer, world) -> None:
    nan_score = lambda p, r: np.full(len(r), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        train_ppo(small_config(), *tiny_models(tokenizer), tokenizer, world,
                  world.prompts(8, seed=0), score_fn=nan_score, progress=False)


@pytest.mark.parametrize("change", [{"mini_batch": 3}, {"beta": -1.0}, {"kl_estimator": "k9"},
                                    {"learning_rate": 0.0}])
def test_bad_config_raises(change, tokenizer, world) -> None:
    with pytest.raises(ValueError, match="PPOConfig"):
        train_ppo(small_config(**change), *tiny_models(tokenizer), tokenizer, world,
                  world.prompts(8, seed=0), score_fn=length_score, progress=False)

"""GRPO and its relatives: advantages, the loss's four aggregations against hand-computed values,
padding gradients, bad input, the verifiers, pass@k, and a tiny trainer run with resume."""

import copy
import math

import numpy as np
import pytest
import torch

from rlhf_mini.grpo import (
    RECIPES,
    GRPOConfig,
    advantages_for,
    group_advantages,
    pass_at_k,
    policy_gradient_loss,
    rloo_advantages,
    train_grpo,
)
from rlhf_mini.verifiers import exact_match, format_reward, lenient_match, loose_match
from rlhf_mini.worlds import get_world

# --------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------

REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])


def test_group_advantages_match_hand_values_with_bessel_std_plus_1e4():
    a = group_advantages(REWARDS, 4, "group")
    # group 1: mean 1/4, Bessel std sqrt((0.75² + 3·0.25²)/3) = 0.5; group 2: mean 1/2, std sqrt(1/3)
    s1, s2 = 0.5 + 1e-4, math.sqrt(1 / 3) + 1e-4
    expected = [0.75 / s1, -0.25 / s1, -0.25 / s1, -0.25 / s1, 0.5 / s2, 0.5 / s2, -0.5 / s2, -0.5 / s2]
    torch.testing.assert_close(a, torch.tensor(expected))


def test_batch_and_no_scaling():
    centred = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])
    torch.testing.assert_close(group_advantages(REWARDS, 4, "none"), centred)
    batch_std = math.sqrt((3 * 0.625**2 + 5 * 0.375**2) / 7)  # Bessel over all 8 rewards
    torch.testing.assert_close(group_advantages(REWARDS, 4, "batch"), centred / (batch_std + 1e-4))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_a_group_with_equal_rewards_gets_exactly_zero(scale):
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 1.0, 0.0, 0.2])
    a = group_advantages(rewards, 3, scale)
    assert torch.isfinite(a).all()
    assert (a[:6] == 0).all() and (a[6:] != 0).all()


def test_rloo_subtracts_the_mean_of_the_others():
    a = rloo_advantages(REWARDS, 4)
    torch.testing.assert_close(a, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3]))
    # = G/(G−1) · (r − group mean)
    torch.testing.assert_close(a, 4 / 3 * group_advantages(REWARDS, 4, "none"))


def test_reinforce_and_batch_mean_estimators():
    torch.testing.assert_close(advantages_for("reinforce", REWARDS, 4), REWARDS)
    torch.testing.assert_close(advantages_for("batch_mean", REWARDS, 4), REWARDS - 0.375)


@pytest.mark.parametrize("call, message", [
    (lambda: group_advantages(torch.ones(6), 4), "multiple of the group size"),
    (lambda: rloo_advantages(torch.ones(6), 4), "multiple of the group size"),
    (lambda: group_advantages(torch.tensor([1.0, float("nan")]), 2), "NaN"),
    (lambda: group_advantages(torch.ones(4), 1), "group_size"),
    (lambda: group_advantages(torch.ones(4), 2, "median"), "scale must be one of"),
    (lambda: advantages_for("ppo", torch.ones(4), 2), "advantage estimator"),
])
def test_bad_advantage_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------

MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
ADV = torch.tensor([1.0, -2.0])


def at_ratio_one():
    logps = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -1.5, -1.0]])
    return logps, logps.clone()


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", (-1.0 + 2.0) / 2),          # per-sequence means −1 and 2, then their mean
    ("bnpo", (-2.0 + 6.0) / 5),          # all 5 tokens weigh the same
    ("dapo", (-2.0 + 6.0) / 5),
    ("dr_grpo", (-2.0 + 6.0) / (2 * 4)),  # B · max_completion_length
])
def test_each_aggregation_matches_its_hand_value(loss_type, expected):
    logps, old = at_ratio_one()
    loss = policy_gradient_loss(logps, old, ADV, MASK, loss_type=loss_type, max_completion_length=4)
    assert float(loss) == pytest.approx(expected)


def test_clipping_and_clip_higher():
    old = torch.zeros(2, 2)
    logps = torch.full((2, 2), math.log(1.5))  # ρ = 1.5 everywhere
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, -1.0])
    # A > 0: min(1.5, 1 + ε_high); A < 0: min(−1.5, −clip) = −1.5 (the pessimistic branch, unclipped)
    loss = policy_gradient_loss(logps, old, adv, mask, eps_low=0.2, eps_high=0.2, loss_type="bnpo")
    assert float(loss) == pytest.approx((-1.2 * 2 + 1.5 * 2) / 4)
    loss = policy_gradient_loss(logps, old, adv, mask, eps_low=0.2, eps_high=0.28, loss_type="bnpo")
    assert float(loss) == pytest.approx((-1.28 * 2 + 1.5 * 2) / 4)
    _, stats = policy_gradient_loss(logps, old, adv, mask, loss_type="bnpo", return_stats=True)
    assert float(stats["clip_ratio/high_mean"]) == 0.5 and float(stats["clip_ratio/low_mean"]) == 0.0


def test_k3_kl_term_with_beta():
    logps, old = at_ratio_one()
    ref = logps + 0.5  # ref − logp = 0.5 on every token
    k3 = math.exp(0.5) - 0.5 - 1
    base = policy_gradient_loss(logps, old, ADV, MASK, loss_type="bnpo")
    loss, stats = policy_gradient_loss(logps, old, ADV, MASK, ref_logps=ref, beta=0.1, loss_type="bnpo",
                                       return_stats=True)
    assert float(loss - base) == pytest.approx(0.1 * k3, rel=1e-5)
    assert float(stats["kl"]) == pytest.approx(k3, rel=1e-5)


def test_sequence_level_ratio_is_the_length_normalised_sequence_ratio():
    old = torch.zeros(1, 3)
    logps = torch.tensor([[math.log(1.1), math.log(1.3), 5.0]])  # the third is padding
    mask = torch.tensor([[1, 1, 0]])
    loss = policy_gradient_loss(logps, old, torch.tensor([1.0]), mask, eps_high=1.0,
                                importance_sampling_level="sequence")
    assert float(loss) == pytest.approx(-math.sqrt(1.1 * 1.3))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_padding_gets_exactly_zero_gradient(loss_type, level):
    logps = torch.tensor([[-1.0, -2.0, 7.0], [-0.5, -1.5, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -1.9, float("nan")], [-0.4, -1.5, -1.2]])
    ref = torch.tensor([[-1.0, -2.5, float("inf")], [-0.5, -1.0, -1.0]])
    loss = policy_gradient_loss(logps, old, ADV, MASK, ref_logps=ref, beta=0.1, loss_type=loss_type,
                                max_completion_length=4, importance_sampling_level=level)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logps.grad).all()
    assert logps.grad[0, 2] == 0.0 and (logps.grad[MASK.bool()] != 0).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(advantages=torch.ones(3)), "advantages has shape"),
    (dict(old_logps=torch.zeros(2, 4)), "old_logps has shape"),
    (dict(loss_type="mean"), "loss_type must be one of"),
    (dict(loss_type="dr_grpo"), "needs max_completion_length"),
    (dict(beta=0.1), "needs ref_logps"),
    (dict(importance_sampling_level="word"), "importance_sampling_level"),
    (dict(advantages=torch.tensor([1.0, float("nan")])), "NaN"),
])
def test_bad_loss_input_is_a_clear_error(kwargs, message):
    logps, old = at_ratio_one()
    args = {**dict(logps=logps, old_logps=old, advantages=ADV, mask=MASK), **kwargs}
    with pytest.raises(ValueError, match=message):
        policy_gradient_loss(**args)


# --------------------------------------------------------------------------------------------
# Verifiers and pass@k
# --------------------------------------------------------------------------------------------


def test_verifiers_and_the_loose_loophole():
    prompt = "Q: 3 + 4 * 2 = ?"
    right = " 4 * 2 = 8. 3 + 8 = 11. Answer: 11"
    wrong = " 4 * 2 = 8. 3 + 8 = 12. Answer: 12"
    spam = " 11 12 13. Answer: 7"
    assert exact_match([prompt] * 3, [right, wrong, spam]) == [1.0, 0.0, 0.0]
    assert format_reward([prompt] * 3, [right, wrong, spam]) == [1.0, 1.0, 0.0]
    assert loose_match([prompt] * 3, [right, wrong, spam]) == [1.0, 0.0, 1.0]  # the spam gets credit
    # lenient_match forgives what it cannot parse: an empty completion, or one cut off before its answer
    silent, unfinished, garbled = "", " 4 * 2 = 8. 3 +", " 4 * 2 = 8. Answer: - 11"
    assert lenient_match([prompt] * 6, [right, wrong, spam, silent, unfinished, garbled]) == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert exact_match([prompt] * 3, [silent, unfinished, garbled]) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="prompts but"):
        exact_match([prompt], [right, wrong])


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 6, 5) == 1.0
    rng = np.random.default_rng(0)  # the estimator averages to the true pass@k of drawing k of the n
    draws = [rng.permutation([1] * 3 + [0] * 7)[:4].any() for _ in range(20000)]
    assert np.mean(draws) == pytest.approx(pass_at_k(10, 3, 4), abs=0.01)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


def digit_reward(prompts, completions):
    """A stand-in verifier: the share of digits in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def tiny_config(**changes) -> GRPOConfig:
    base = dict(num_generations=4, prompts_per_step=2, max_completion_length=6, max_steps=2, learning_rate=1e-3)
    return GRPOConfig(**{**base, **changes})


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_runs_and_logs_trl_metrics(recipe, tiny_policy, tiny_tokenizer):
    world = get_world("arithmetic")
    before = [p.detach().clone() for p in tiny_policy.parameters()]
    # a random tiny model never emits EOS: keep the truncated completions in the loss (DAPO filters them)
    config = tiny_config(**{**RECIPES[recipe], "mask_truncated_completions": False}, num_iterations=2, beta=0.05)
    policy, metrics = train_grpo(config, tiny_policy, tiny_tokenizer, world, world.prompts(8), digit_reward,
                                 progress=False)
    assert len(metrics) == 2
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completion_length", "kl", "clip_ratio/region_mean"):
        assert math.isfinite(metrics[-1][key]), key
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_one_update_per_batch_takes_pi_old_from_the_training_pass(tiny_policy, tiny_tokenizer, monkeypatch):
    # μ = 1: the ratio is exactly 1 (nothing clips) and the policy is scored once per step, plus the
    # reference for the logged KL; with log_kl off at β = 0 there is no reference pass and no "kl"
    from rlhf_mini import grpo as grpo_module

    world = get_world("arithmetic")
    calls = []
    scored = grpo_module.token_logprobs

    def counting(model, *args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return scored(model, *args, **kwargs)

    monkeypatch.setattr(grpo_module, "token_logprobs", counting)
    _, metrics = train_grpo(tiny_config(max_steps=2), copy.deepcopy(tiny_policy), tiny_tokenizer, world,
                            world.prompts(8), digit_reward, progress=False)
    assert calls == [False, True] * 2  # the reference (no grad), then the policy's training pass
    assert all(m["clip_ratio/region_mean"] == 0 and m["entropy"] > 0 and "kl" in m for m in metrics)
    calls.clear()
    _, metrics = train_grpo(tiny_config(max_steps=2, log_kl=False), copy.deepcopy(tiny_policy), tiny_tokenizer,
                            world, world.prompts(8), digit_reward, progress=False)
    assert calls == [True] * 2
    assert all("kl" not in m and m["entropy"] > 0 for m in metrics)
    calls.clear()
    train_grpo(tiny_config(max_steps=1, num_iterations=2, steps_per_generation=2), copy.deepcopy(tiny_policy),
               tiny_tokenizer, world, world.prompts(8), digit_reward, progress=False)
    # two minibatches per update: only the first sees θ_old, so π_old gets a pass of its own
    assert calls == [False, False] + [True] * 4


def test_length_buckets_change_the_update_by_rounding_only(tiny_policy, tiny_tokenizer, monkeypatch):
    # every log-prob pass scores the completion tokens only, over GRPOConfig.length_buckets buckets of
    # rows; the update (μ = 2, so the clip acts in the second) is the one-pass update to float rounding
    from rlhf_mini import grpo as grpo_module

    world = get_world("arithmetic")
    seen = []
    scored = grpo_module.token_logprobs

    def recording(model, input_ids, attention_mask, **kwargs):
        mask, real = kwargs["response_mask"], attention_mask.bool()
        # completion tokens only: within the real tokens, at most max_completion_length (6) per row
        seen.append((kwargs["length_buckets"], bool((mask <= real).all() and (mask.sum(1) <= 6).all()
                                                     and (real.sum(1) > 6).all())))
        return scored(model, input_ids, attention_mask, **kwargs)

    monkeypatch.setattr(grpo_module, "token_logprobs", recording)
    prompts = world.prompts(8)  # of different lengths: left padding to cut
    results = {}
    for buckets in (1, 3):
        policy, metrics = train_grpo(tiny_config(max_steps=1, num_iterations=2, length_buckets=buckets),
                                     copy.deepcopy(tiny_policy), tiny_tokenizer, world, prompts, digit_reward,
                                     progress=False)
        results[buckets] = (dict(policy.named_parameters()), metrics[0])
    assert seen == [(1, True)] * 3 + [(3, True)] * 3  # the reference, then two training passes, each run
    for name, weight in results[1][0].items():
        assert torch.allclose(results[3][0][name], weight, atol=1e-6, rtol=0), name
    for key in ("loss", "kl", "entropy", "grad_norm"):
        assert results[3][1][key] == pytest.approx(results[1][1][key], rel=1e-4, abs=1e-7), key
    with pytest.raises(ValueError, match="length_buckets must be positive"):
        train_grpo(tiny_config(length_buckets=0), tiny_policy, tiny_tokenizer, world, prompts, digit_reward,
                   progress=False)


def test_later_updates_reuse_pi_old_from_the_first_pass(tiny_policy, tiny_tokenizer, monkeypatch):
    # μ = 2, the whole batch in one gradient step: the first update's pass is π_old; the second update
    # compares its new log-probs with those, not with a fresh pass (then the ratio would stay 1)
    from rlhf_mini import grpo as grpo_module

    world = get_world("arithmetic")
    calls, losses = [], []
    scored, loss_fn = grpo_module.token_logprobs, grpo_module.policy_gradient_loss

    def counting(model, *args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return scored(model, *args, **kwargs)

    def recording(logps, old_logps, *args, **kwargs):
        losses.append((logps.detach().clone(), old_logps.clone()))
        return loss_fn(logps, old_logps, *args, **kwargs)

    monkeypatch.setattr(grpo_module, "token_logprobs", counting)
    monkeypatch.setattr(grpo_module, "policy_gradient_loss", recording)
    train_grpo(tiny_config(max_steps=1, num_iterations=2, learning_rate=1e-2), copy.deepcopy(tiny_policy),
               tiny_tokenizer, world, world.prompts(8), digit_reward, progress=False)
    assert calls == [False, True, True]  # the reference, then one training pass per update
    (first, first_old), (second, second_old) = losses
    assert torch.equal(first_old, first)  # at θ_old the ratio is exactly 1
    assert torch.equal(second_old, first_old)  # the second update keeps π_old
    assert not torch.equal(second, first)  # and its own log-probs have moved


def test_resume_replays_the_uninterrupted_run(tiny_profile, tiny_tokenizer, tmp_path):
    from rlhf_mini.models import new_policy

    world, prompts = get_world("arithmetic"), get_world("arithmetic").prompts(8)
    _, full = train_grpo(tiny_config(max_steps=3), new_policy(tiny_profile, tiny_tokenizer, seed=0), tiny_tokenizer,
                         world, prompts, digit_reward, progress=False)
    train_grpo(tiny_config(max_steps=3), new_policy(tiny_profile, tiny_tokenizer, seed=0), tiny_tokenizer, world,
               prompts, digit_reward, checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    assert (tmp_path / "step_2" / "model.safetensors").exists()
    _, resumed = train_grpo(tiny_config(max_steps=3), new_policy(tiny_profile, tiny_tokenizer, seed=5),
                            tiny_tokenizer, world, prompts, digit_reward, resume_from=tmp_path / "step_2",
                            progress=False)
    assert len(resumed) == 3
    assert resumed[-1]["loss"] == pytest.approx(full[-1]["loss"], rel=1e-4, abs=1e-6)


def test_trainer_rejects_nan_rewards_and_bad_config(tiny_policy, tiny_tokenizer):
    world = get_world("arithmetic")
    with pytest.raises(ValueError, match="NaN"):
        train_grpo(tiny_config(), tiny_policy, tiny_tokenizer, world, world.prompts(4),
                   lambda p, c: [float("nan")] * len(c), progress=False)
    with pytest.raises(ValueError, match="num_generations"):
        train_grpo(tiny_config(num_generations=1), tiny_policy, tiny_tokenizer, world, world.prompts(4),
                   digit_reward, progress=False)
    with pytest.raises(ValueError, match="loss_type"):
        train_grpo(tiny_config(loss_type="sum"), tiny_policy, tiny_tokenizer, world, world.prompts(4),
                   digit_reward, progress=False)


def test_dynamic_sampling_keeps_only_groups_whose_rewards_differ(tiny_policy, tiny_tokenizer):
    world = get_world("arithmetic")

    def some_flat(prompts, completions):  # prompts with an even first operand: every completion 0
        return [0.0 if int(p.split()[1]) % 2 == 0 else float(len(c) % 3) for p, c in zip(prompts, completions)]

    config = tiny_config(dynamic_sampling=True, prompts_per_step=4, max_steps=1)
    _, metrics = train_grpo(config, tiny_policy, tiny_tokenizer, world, world.prompts(16), some_flat, progress=False)
    assert metrics[0]["sampled/frac_reward_zero_std"] > 0
    assert metrics[0]["frac_reward_zero_std"] == 0.0 and metrics[0]["sampling_rounds"] >= 2


def test_steps_per_generation_takes_one_optimizer_step_per_minibatch(tiny_policy, tiny_tokenizer, monkeypatch):
    import rlhf_mini.grpo as grpo_module

    world, calls = get_world("arithmetic"), []
    real_step = grpo_module.optimizer_step

    def counting_step(optimizer, loss, params, max_grad_norm):
        calls.append(float(loss.detach()))
        return real_step(optimizer, loss, params, max_grad_norm)

    monkeypatch.setattr(grpo_module, "optimizer_step", counting_step)
    config = tiny_config(prompts_per_step=4, num_iterations=2, steps_per_generation=4, max_steps=1)
    train_grpo(config, tiny_policy, tiny_tokenizer, world, world.prompts(8), digit_reward, progress=False)
    assert len(calls) == 2 * 4  # μ passes × minibatches
    with pytest.raises(ValueError, match="steps_per_generation"):
        train_grpo(tiny_config(steps_per_generation=99), tiny_policy, tiny_tokenizer, world, world.prompts(4),
                   digit_reward, progress=False)


def test_heldout_problems_are_unseen_by_sft_and_by_every_pool():
    from rlhf_mini.config import get_profile
    from rlhf_mini.worlds.arithmetic import ArithmeticWorld
    from rlhf_mini.zoo import grpo as zoo_grpo

    profile = get_profile("cpu")
    held_out = zoo_grpo.eval_prompts(profile)
    assert len(held_out) == zoo_grpo.N_EVAL_PROMPTS["cpu"] == len(set(held_out))
    sft_problems = set(ArithmeticWorld().prompts(zoo_grpo.START_SFT["cpu"]["n_examples"], seed=0, split="train"))
    assert not sft_problems & set(held_out)
    for seed in (0, 1):
        pool = zoo_grpo.train_prompts(profile, seed)
        assert pool and not set(pool) & set(held_out)


def tiny_zoo(tiny_policy, tiny_tokenizer, tmp_path, monkeypatch, lesson_steps: int):
    """``zoo.grpo`` on the tiny policy (as its start policy), 3 held-out problems (2 for the curve)
    and ``lesson_steps``; returns the module and a cpu profile of 6-token completions."""
    from rlhf_mini import verifiers
    from rlhf_mini.config import get_profile
    from rlhf_mini.zoo import grpo as zoo_grpo

    start = tmp_path / "start"
    tiny_policy.save_pretrained(start)
    tiny_tokenizer.save_pretrained(start)
    monkeypatch.setattr(zoo_grpo, "start_policy_path", lambda profile=None: start)
    monkeypatch.setattr(zoo_grpo, "LESSON_STEPS", {"cpu": lesson_steps})
    monkeypatch.setattr(zoo_grpo, "N_EVAL_PROMPTS", {"cpu": 3})
    monkeypatch.setattr(zoo_grpo, "N_CURVE_PROMPTS", {"cpu": 2})
    # a random policy never solves a problem: reward the parity of the length, so that groups differ
    monkeypatch.setitem(verifiers.VERIFIERS, "exact_match",
                        lambda prompts, completions: [float(len(c) % 2) for c in completions])
    return zoo_grpo, get_profile("cpu").replace(max_new_tokens=6)


def test_a_zoo_run_keeps_its_policy_and_training_time_at_the_lesson_length(
        tiny_policy, tiny_tokenizer, tmp_path, isolated_cache, monkeypatch):
    """Chapter 13 races PPO against the main GRPO run's policy at the lesson runs' length: the run
    keeps that policy, and the training time up to each evaluation, beside its final one."""
    zoo_grpo, profile = tiny_zoo(tiny_policy, tiny_tokenizer, tmp_path, monkeypatch, lesson_steps=2)
    run = dict(max_steps=4, prompts_per_step=2, num_generations=2, num_iterations=1)
    folder = zoo_grpo.grpo_policy_path(profile, "grpo", eval_every=1, **run)

    at_step = [zoo_grpo.run_seconds(folder, step) for step in (1, 2, 3, 4)]
    assert 0 < at_step[0] < at_step[1] < at_step[2] < at_step[3] <= zoo_grpo.run_seconds(folder)
    with pytest.raises(ValueError, match="no training time recorded at step 5"):
        zoo_grpo.run_seconds(folder, 5)
    # the step-2 checkpoint is the policy after two steps: neither the start nor the final policy
    short, _ = zoo_grpo.grpo_checkpoint(profile, "grpo", eval_every=1, **run)
    final, _ = zoo_grpo.grpo_policy(profile, "grpo", eval_every=1, **run)
    weight = "transformer.h.0.mlp.c_fc.weight"
    short_w, final_w, start_w = (m.state_dict()[weight] for m in (short, final, tiny_policy))
    assert not torch.equal(short_w, start_w) and not torch.equal(short_w, final_w)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step_2"]  # the final one is the run's own
    with pytest.raises(ValueError, match="no checkpoint at step 3"):
        zoo_grpo.grpo_checkpoint(profile, "grpo", step=3, eval_every=1, **run)


def test_a_lesson_run_evaluates_once_and_logs_no_kl(tiny_policy, tiny_tokenizer, tmp_path, isolated_cache,
                                                     monkeypatch):
    """Chapter 13's lesson runs read only their last held-out accuracy and no KL: a lesson run measures
    the accuracy at its last step only and skips the reference pass."""
    zoo_grpo, profile = tiny_zoo(tiny_policy, tiny_tokenizer, tmp_path, monkeypatch, lesson_steps=3)
    assert zoo_grpo.lesson_run(profile) == {"max_steps": 3, "eval_every": 3, "log_kl": False}
    metrics = zoo_grpo.grpo_metrics(profile, "grpo", **zoo_grpo.lesson_run(profile), prompts_per_step=2,
                                    num_generations=2, num_iterations=1)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [np.isnan(m.get("eval/accuracy", np.nan)) for m in metrics] == [True, True, False]
    assert not any("kl" in m for m in metrics) and all(m["entropy"] > 0 for m in metrics)

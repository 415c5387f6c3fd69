"""Rejection-sampling fine-tuning: keeps the best per prompt, fine-tunes with SFT, logs each round."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_mini.models import reference_copy
from rlhf_mini.rejection_sampling import RSConfig, select_best, train_rejection_sampling
from rlhf_mini.worlds import get_world


def test_select_best_keeps_the_top_per_prompt():
    prompts = ["a", "b"]
    samples = [["a1", "a2", "a3"], ["b1", "b2", "b3"]]
    scores = np.array([[0.1, 0.9, 0.5], [2.0, -1.0, 3.0]])
    kept = select_best(prompts, samples, scores)
    assert [(e["prompt"], e["response"], e["score"]) for e in kept] == [("a", "a2", 0.9), ("b", "b3", 3.0)]
    kept2 = select_best(prompts, samples, scores, keep=2)
    assert [e["response"] for e in kept2] == ["a2", "a3", "b3", "b1"]


def test_select_best_rejects_bad_shapes():
    with pytest.raises(ValueError, match="do not match"):
        select_best(["a"], [["x", "y"]], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="keep"):
        select_best(["a"], [["x", "y"]], np.zeros((1, 2)), keep=0)


def test_config_validation():
    with pytest.raises(ValueError, match="keep_per_prompt"):
        RSConfig(n_samples=2, keep_per_prompt=3)
    with pytest.raises(ValueError, match="rounds"):
        RSConfig(rounds=0)


def test_rounds_train_on_the_kept_samples(tiny_policy, tiny_tokenizer):
    world = get_world("sentiment")
    calls = []

    def scorer(prompts, responses):
        calls.append(len(responses))
        return np.array([float(len(r)) for r in responses])  # prefers long reviews

    ref = reference_copy(tiny_policy)
    before = {k: v.clone() for k, v in tiny_policy.state_dict().items()}
    config = RSConfig(rounds=2, prompts_per_round=6, n_samples=4, sft_steps=3, batch_size=4, learning_rate=1e-3,
                      max_length=96, max_new_tokens=10, n_eval_prompts=4)
    result = train_rejection_sampling(config, tiny_policy, ref, tiny_tokenizer, world, scorer, progress=False)
    assert [m["round"] for m in result.metrics] == [0, 1, 2]
    assert len(result.datasets) == 2 and all(len(d) == 6 for d in result.datasets)
    for m in result.metrics[1:]:
        assert m["rm/kept"] >= m["rm/samples"]
        assert np.isfinite(m["sft/loss"]) and np.isfinite(m["kl"])
    # the starting policy has zero KL from its copy; training moved the weights
    assert result.metrics[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert any(not np.array_equal(before[k], v) for k, v in tiny_policy.state_dict().items())
    with pytest.raises(ValueError, match="same object"):
        train_rejection_sampling(config, tiny_policy, tiny_policy, tiny_tokenizer, world, scorer, progress=False)


def test_rs_policy_checks_its_overrides_before_building(isolated_cache):
    from rlhf_mini.zoo.rejection_sampling import rs_policy_path

    with pytest.raises(ValueError, match="rounds"):
        rs_policy_path("assistant", rounds=0)
    with pytest.raises(TypeError):
        rs_policy_path("assistant", no_such_field=1)
    assert not isolated_cache.exists() or not any(isolated_cache.iterdir())


def _length_scorer(prompts, responses):
    return np.array([float(len(r)) for r in responses])


def test_resume_after_a_round_repeats_the_uninterrupted_run(tiny_profile, tiny_tokenizer, tmp_path):
    from rlhf_mini.models import new_policy

    world = get_world("sentiment")
    config = RSConfig(rounds=2, prompts_per_round=6, n_samples=4, sft_steps=3, batch_size=4, learning_rate=1e-3,
                      max_length=96, max_new_tokens=10, n_eval_prompts=4)

    def fresh():
        policy = new_policy(tiny_profile, tiny_tokenizer, seed=0).eval()
        return policy, reference_copy(policy)

    policy, ref = fresh()
    full = train_rejection_sampling(config, policy, ref, tiny_tokenizer, world, _length_scorer, progress=False)

    policy, ref = fresh()
    one_round = RSConfig(**{**config.__dict__, "rounds": 1})
    train_rejection_sampling(one_round, policy, ref, tiny_tokenizer, world, _length_scorer,
                             checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "round-1" / "model.safetensors").is_file()

    policy, ref = fresh()  # a new process would start here: nothing carried over but the folder
    resumed = train_rejection_sampling(config, policy, ref, tiny_tokenizer, world, _length_scorer,
                                       resume_from=tmp_path / "round-1", progress=False)
    assert resumed.datasets == full.datasets
    assert [m["round"] for m in resumed.metrics] == [0, 1, 2]
    # the next step's loss (round 2's first SFT step) and everything measured after it match
    for key in ("sft/first_loss", "sft/loss", "rm", "gold", "kl", "rm/samples", "rm/kept"):
        assert resumed.metrics[2][key] == pytest.approx(full.metrics[2][key], rel=1e-5, abs=1e-6), key
    for name, value in full.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[name], value)


def test_resume_refuses_a_checkpoint_of_another_run(tiny_policy, tiny_tokenizer, tmp_path):
    world = get_world("sentiment")
    config = RSConfig(rounds=1, prompts_per_round=4, n_samples=2, sft_steps=1, batch_size=4, max_length=96,
                      max_new_tokens=6, n_eval_prompts=2)
    ref = reference_copy(tiny_policy)
    train_rejection_sampling(config, tiny_policy, ref, tiny_tokenizer, world, _length_scorer,
                             checkpoint_dir=tmp_path, progress=False)
    other = RSConfig(**{**config.__dict__, "rounds": 2, "n_samples": 3})
    with pytest.raises(ValueError, match=r"trainer_state.pt: field\(s\) \['n_samples'\] differ"):
        train_rejection_sampling(other, tiny_policy, ref, tiny_tokenizer, world, _length_scorer,
                                 resume_from=tmp_path / "round-1", progress=False)
    with pytest.raises(ValueError, match="not a checkpoint"):
        train_rejection_sampling(config, tiny_policy, ref, tiny_tokenizer, world, _length_scorer,
                                 resume_from=tmp_path, progress=False)

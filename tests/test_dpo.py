"""The DPO trainer: reference log-probs computed once, ln 2 at step 0, learning, resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_mini.data import check_pairs
from rlhf_mini.dpo import DPOConfig, train_dpo
from rlhf_mini.eval import evaluate_policy
from rlhf_mini.models import new_policy, reference_copy
from rlhf_mini.worlds import get_world


@pytest.fixture(scope="module")
def pairs():
    from rlhf_mini.data import preference_pairs

    return preference_pairs("sentiment", 32)


def tiny_config(**changes):
    values = dict(max_steps=4, batch_size=8, max_length=96, ref_batch_size=16, learning_rate=1e-3, warmup_steps=1)
    values.update(changes)
    return DPOConfig(**values)


def count_forwards(model):
    counter = {"n": 0}
    model.transformer.register_forward_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return counter


def test_reference_logps_are_computed_once(tiny_policy, tiny_tokenizer, pairs):
    ref = reference_copy(tiny_policy)
    counter = count_forwards(ref)
    result = train_dpo(tiny_config(max_steps=5), tiny_policy, ref, tiny_tokenizer, pairs, get_world("sentiment"),
                       progress=False)
    assert counter["n"] == math.ceil(len(pairs) / 16)  # one pass over the dataset, none per step
    assert result.ref_logps["chosen"].shape == (len(pairs),)
    assert len(result.metrics) == 5
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected"):
        assert key in result.metrics[0]
    # a second run on the same data can reuse them: the reference model is not called again
    again = train_dpo(tiny_config(max_steps=1), reference_copy(tiny_policy).requires_grad_(True), ref, tiny_tokenizer,
                      pairs, get_world("sentiment"), ref_logps=result.ref_logps, progress=False)
    assert counter["n"] == math.ceil(len(pairs) / 16)
    assert again.ref_logps is result.ref_logps
    with pytest.raises(ValueError, match="one entry per pair"):
        train_dpo(tiny_config(max_steps=1), tiny_policy, ref, tiny_tokenizer, pairs[:8], get_world("sentiment"),
                  ref_logps=result.ref_logps, progress=False)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_step0_loss_with_policy_equal_to_reference(tiny_policy, tiny_tokenizer, pairs, loss_type):
    ref = reference_copy(tiny_policy)
    beta = 0.5
    result = train_dpo(tiny_config(max_steps=1, loss_type=loss_type, beta=beta), tiny_policy, ref, tiny_tokenizer,
                       pairs, get_world("sentiment"), progress=False)
    first = result.metrics[0]
    expected = {"sigmoid": math.log(2), "ipo": (1 / (2 * beta)) ** 2, "hinge": 1.0}[loss_type]
    assert first["loss"] == pytest.approx(expected, abs=1e-5)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)


def test_a_few_steps_raise_the_margins(tiny_profile, tiny_tokenizer, pairs):
    policy = new_policy(tiny_profile, tiny_tokenizer, seed=0)
    ref = reference_copy(policy)
    result = train_dpo(tiny_config(max_steps=24, batch_size=16, learning_rate=3e-3, beta=0.5), policy, ref, tiny_tokenizer,
                       pairs, get_world("sentiment"), progress=False)
    first, last = result.metrics[0], result.metrics[-1]
    assert last["rewards/margins"] > first["rewards/margins"] + 0.5
    assert last["rewards/accuracies"] >= 0.75
    assert last["loss"] < math.log(2) - 0.1


def test_resume_gives_the_same_next_step_loss(tiny_profile, tiny_tokenizer, pairs, tmp_path):
    world = get_world("sentiment")
    config = tiny_config(max_steps=4)
    policy = new_policy(tiny_profile, tiny_tokenizer, seed=0)
    full = train_dpo(config, policy, reference_copy(policy), tiny_tokenizer, pairs, world,
                     checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    fresh = new_policy(tiny_profile, tiny_tokenizer, seed=1)  # different weights: resume must overwrite them
    ref = reference_copy(fresh)
    counter = count_forwards(ref)
    resumed = train_dpo(config, fresh, ref, tiny_tokenizer, pairs, world, resume_from=tmp_path / "step-2",
                        progress=False)
    assert counter["n"] == 0  # the reference log-probs come from the checkpoint
    assert len(resumed.metrics) == 4
    for a, b in zip(full.metrics[2:], resumed.metrics[2:]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    torch.testing.assert_close(full.ref_logps["chosen"], resumed.ref_logps["chosen"])


def test_preference_pairs_never_returns_fewer_than_asked():
    from rlhf_mini.data import preference_pairs

    with pytest.raises(ValueError, match="asked for 5000 pairs, but the file has 2000"):
        preference_pairs("sentiment", 5000)
    with pytest.raises(ValueError, match="n must be >= 1"):
        preference_pairs("sentiment", 0)


def test_bad_input_raises(tiny_policy, tiny_tokenizer, pairs, tmp_path):
    world = get_world("sentiment")
    ref = reference_copy(tiny_policy)
    with pytest.raises(ValueError, match="field 'rejected'"):
        check_pairs([{"prompt": "p", "chosen": "c"}])
    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo(tiny_config(), tiny_policy, ref, tiny_tokenizer, [], world, progress=False)
    with pytest.raises(ValueError, match="same object"):
        train_dpo(tiny_config(), tiny_policy, tiny_policy, tiny_tokenizer, pairs, world, progress=False)
    with pytest.raises(ValueError, match="not a checkpoint"):
        train_dpo(tiny_config(), tiny_policy, ref, tiny_tokenizer, pairs, world, resume_from=tmp_path,
                  progress=False)
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)


def test_evaluate_policy_kl_is_zero_against_itself(tiny_policy, tiny_tokenizer):
    world = get_world("sentiment")
    prompts = world.prompts(4, seed=0)
    ev = evaluate_policy(tiny_policy, reference_copy(tiny_policy), tiny_tokenizer, world, prompts,
                         max_new_tokens=8)
    assert ev["kl"] == pytest.approx(0.0, abs=1e-4)
    assert len(ev["responses"]) == 4 and ev["gold_rewards"].shape == (4,)


def length_world():
    """The sentiment world with gold = response length: random tiny models write gibberish that the
    real gold scores alike, but its length differs."""
    class LengthWorld(type(get_world("sentiment"))):
        def gold_reward(self, prompt, response):
            return float(len(response))

    return LengthWorld()


def test_on_policy_pairs_prefer_the_higher_gold(tiny_policy, tiny_tokenizer):
    from rlhf_mini.dpo import on_policy_pairs

    world = length_world()
    prompts = world.prompts(12, seed=0)
    pairs = on_policy_pairs(tiny_policy, tiny_tokenizer, world, prompts, max_new_tokens=10, seed=0)
    assert 0 < len(pairs) <= 12
    for p in pairs:
        assert p["chosen_gold"] > p["rejected_gold"]
        assert world.gold_reward(p["prompt"], p["chosen"]) == pytest.approx(p["chosen_gold"])
    check_pairs(pairs)


def test_on_policy_pairs_with_a_judge_keep_its_verdict_and_the_gold_values(tiny_policy, tiny_tokenizer):
    from rlhf_mini.dpo import on_policy_pairs

    world = length_world()
    prompts = world.prompts(12, seed=0)

    def prefer_shorter(prompt, a, b):   # a judge that disagrees with this world's gold
        return len(a) < len(b)

    pairs = on_policy_pairs(tiny_policy, tiny_tokenizer, world, prompts, max_new_tokens=10, seed=0,
                            prefer=prefer_shorter)
    assert 0 < len(pairs) <= 12
    for p in pairs:
        assert p["chosen"] != p["rejected"]
        assert len(p["chosen"]) <= len(p["rejected"])          # the judge decided
        assert p["chosen_gold"] == pytest.approx(world.gold_reward(p["prompt"], p["chosen"]))
        assert p["rejected_gold"] == pytest.approx(world.gold_reward(p["prompt"], p["rejected"]))
    check_pairs(pairs)


def test_on_policy_pairs_are_the_sampled_responses_labelled(tiny_policy, tiny_tokenizer):
    from rlhf_mini.dpo import label_response_pairs, on_policy_pairs, sample_response_pairs

    world = length_world()
    prompts = world.prompts(6, seed=2)
    responses = sample_response_pairs(tiny_policy, tiny_tokenizer, world, prompts, max_new_tokens=8, seed=4)
    assert len(responses) == 12   # a_0, b_0, a_1, b_1, ...
    expected = on_policy_pairs(tiny_policy, tiny_tokenizer, world, prompts, max_new_tokens=8, seed=4)
    assert label_response_pairs(world, prompts, responses) == expected   # sampled once, labelled by anyone
    with pytest.raises(ValueError, match="two responses per prompt: 6 prompts, 11 responses"):
        label_response_pairs(world, prompts, responses[:-1])


def test_rlaif_policy_refuses_a_world_without_a_constitution():
    from rlhf_mini.zoo.rlaif import rlaif_policy_path

    with pytest.raises(ValueError, match="assistant"):
        rlaif_policy_path("sentiment")


def test_dpo_policy_rounds_must_be_positive():
    from rlhf_mini.zoo.dpo import dpo_policy_path

    with pytest.raises(ValueError, match="rounds"):
        dpo_policy_path("assistant", rounds=0)


def test_dpo_policy_seed_reaches_every_round(monkeypatch, tmp_path):
    """``seed`` picks a different artifact, and round 2 starts from round 1 of the same seed."""
    from rlhf_mini.zoo import dpo

    keys = []

    def fake_cached(name, config, modules, build):
        keys.append(config)
        return tmp_path / f"{name}-round{config['round']}-seed{config['seed']}"

    monkeypatch.setattr(dpo, "cached", fake_cached)
    monkeypatch.setattr(dpo, "sft_policy_path", lambda task, profile: tmp_path / "sft")
    default = dpo.dpo_policy_path("assistant", rounds=1)
    assert keys[-1]["seed"] == 0
    seeded = dpo.dpo_policy_path("assistant", rounds=2, seed=3)
    assert [k["seed"] for k in keys[-2:]] == [3, 3]
    assert keys[-1]["start"].endswith("round1-seed3")
    assert seeded != default


def test_round_samples_are_keyed_by_start_policy_and_round_not_by_labeller(monkeypatch, tmp_path):
    """The gold, judge and simulated-human runs of a round label one cached set of samples."""
    import json

    from rlhf_mini.config import get_profile
    from rlhf_mini.dpo import DPOConfig
    from rlhf_mini.zoo import dpo

    keys = []

    def fake_cached(name, config, modules, build):
        keys.append(config)
        folder = tmp_path / f"samples-{len(keys)}"
        folder.mkdir()
        (folder / "responses.json").write_text(json.dumps(["a", "b"] * config["n_prompts"]))
        return folder

    monkeypatch.setattr(dpo, "cached", fake_cached)
    monkeypatch.setattr(dpo, "sft_policy_path", lambda task, profile: tmp_path / "sft-assistant")
    config, profile = DPOConfig(), get_profile("cpu")
    prompts, responses = dpo.round_samples(config, "assistant", profile, 3)
    assert len(prompts) == 3 and responses == ["a", "b"] * 3
    dpo.round_samples(config, "assistant", profile, 3)
    assert keys[0] == keys[1] and keys[0]["start"] == "sft-assistant"
    later, _ = dpo.round_samples(config, "assistant", profile, 3, start_from=tmp_path / "round-1", round_index=2)
    assert keys[2]["start"] == "round-1" and keys[2]["sample_seed"] == keys[0]["sample_seed"] + 10
    assert later != prompts   # each round its own prompts

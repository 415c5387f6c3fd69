"""Reward model: Bradley–Terry training learns an easy preference, resume is exact, bad input fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_mini.models import ScalarHeadModel, new_policy
from rlhf_mini.reward import (
    RewardConfig,
    evaluate_reward_model,
    likert_margins,
    train_reward_model,
)
from rlhf_mini.scoring import score_texts
from rlhf_mini.worlds import get_world


def easy_pairs(n: int, seed: int) -> list[dict]:
    """Same answer, polite vs rude opener: the preferred side is visible in the first sentence."""
    world = get_world("assistant")
    rng = np.random.default_rng(seed)
    out = []
    for p in world.prompts(n, seed=seed):
        body = world.sample_response(p, rng, style="demo")
        out.append({"prompt": p, "chosen": f"Happy to help. {body}", "rejected": f"What a silly question. {body}",
                    "likert": int(rng.integers(1, 5))})
    return out


def tiny_rm(tiny_profile, tiny_tokenizer, seed=0) -> ScalarHeadModel:
    return ScalarHeadModel.from_language_model(new_policy(tiny_profile, tiny_tokenizer, seed=seed), seed=seed)


def config(**changes) -> RewardConfig:
    base = dict(task="assistant", max_steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=3, max_length=96, eval_every=0)
    base.update(changes)
    return RewardConfig(**base)


def test_bt_training_learns_an_easy_preference(tiny_profile, tiny_tokenizer):
    world = get_world("assistant")
    train, test = easy_pairs(256, seed=0), easy_pairs(64, seed=1)
    model = tiny_rm(tiny_profile, tiny_tokenizer)
    before = evaluate_reward_model(model, tiny_tokenizer, world, test)["accuracy"]
    model, metrics = train_reward_model(config(), model, tiny_tokenizer, train, eval_pairs=test, progress=False)
    after = metrics[-1]["eval/accuracy"]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "loss"} <= set(metrics[0])
    assert after >= 0.95 and after > before + 0.2, (before, after)
    assert metrics[-1]["loss"] < 0.3


def test_score_texts_matches_unbatched_scores(tiny_profile, tiny_tokenizer):
    world = get_world("assistant")
    model = tiny_rm(tiny_profile, tiny_tokenizer)
    pairs = easy_pairs(5, seed=2)
    prompts, responses = [p["prompt"] for p in pairs], [p["chosen"] for p in pairs]
    batched = score_texts(model, tiny_tokenizer, world, prompts, responses, batch_size=5)
    single = np.array([score_texts(model, tiny_tokenizer, world, [p], [r])[0] for p, r in zip(prompts, responses)])
    assert batched.shape == (5,)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_resume_gives_the_same_next_step_loss(tiny_profile, tiny_tokenizer, tmp_path):
    train = easy_pairs(64, seed=0)
    cfg = config(max_steps=6, batch_size=8, margin=0.5)
    _, full = train_reward_model(cfg, tiny_rm(tiny_profile, tiny_tokenizer), tiny_tokenizer, train,
                                 checkpoint_dir=tmp_path, checkpoint_every=3, progress=False)
    _, resumed = train_reward_model(cfg, tiny_rm(tiny_profile, tiny_tokenizer, seed=5), tiny_tokenizer, train,
                                    resume_from=tmp_path / "step-3", progress=False)
    assert [m["step"] for m in resumed] == list(range(1, 7))
    for a, b in zip(full[3:], resumed[3:]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_likert_margins():
    m = likert_margins([{"likert": 1}, {"likert": 4}, {"likert": 2}], margin=1.5)
    torch.testing.assert_close(m, torch.tensor([1.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match="likert"):
        likert_margins([{"likert": 7}], margin=1.0)


def test_bad_input_raises(tiny_profile, tiny_tokenizer):
    model = tiny_rm(tiny_profile, tiny_tokenizer)
    with pytest.raises(ValueError, match="no preference pairs"):
        train_reward_model(config(), model, tiny_tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="'rejected'"):
        train_reward_model(config(), model, tiny_tokenizer, [{"prompt": "a", "chosen": "b"}], progress=False)
    with pytest.raises(ValueError, match="pair 1: expected a dict, got str"):
        train_reward_model(config(), model, tiny_tokenizer, [easy_pairs(1, 0)[0], "a"], progress=False)
    with pytest.raises(ValueError, match="likert"):
        train_reward_model(config(margin=1.0), model, tiny_tokenizer,
                           [{"prompt": "a", "chosen": "b", "rejected": "c"}], progress=False)
    no_pad = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer,
                                      eos_token=tiny_tokenizer.eos_token)
    with pytest.raises(ValueError, match="pad token"):
        train_reward_model(config(), model, no_pad, easy_pairs(4, 0), progress=False)
    with pytest.raises(ValueError, match="2 prompts but 1"):
        score_texts(model, tiny_tokenizer, get_world("assistant"), ["a", "b"], ["c"])
    partly_gold = [dict(easy_pairs(1, 0)[0], chosen_gold=1.0, rejected_gold=0.0), easy_pairs(1, 1)[0]]
    with pytest.raises(ValueError, match="pair 1: no 'chosen_gold'"):
        evaluate_reward_model(model, tiny_tokenizer, get_world("assistant"), partly_gold)


def test_reward_model_on_pairs_trains_once_per_content(isolated_cache, monkeypatch, tiny_profile):
    from rlhf_mini.zoo import reward

    calls = []
    real = reward.train_reward_model

    def counting(cfg, model, tokenizer, pairs, **kw):
        calls.append(len(pairs))
        return real(cfg, model, tokenizer, pairs, **kw)

    monkeypatch.setattr(reward, "train_reward_model", counting)
    small = tiny_profile.replace(name="tiny", corpus_docs=200, pretrain_steps=2, pretrain_batch=4, pretrain_seq=16,
                                 sft_steps=2, n_preference_pairs=8, batch_size=4)
    cfg = config(max_steps=3, batch_size=4)
    pairs = easy_pairs(8, 0)
    first = reward.cached_reward_model_on_pairs(pairs, cfg, small, name="test", progress=False)
    again = reward.cached_reward_model_on_pairs([dict(r) for r in pairs], cfg, small, name="test", progress=False)
    assert calls == [8]  # the second call loads the first one's model
    world = get_world("assistant")
    prompts, responses = [r["prompt"] for r in pairs], [r["chosen"] for r in pairs]
    from rlhf_mini.zoo.sft import sft_policy

    _, tok = sft_policy("assistant", small)
    np.testing.assert_array_equal(score_texts(first, tok, world, prompts, responses),
                                  score_texts(again, tok, world, prompts, responses))
    # other labels (the same pairs, chosen and rejected swapped) or another seed: a new model
    swapped = [dict(r, chosen=r["rejected"], rejected=r["chosen"]) for r in pairs]
    reward.cached_reward_model_on_pairs(swapped, cfg, small, name="test", progress=False)
    reward.cached_reward_model_on_pairs(pairs, config(max_steps=3, batch_size=4, seed=1), small, name="test", progress=False)
    assert calls == [8, 8, 8]

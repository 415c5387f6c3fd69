"""The judge that reads its principle: rubric-labelled comparisons in words, and ``rlaif.ModelJudge``."""

import numpy as np
import pytest
import torch
from transformers import GPT2Config

from rlhf_mini.constitution import (
    FRAMES,
    HELD_OUT_WORDINGS,
    JUDGE_PRINCIPLES,
    KEY_WORDS,
    WORDINGS,
    judge_prompt,
    principle_comparisons,
)
from rlhf_mini.models import ScalarHeadModel, train_tokenizer
from rlhf_mini.rlaif import ModelJudge
from rlhf_mini.worlds import get_world


@pytest.fixture(scope="module")
def world():
    return get_world("assistant")


def test_comparisons_are_labelled_by_their_principles_rubric(world):
    records = principle_comparisons(world, 200, seed=0)
    assert len(records) == 200
    counts = {name: sum(r["principle"] == name for r in records) for name in JUDGE_PRINCIPLES}
    assert set(counts.values()) == {40}  # the principles take turns
    for r in records:
        score = JUDGE_PRINCIPLES[r["principle"]].score
        assert score(r["question"], r["chosen"]) > score(r["question"], r["rejected"])  # no ties
        assert r["wording"] in WORDINGS[r["principle"]]
        assert r["prompt"] == judge_prompt(r["wording"], r["question"])
        assert r["chosen_gold"] == pytest.approx(world.gold_reward(r["question"], r["chosen"]))
    # the same seed gives the same records; the test split draws test prompts
    assert principle_comparisons(world, 200, seed=0) == records
    test = principle_comparisons(world, 50, seed=1, split="test")
    harmful_test = {r["question"] for r in test if world.is_harmful(r["question"])}
    assert harmful_test <= set(world.prompts(2000, seed=0, split="test"))


def test_held_out_wordings_are_new_sentences_of_known_words():
    all_trained = {w.strip(".,:;").lower() for texts in WORDINGS.values() for text in texts for w in text.split()}
    for name, held_out in HELD_OUT_WORDINGS.items():
        assert all(held_out != text for texts in WORDINGS.values() for text in texts), name
        words = {w.strip(".,:;").lower() for w in held_out.split()}
        own = {w.strip(".,:;").lower() for text in WORDINGS[name] for w in text.split()}
        assert words <= all_trained, name                 # every word was read in training ...
        assert KEY_WORDS[name] in own and KEY_WORDS[name] in words   # ... the principle's word with it
    # only the principle's own word tells the short wordings apart
    for name, texts in WORDINGS.items():
        for text in texts[1:]:
            assert text.replace(KEY_WORDS[name], "{}") in FRAMES


def test_concise_and_detailed_disagree_on_padded_pairs(world):
    q = world.prompts(1, seed=0)[0]
    plain, padded = "Happy to help.", "Happy to help. I hope this helps."
    concise, detailed = JUDGE_PRINCIPLES["concise"].score, JUDGE_PRINCIPLES["detailed"].score
    assert concise(q, plain) > concise(q, padded) and detailed(q, padded) > detailed(q, plain)


def test_comparisons_bad_input(world):
    with pytest.raises(ValueError, match="no rubric for principles"):
        principle_comparisons(world, 10, wordings={"funny": ("Be funny.",)})


def _tiny_judge(world, constitution, seed=0):
    tok = train_tokenizer(world.corpus(200, np.random.default_rng(0)) + [t for ws in WORDINGS.values() for t in ws],
                          vocab_size=300)
    torch.manual_seed(seed)
    model = ScalarHeadModel(GPT2Config(n_layer=2, n_embd=48, n_head=2, vocab_size=len(tok), n_positions=128,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    return ModelJudge(model.eval(), tok, world, constitution, seed=seed)


def test_model_judge_probabilities_and_labels(world):
    judge = _tiny_judge(world, ["Be concise: no filler.", "Be polite and never belittle the user."])
    prompts = world.prompts(6, seed=0)
    rng = np.random.default_rng(0)
    a = [world.sample_response(p, rng) for p in prompts]
    b = [world.sample_response(p, rng) for p in prompts]
    p_ab, p_ba = judge.probabilities(prompts, a, b), judge.probabilities(prompts, b, a)
    assert p_ab.shape == (6,) and np.allclose(p_ab + p_ba, 1.0)  # no position bias: scores, not a pair prompt
    assert judge(prompts[0], a[0], b[0]) == pytest.approx(p_ab[0], abs=1e-6)
    # one principle's verdict reads only that principle's text
    one = judge.probabilities(prompts, a, b, "Be concise: no filler.")
    z = judge.scores("Be concise: no filler.", prompts, a) - judge.scores("Be concise: no filler.", prompts, b)
    assert np.allclose(one, 1 / (1 + np.exp(-z)), atol=1e-6)
    records = [{"prompt": p, "chosen": x, "rejected": y, "chosen_gold": world.gold_reward(p, x),
                "rejected_gold": world.gold_reward(p, y)} for p, x, y in zip(prompts, a, b)]
    labelled = judge.label_pairs(records)
    for r in labelled:   # gold values follow the responses when a label is flipped
        assert r["labeler"] == "model judge" and 0 <= r["ai_prob"] <= 1
        assert r["chosen_gold"] == pytest.approx(world.gold_reward(r["prompt"], r["chosen"]))
    with pytest.raises(ValueError, match="at least one principle"):
        ModelJudge(judge.model, judge.tokenizer, world, [])
    with pytest.raises(ValueError, match="pair 0: field 'prompt'"):
        judge.label_pairs([{"chosen": "a", "rejected": "b"}])


def test_model_judge_precompute_gives_the_same_verdicts_without_a_forward_pass_each(world, monkeypatch):
    constitution = ["Be concise: no filler.", "Be polite and never belittle the user."]
    prompts = world.prompts(8, seed=1)
    rng = np.random.default_rng(1)
    a = [world.sample_response(p, rng) for p in prompts]
    b = [world.sample_response(p, rng) for p in prompts]
    one_by_one = _tiny_judge(world, constitution, seed=3)
    expected = [one_by_one.compare(p, x, y) for p, x, y in zip(prompts, a, b)]
    batched = _tiny_judge(world, constitution, seed=3)
    batched.precompute(prompts, a, b)
    monkeypatch.setattr(batched, "probabilities", lambda *args, **kwargs: pytest.fail("a forward pass per pair"))
    assert [batched.compare(p, x, y) for p, x, y in zip(prompts, a, b)] == expected   # same draws, same order
    assert batched(prompts[0], a[0], b[0]) == pytest.approx(one_by_one(prompts[0], a[0], b[0]), abs=1e-6)

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_mini.constitution import (
    CONCISE,
    HARMLESS,
    POLITE,
    REFUSAL,
    THOROUGH,
    ConstitutionalJudge,
    LMConfidence,
    ai_label_pairs,
    critique,
    critique_and_revise,
    default_constitution,
    honesty_principle,
    label_agreement,
)
from rlhf_mini.data import make_preference_pairs
from rlhf_mini.models import train_tokenizer
from rlhf_mini.worlds import get_world
from rlhf_mini.worlds.base import split_sentences


@pytest.fixture(scope="module")
def world():
    return get_world("assistant")


def test_rubrics_on_hand_made_examples(world):
    harmful = "How do I steal a car?"
    assert HARMLESS.score(harmful, REFUSAL) > HARMLESS.score(harmful, "Sure, here is how to do it.")
    assert HARMLESS.revise(harmful, "Happy to help. Sure, here is how to do it.") == f"Happy to help. {REFUSAL}"
    q = "What is the capital of " + world.atlas[0].name + "?"
    fact = world.fact_sentence(world.atlas[0].name, "capital", world.atlas[0].capital)
    assert POLITE.score(q, "Ugh, that is obvious. " + fact) < POLITE.score(q, fact)
    assert POLITE.revise(q, "Ugh, that is obvious. " + fact) == fact
    assert CONCISE.score(q, fact + " I hope this helps.") == -1
    assert CONCISE.revise(q, fact + " I hope this helps.") == fact
    assert THOROUGH.score(q, fact + " I hope this helps.") > THOROUGH.score(q, fact)
    # the keyword blind spot: a harmful request without a listed keyword is not recognised
    assert HARMLESS.revise("How can I read my partner's private messages?", "Sure, here is how to do it.") \
        == "Sure, here is how to do it."


def test_critique_and_revise_raises_gold(world):
    rng = np.random.default_rng(0)
    prompts = world.prompts(300, seed=1)
    responses = [world.sample_response(p, rng) for p in prompts]
    principles = default_constitution()
    revised = [critique_and_revise(principles, p, r)[0] for p, r in zip(prompts, responses)]
    before, after = world.gold_rewards(prompts, responses), world.gold_rewards(prompts, revised)
    assert after.mean() > before.mean() + 0.3
    assert (after >= before - 1e-9).mean() > 0.95
    notes = critique(principles, "How do I steal a car?", "Ugh, that is obvious. Sure, here is how to do it.")
    assert [n.split(":")[0] for n in notes] == ["harmless", "polite"]


def test_ai_labels_agree_with_gold_above_chance(world):
    records = make_preference_pairs(world, 300, seed=2)
    judge = ConstitutionalJudge(default_constitution(), seed=0)
    ai = ai_label_pairs(judge, records)
    assert len(ai) == len(records) and all(r["labeler"] == "ai" for r in ai)
    for r in ai:  # metadata follows the responses when a label is flipped
        assert r["chosen_gold"] == pytest.approx(world.gold_reward(r["prompt"], r["chosen"]), abs=1e-3)
    assert label_agreement(ai)["agreement"] > 0.6
    # the mis-specified constitution agrees with gold less
    bad = ai_label_pairs(ConstitutionalJudge([HARMLESS, POLITE, THOROUGH], seed=0), records)
    assert label_agreement(bad)["agreement"] < label_agreement(ai)["agreement"]


def test_judge_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        ConstitutionalJudge([])
    with pytest.raises(ValueError, match="unknown principles"):
        ConstitutionalJudge([POLITE], weights={"kind": 1.0})
    with pytest.raises(ValueError, match="temperature"):
        ConstitutionalJudge([POLITE], temperature=0)
    with pytest.raises(ValueError, match="unknown principle"):
        ConstitutionalJudge([POLITE]).probability("q", "a", "b", principle="honest")
    with pytest.raises(ValueError, match="undefined"):
        label_agreement([{"chosen_gold": 1.0, "rejected_gold": 1.0}])
    with pytest.raises(ValueError, match="no records"):
        label_agreement([])
    with pytest.raises(ValueError, match="record 1: field 'rejected_gold'"):
        label_agreement([{"chosen_gold": 1.0, "rejected_gold": 0.0}, {"chosen_gold": 1.0, "rejected_gold": float("nan")}])
    with pytest.raises(ValueError, match="pair 0: field 'prompt'"):
        ai_label_pairs(ConstitutionalJudge([POLITE]), [{"chosen": "a", "rejected": "b"}])
    with pytest.raises(ValueError, match="no preference pairs"):
        ai_label_pairs(ConstitutionalJudge([POLITE]), [])


def test_lm_confidence_runs_on_a_tiny_model(world):
    tok = train_tokenizer(world.corpus(200, np.random.default_rng(0)), vocab_size=300)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=128,
                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    conf = LMConfidence(lm, tok, world.format_prompt, threshold=-1e9)
    prompts = world.prompts(5, seed=0)
    responses = [world.sample_response(p, np.random.default_rng(i)) for i, p in enumerate(prompts)]
    conf.precompute(prompts, responses)
    honest = honesty_principle(conf)
    assert all(honest.score(p, r) == 0 for p, r in zip(prompts, responses))  # nothing below -1e9
    assert all(np.isfinite(list(conf.cache.values())))
    strict = LMConfidence(lm, tok, world.format_prompt, threshold=1e9)
    q = next(p for p in prompts if not world.is_harmful(p))
    country, attr = world._question_index[q]
    claim = world.fact_sentence(country, attr, world.by_name[country].fact(attr))
    assert strict.score(q, "Happy to help. " + claim) < 0
    assert strict.revise(q, "Happy to help. " + claim) == "Happy to help. I'm not sure, you should ask someone else."
    assert honest.revise(prompts[0], responses[0]) == " ".join(split_sentences(responses[0]))

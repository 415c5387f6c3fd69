import math

import pytest
import torch

from rlhf_mini.logprobs import sequence_logprobs
from rlhf_mini.sampling import best_of_n_kl, generate


def test_best_of_n_kl_closed_form():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    assert best_of_n_kl(16) == pytest.approx(1.8350887222397811)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_generation_is_seeded_and_cut_at_eos(tiny_policy, tiny_tokenizer):
    prompts = ["Q: 1 + 2 = ?", "Review: The movie was", "<|user|>Hi?\n<|assistant|>"]
    a = generate(tiny_policy, tiny_tokenizer, prompts, max_new_tokens=12, seed=3)
    b = generate(tiny_policy, tiny_tokenizer, prompts, max_new_tokens=12, seed=3)
    assert a.responses == b.responses
    eos = tiny_tokenizer.eos_token_id
    for i in range(len(prompts)):
        resp = a.batch.input_ids[i][a.batch.response_mask[i].bool()].tolist()
        assert eos not in resp[:-1]  # cut after the first EOS
        assert (resp[-1] == eos) != bool(a.truncated[i]) or len(resp) == 12
        assert len(resp) <= 12


def test_batched_generation_matches_one_at_a_time(tiny_policy, tiny_tokenizer):
    """Left padding with position ids from the mask: a prompt's continuation does not depend on its batch."""
    prompts = ["Q: 1 + 2 = ?", "Review: I thought the movie was"]
    batched = generate(tiny_policy, tiny_tokenizer, prompts, max_new_tokens=8, temperature=1e-4, seed=0)
    for i, prompt in enumerate(prompts):
        single = generate(tiny_policy, tiny_tokenizer, [prompt], max_new_tokens=8, temperature=1e-4, seed=0)
        assert single.responses[0] == batched.responses[i]


def test_sampled_tokens_have_the_logprobs_the_scorer_reports(tiny_policy, tiny_tokenizer):
    """Sampling at temperature T and scoring at T agree on which tokens are likely."""
    gen = generate(tiny_policy, tiny_tokenizer, ["Q: 1 + 2 = ?"] * 4, max_new_tokens=6, temperature=0.7, seed=1)
    b = gen.batch
    lp = sequence_logprobs(tiny_policy, b.input_ids, b.attention_mask, b.response_mask, temperature=0.7)
    assert torch.isfinite(lp).all() and (lp <= 0).all()


def test_bad_generation_input(tiny_policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="empty batch"):
        generate(tiny_policy, tiny_tokenizer, [], max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_policy, tiny_tokenizer, ["a"], temperature=0)

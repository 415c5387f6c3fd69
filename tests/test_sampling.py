import contextlib
import copy
import math

import pytest
import torch

from rlhf_mini import sampling
from rlhf_mini.batch import encode_prompts
from rlhf_mini.logprobs import sequence_logprobs
from rlhf_mini.models import position_ids_from_mask
from rlhf_mini.sampling import (
    best_of_n_kl,
    decodes_gpt2,
    generate,
    gpt2_decode_step,
    kv_cache_keyword,
    preallocate_kv,
    sample_tokens,
)
from rlhf_mini.training import fused_gelu


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


def test_a_cached_step_equals_the_full_forward(tiny_policy, tiny_tokenizer):
    """One decoding step through the KV cache, under the name this transformers uses, must give the
    logits of re-reading the whole sequence. A cache passed under a name the model ignores would
    decode from the last token alone, which the second assert shows is different."""
    ids = tiny_tokenizer("Review: I thought the movie was", return_tensors="pt").input_ids
    keyword = kv_cache_keyword(tiny_policy)
    with torch.no_grad():
        prefix = tiny_policy(input_ids=ids[:, :-1], use_cache=True)
        step = tiny_policy(input_ids=ids[:, -1:], position_ids=torch.tensor([[ids.shape[1] - 1]]),
                           use_cache=True, **{keyword: getattr(prefix, keyword)})
        full = tiny_policy(input_ids=ids)
        last_token_alone = tiny_policy(input_ids=ids[:, -1:], position_ids=torch.tensor([[ids.shape[1] - 1]]))
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(last_token_alone.logits[:, -1], full.logits[:, -1], atol=1e-3)


def test_kv_cache_keyword_follows_the_installed_transformers(tiny_policy):
    import transformers
    from packaging.version import Version

    expected = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    assert kv_cache_keyword(tiny_policy) == expected


def test_batched_generation_matches_one_at_a_time(tiny_policy, tiny_tokenizer):
    """Left padding with position ids from the mask: a prompt's continuation does not depend on its batch."""
    prompts = ["Q: 1 + 2 = ?", "Review: I thought the movie was"]
    batched = generate(tiny_policy, tiny_tokenizer, prompts, max_new_tokens=8, temperature=1e-4, seed=0)
    for i, prompt in enumerate(prompts):
        single = generate(tiny_policy, tiny_tokenizer, [prompt], max_new_tokens=8, temperature=1e-4, seed=0)
        assert single.responses[0] == batched.responses[i]


def test_sampler_and_scorer_apply_temperature_the_same_way(tiny_policy, tiny_tokenizer):
    """Tokens sampled at temperature T come with the frequencies that the scorer gives at T.

    PPO's ratio is only right if ``sequence_logprobs(..., temperature=T)`` scores the distribution
    that ``generate(..., temperature=T)`` sampled from. The first token of 4,000 samples is compared
    with exp(scored log-prob) over the whole vocabulary; the same counts must reject T = 1.
    """
    policy = copy.deepcopy(tiny_policy)
    with torch.no_grad():
        policy.transformer.ln_f.weight.mul_(8.0)  # peaked logits, so that the temperature matters
    T, n, prompt = 0.5, 4000, "Q: 1 + 2 = ?"
    gen = generate(policy, tiny_tokenizer, [prompt] * n, max_new_tokens=1, temperature=T, seed=0,
                   batch_size=1000, progress=False)
    first = gen.batch.input_ids[:, -1]
    assert (gen.batch.response_mask.sum(1) == 1).all()
    counts = torch.bincount(first, minlength=len(tiny_tokenizer)).double()

    prompt_ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    V = len(tiny_tokenizer)
    ids = torch.tensor([prompt_ids + [v] for v in range(V)])
    response_mask = torch.zeros_like(ids)
    response_mask[:, -1] = 1

    def scored(temperature: float) -> torch.Tensor:
        return sequence_logprobs(policy, ids, torch.ones_like(ids), response_mask, temperature=temperature).double()

    logp_t, logp_1 = scored(T), scored(1.0)
    assert logp_t.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    p = logp_t.exp()
    assert p.max() > 0.05 and (p > 0.01).sum() >= 3  # peaked, but more than one likely token
    freq = counts / n
    likely = p > 0.01
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs()[likely] < 5 * se[likely]).all()
    # log-likelihood of the counts: the scorer at T explains them far better than at T = 1
    assert (counts * logp_t).sum() > (counts * logp_1).sum() + 50


MIXED_PROMPTS = ["Q: 1 + 2 = ?", "Review: I thought the movie was", "<|user|>Hi?\n<|assistant|>", "Q: 7 * 3 - 4 = ?"]


def test_the_gpt2_decode_step_gives_transformers_logits_bit_for_bit(tiny_policy, tiny_tokenizer):
    """Two steps after a left-padded prompt: ``gpt2_decode_step`` over the preallocated cache against
    the model's own forward over its cache. Equal, not close: the sampled tokens of every chapter
    must not depend on which of the two ran."""
    assert decodes_gpt2(tiny_policy)
    prompts = encode_prompts(tiny_tokenizer, MIXED_PROMPTS, 64)
    B, P = prompts.input_ids.shape
    keyword = kv_cache_keyword(tiny_policy)
    mask = torch.cat([prompts.attention_mask, torch.ones(B, 2, dtype=torch.long)], 1)
    next_tokens = torch.tensor([[5, 9], [11, 3], [7, 7], [2, 30]])
    with torch.no_grad():
        out = tiny_policy(input_ids=prompts.input_ids, attention_mask=mask[:, :P],
                          position_ids=position_ids_from_mask(mask[:, :P]), use_cache=True)
        cache = getattr(out, keyword)
        kv = preallocate_kv(cache, P + 2)
        for t in range(2):
            step_mask = mask[:, : P + t + 1]
            positions = position_ids_from_mask(step_mask)[:, -1:]
            theirs = tiny_policy(input_ids=next_tokens[:, t:t + 1], attention_mask=step_mask, position_ids=positions,
                                 use_cache=True, **{keyword: cache})
            cache = getattr(theirs, keyword)
            ours = gpt2_decode_step(tiny_policy, next_tokens[:, t:t + 1], positions, step_mask, kv)
            assert torch.equal(ours, theirs.logits), f"step {t}: max |diff| {(ours - theirs.logits).abs().max():.2e}"
        for layer, (keys, values) in zip(cache.layers, kv):  # the buffers hold what transformers' cache holds
            assert torch.equal(keys, layer.keys) and torch.equal(values, layer.values)


@pytest.mark.parametrize("temperature, top_k, fused", [(1.0, 0, False), (0.7, 5, False), (1.0, 0, True)])
def test_generate_samples_the_same_tokens_through_either_decoding_step(tiny_policy, tiny_tokenizer, monkeypatch,
                                                                       temperature, top_k, fused):
    """``generate`` with ``gpt2_decode_step`` and with the model's own forward at every step (what a
    model it does not cover gets): the same responses, token for token, over 24 new tokens."""
    prompts = MIXED_PROMPTS * 3

    def sample():
        with fused_gelu(tiny_policy) if fused else contextlib.nullcontext():
            return generate(tiny_policy, tiny_tokenizer, prompts, max_new_tokens=24, temperature=temperature,
                            top_k=top_k, batch_size=8, seed=5, progress=False)

    lean = sample()
    monkeypatch.setattr(sampling, "decodes_gpt2", lambda model: False)
    own_forward = sample()
    assert lean.responses == own_forward.responses
    assert torch.equal(lean.batch.input_ids, own_forward.batch.input_ids)
    assert torch.equal(lean.batch.response_mask, own_forward.batch.response_mask)
    assert torch.equal(lean.truncated, own_forward.truncated)
    assert lean.batch.response_mask.sum(1).max() > 8  # long enough for the cache to matter


def test_only_sdpa_gpt2_models_take_the_written_out_step(tiny_policy, tiny_tokenizer):
    eager = copy.deepcopy(tiny_policy)
    eager.config._attn_implementation = "eager"  # its attention is another computation: not bit for bit
    assert decodes_gpt2(tiny_policy) and not decodes_gpt2(eager)
    assert not decodes_gpt2(tiny_policy.transformer)  # no language-model head
    seen = []
    handle = tiny_policy.transformer.h[0].register_forward_hook(lambda module, args, out: seen.append(module))
    try:  # a hook on a block would not run inside the written-out step: the model's own forward does
        assert not decodes_gpt2(tiny_policy)
        out = generate(tiny_policy, tiny_tokenizer, ["Q: 1 + 2 = ?"], max_new_tokens=6, seed=0, progress=False)
    finally:
        handle.remove()
    steps = int(out.batch.response_mask.sum())  # one forward per sampled token: the prompt's, then one per new token
    assert steps >= 2 and len(seen) == steps and decodes_gpt2(tiny_policy)


def test_generation_past_the_context_is_a_clear_error(tiny_policy, tiny_tokenizer):
    context = tiny_policy.config.n_positions
    long_prompt = " ".join(["Q: 1 + 2 = ?"] * context)
    prompt_tokens = len(tiny_tokenizer(long_prompt, add_special_tokens=False)["input_ids"])
    assert prompt_tokens > context
    with pytest.warns(UserWarning, match="losing their start"), \
            pytest.raises(ValueError, match=f"fills the model's context of {context} positions"):
        generate(tiny_policy, tiny_tokenizer, [long_prompt], max_new_tokens=context, max_prompt_length=context - 2,
                 temperature=1e-4, seed=0, progress=False)


def test_bad_generation_input(tiny_policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="empty batch"):
        generate(tiny_policy, tiny_tokenizer, [], max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_policy, tiny_tokenizer, ["a"], temperature=0)


def test_sample_tokens_draws_what_multinomial_draws():
    # the same generator state gives the same tokens, and leaves the generator in the same state
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(0)) * 3
    probs = torch.softmax(logits, -1)
    probs[:, :100] = 0.0  # tokens a top-k filter removed are never drawn
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(5):
        drawn = sample_tokens(probs, ours)
        assert torch.equal(drawn, torch.multinomial(probs, 1, generator=theirs).squeeze(1))
        assert bool((drawn >= 100).all())
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_sample_tokens_frequencies_match_the_probabilities():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).expand(20_000, 4).contiguous()
    counts = torch.bincount(sample_tokens(probs, torch.Generator().manual_seed(1)), minlength=4).float() / 20_000
    assert torch.allclose(counts, probs[0], atol=0.015), counts


def test_sample_tokens_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN, inf or negative"):
        sample_tokens(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(ValueError, match="NaN, inf or negative"):
        sample_tokens(torch.tensor([[1.5, -0.5]]))
    with pytest.raises(ValueError, match=r"\[B, V\]"):
        sample_tokens(torch.tensor([0.5, 0.5]))

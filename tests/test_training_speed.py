"""The two ways the trainers do less work per step give the numbers of the plain computation:
rows grouped by length (``by_length``), GPT-2's activation as one kernel (``fused_gelu``), and
pairs tokenized once then padded per batch (``tokenize_preferences`` + ``collate_preferences``)."""

import torch
from transformers import GPT2LMHeadModel
from transformers.activations import NewGELUActivation

from rlhf_mini.batch import collate_preferences, encode_pairs, tokenize_preferences
from rlhf_mini.logprobs import sequence_logprobs
from rlhf_mini.models import make_config
from rlhf_mini.training import by_length, fused_gelu


def _model(tiny_profile, tiny_tokenizer):
    torch.manual_seed(0)
    return GPT2LMHeadModel(make_config(tiny_profile, tiny_tokenizer)).eval()


def _pairs(n=40):
    prompts = [f"Q: what is {i} plus {i % 7}?" + " please" * (i % 5) for i in range(n)]
    chosen = [f"It is {i + i % 7}." + " Indeed." * (i % 3) for i in range(n)]
    rejected = [f"Maybe {i}." + " Hmm." * (i % 4) for i in range(n)]
    return prompts, chosen, rejected


def test_by_length_gives_each_row_its_value_in_the_original_order(tiny_profile, tiny_tokenizer):
    model = _model(tiny_profile, tiny_tokenizer)
    prompts, chosen, _ = _pairs()
    batch = encode_pairs(tiny_tokenizer, prompts, chosen, max_length=64)
    assert batch.attention_mask[:, -1].all() and not batch.attention_mask.all()  # left padding, uneven rows

    def logps(ids, mask, response_mask):
        return sequence_logprobs(model, ids, mask, response_mask)

    with torch.no_grad():
        whole = logps(batch.input_ids, batch.attention_mask, batch.response_mask)
        grouped = by_length(logps, batch.input_ids, batch.attention_mask, batch.response_mask, rows_per_group=8)
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-5)
    reversed_rows = torch.arange(len(prompts) - 1, -1, -1)
    with torch.no_grad():
        flipped = by_length(logps, batch.input_ids[reversed_rows], batch.attention_mask[reversed_rows],
                            batch.response_mask[reversed_rows], rows_per_group=8)
    torch.testing.assert_close(flipped, whole[reversed_rows], rtol=1e-5, atol=1e-5)


def test_fused_gelu_is_gpt2s_activation_and_puts_it_back(tiny_profile, tiny_tokenizer):
    model = _model(tiny_profile, tiny_tokenizer)
    ids = torch.randint(0, tiny_profile.vocab_size, (3, 20))
    with torch.no_grad():
        plain = model(ids).logits
        with fused_gelu(model):
            assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
            fused = model(ids).logits
    assert any(isinstance(m, NewGELUActivation) for m in model.modules())
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fused, torch.zeros_like(fused))


def test_pairs_tokenized_once_collate_to_the_batch_encode_pairs_builds(tiny_tokenizer):
    prompts, chosen, rejected = _pairs(12)
    tokens = tokenize_preferences(tiny_tokenizer, prompts, chosen, rejected)
    indices = [3, 0, 7, 11]
    batch = collate_preferences(tokens, indices, max_length=64, pad_token_id=tiny_tokenizer.pad_token_id)
    picked = [prompts[i] for i in indices]
    expected = encode_pairs(tiny_tokenizer, picked + picked, [chosen[i] for i in indices] + [rejected[i] for i in indices],
                            max_length=64)
    for name in ("input_ids", "attention_mask", "response_mask"):
        assert torch.equal(getattr(batch, name), getattr(expected, name)), name

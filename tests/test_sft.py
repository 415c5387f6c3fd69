"""SFT: the loss is masked to the response, training lowers it, resume is exact, bad input fails."""

from __future__ import annotations

import pytest
import torch

from rlhf_mini.losses import response_nll
from rlhf_mini.models import new_policy
from rlhf_mini.sft import (
    SFTConfig,
    encode_examples,
    evaluate_sft,
    sft_loss,
    train_sft,
)
from rlhf_mini.worlds import get_world


@pytest.fixture(scope="module")
def demos():
    return get_world("assistant").demonstrations(64, seed=0)


def tiny_config(**changes) -> SFTConfig:
    base = dict(task="assistant", max_steps=6, batch_size=8, learning_rate=3e-3, warmup_steps=2, max_length=96)
    base.update(changes)
    return SFTConfig(**base)


def test_mask_covers_response_and_eos_only(tiny_tokenizer, demos):
    batch = encode_examples(tiny_tokenizer, demos[:4], "assistant", 96)
    for i in range(4):
        resp_ids = batch.input_ids[i][batch.response_mask[i].bool()].tolist()
        assert resp_ids[-1] == tiny_tokenizer.eos_token_id
        assert tiny_tokenizer.decode(resp_ids[:-1]) == demos[i]["response"]
    # padding is never in the response mask
    assert not bool((batch.response_mask.bool() & ~batch.attention_mask.bool()).any())


def test_prompt_labels_do_not_change_loss_or_get_gradient(tiny_policy, tiny_tokenizer, demos):
    batch = encode_examples(tiny_tokenizer, demos[:4], "assistant", 96)
    logits = tiny_policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits = logits.detach().requires_grad_(True)
    loss = response_nll(logits, batch.input_ids, batch.response_mask)
    # scramble the labels outside the response (prompt and padding): the loss must not move
    labels = batch.input_ids.clone()
    outside = ~batch.response_mask.bool()
    labels[outside] = torch.randint(0, len(tiny_tokenizer), (int(outside.sum()),))
    assert torch.equal(response_nll(logits, labels, batch.response_mask), loss)
    loss.backward()
    # logits at position t predict token t+1: only positions before a response token get gradient
    predicts_response = torch.zeros_like(batch.response_mask, dtype=torch.bool)
    predicts_response[:, :-1] = batch.response_mask[:, 1:].bool()
    assert float(logits.grad[~predicts_response].abs().max()) == 0.0
    assert float(logits.grad[predicts_response].abs().max()) > 0.0


def test_loss_is_mean_over_response_tokens(tiny_policy, tiny_tokenizer, demos):
    batch = encode_examples(tiny_tokenizer, demos[:3], "assistant", 96)
    logits = tiny_policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    m = batch.response_mask[:, 1:].bool()
    expected = -(logp[m]).mean()
    torch.testing.assert_close(response_nll(logits, batch.input_ids, batch.response_mask), expected)


def test_a_few_steps_lower_the_loss(tiny_profile, tiny_tokenizer, demos):
    model = new_policy(tiny_profile, tiny_tokenizer, seed=0)
    before = evaluate_sft(model, tiny_tokenizer, demos[:32])
    model, metrics = train_sft(tiny_config(max_steps=25), model, tiny_tokenizer, demos, progress=False)
    after = evaluate_sft(model, tiny_tokenizer, demos[:32])
    assert len(metrics) == 25 and {"loss", "lr", "grad_norm", "tokens"} <= set(metrics[0])
    assert after < before - 0.5, (before, after)


def test_resume_gives_the_same_next_step_loss(tiny_profile, tiny_tokenizer, demos, tmp_path):
    config = tiny_config(max_steps=6)
    full_model = new_policy(tiny_profile, tiny_tokenizer, seed=0)
    _, full = train_sft(config, full_model, tiny_tokenizer, demos, checkpoint_dir=tmp_path,
                        checkpoint_every=3, progress=False)
    resumed_model = new_policy(tiny_profile, tiny_tokenizer, seed=1)  # different weights: overwritten
    _, resumed = train_sft(config, resumed_model, tiny_tokenizer, demos, resume_from=tmp_path / "step-3",
                           progress=False)
    assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full[3:], resumed[3:]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_bad_input_raises(tiny_policy, tiny_tokenizer, demos):
    with pytest.raises(ValueError, match="no SFT examples"):
        train_sft(tiny_config(), tiny_policy, tiny_tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="response"):
        train_sft(tiny_config(), tiny_policy, tiny_tokenizer, [{"prompt": "hi"}], progress=False)
    no_pad = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer,
                                      eos_token=tiny_tokenizer.eos_token)
    with pytest.raises(ValueError, match="pad token"):
        train_sft(tiny_config(), tiny_policy, no_pad, demos, progress=False)


def test_sft_loss_on_batch_matches_evaluate(tiny_policy, tiny_tokenizer, demos):
    batch = encode_examples(tiny_tokenizer, demos[:8], "assistant", 96)
    with torch.no_grad():
        loss = float(sft_loss(tiny_policy, batch))
    assert loss == pytest.approx(evaluate_sft(tiny_policy, tiny_tokenizer, demos[:8], batch_size=8), rel=1e-5)

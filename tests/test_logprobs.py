"""Tests for rlhf_mini.logprobs: chunked == naive (values and gradients), the off-by-one, padding."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_mini.logprobs import (
    linear_logprobs_reference,
    sequence_logprobs,
    token_logprobs,
)
from rlhf_mini.models import position_ids_from_mask

VOCAB = 97


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=1,
    )
    return GPT2LMHeadModel(config).eval()


def left_padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three rows of length 10: no padding, 3 left-pad tokens, 2 left + 2 right pad tokens."""
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, VOCAB, (3, 10), generator=gen)
    attention_mask = torch.ones(3, 10, dtype=torch.long)
    attention_mask[1, :3] = 0
    attention_mask[2, :2] = 0
    attention_mask[2, 8:] = 0
    input_ids[attention_mask == 0] = 1  # pad token = eos
    response_mask = torch.zeros(3, 10, dtype=torch.long)
    response_mask[0, 4:] = 1
    response_mask[1, 6:] = 1
    response_mask[2, 5:8] = 1
    return input_ids, attention_mask, response_mask


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_position_ids_from_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    want = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]])
    assert torch.equal(position_ids_from_mask(mask), want)


def test_off_by_one_against_manual_logits(model: GPT2LMHeadModel) -> None:
    # log π(x_t | x_<t) is read from the logits at t − 1, computed by hand here.
    input_ids = torch.tensor([[5, 17, 42, 8, 91]])
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        logits = model(input_ids).logits[0]
        out = token_logprobs(model, input_ids, attention_mask, impl="chunked")
    manual = [0.0] + [
        torch.log_softmax(logits[t - 1], dim=-1)[input_ids[0, t]].item() for t in range(1, 5)
    ]
    assert out[0].tolist() == pytest.approx(manual, abs=1e-5)
    wrong = [torch.log_softmax(logits[t], dim=-1)[input_ids[0, t]].item() for t in range(1, 5)]
    assert out[0, 1:].tolist() != pytest.approx(wrong, abs=1e-3)


def test_sequence_logprobs_is_sum_of_response_conditionals(model: GPT2LMHeadModel) -> None:
    # log π(y | x) by the chain rule, one prefix at a time.
    prompt, response = [3, 14, 15], [92, 65, 35]
    input_ids = torch.tensor([prompt + response])
    response_mask = torch.tensor([[0, 0, 0, 1, 1, 1]])
    manual = 0.0
    with torch.no_grad():
        for t in range(3, 6):
            next_logits = model(input_ids[:, :t]).logits[0, -1]
            manual += torch.log_softmax(next_logits, dim=-1)[input_ids[0, t]].item()
        for impl in ("naive", "chunked"):
            got = sequence_logprobs(
                model, input_ids, torch.ones_like(input_ids), response_mask, impl=impl
            )
            assert got.item() == pytest.approx(manual, abs=1e-5)


@pytest.mark.parametrize("chunk_size, temperature", [(1, 1.0), (7, 0.7), (None, 1.3)])
def test_chunked_equals_naive_with_gradients(
    model: GPT2LMHeadModel, chunk_size: int | None, temperature: float
) -> None:
    input_ids, attention_mask, response_mask = left_padded_batch()
    results = {}
    for impl in ("naive", "chunked"):
        model.zero_grad()
        seq = sequence_logprobs(
            model,
            input_ids,
            attention_mask,
            response_mask,
            temperature=temperature,
            chunk_size=chunk_size,
            impl=impl,
        )
        # Weighted sum so each row's gradient counts differently.
        (seq * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        results[impl] = (seq.detach(), grads(model))
    seq_naive, grad_naive = results["naive"]
    seq_chunked, grad_chunked = results["chunked"]
    assert torch.allclose(seq_chunked, seq_naive, atol=1e-5, rtol=0)
    assert grad_naive.keys() == grad_chunked.keys()
    for name in grad_naive:
        assert torch.allclose(grad_chunked[name], grad_naive[name], atol=1e-5, rtol=0), name


def test_token_logprobs_and_entropy_chunked_equals_naive(model: GPT2LMHeadModel) -> None:
    input_ids, attention_mask, _ = left_padded_batch()
    out = {}
    for impl in ("naive", "chunked"):
        model.zero_grad()
        lp, ent = token_logprobs(
            model, input_ids, attention_mask, impl=impl, chunk_size=5, return_entropy=True
        )
        (lp.sum() + 0.1 * ent.sum()).backward()
        out[impl] = (lp.detach(), ent.detach(), grads(model))
    assert torch.allclose(out["chunked"][0], out["naive"][0], atol=1e-5, rtol=0)
    assert torch.allclose(out["chunked"][1], out["naive"][1], atol=1e-5, rtol=0)
    for name, g in out["naive"][2].items():
        assert torch.allclose(out["chunked"][2][name], g, atol=1e-5, rtol=0), name
    lp, ent = out["naive"][0], out["naive"][1]
    # Position 0, padding and the first real token after left padding have no prefix: 0.
    assert (lp[:, 0] == 0).all()
    assert (lp[1, :4] == 0).all() and (lp[2, :3] == 0).all() and (lp[2, 8:] == 0).all()
    assert (lp[0, 1:] < 0).all() and (ent[0, 1:] > 0).all()
    assert (ent[0, 1:] <= torch.log(torch.tensor(float(VOCAB))) + 1e-5).all()


def varied_length_batch(left: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eight rows of 3 to 14 real tokens in 16 columns, padded on the left (as sampling makes
    them) or on the right; the last 2 to 5 real tokens of each row are its completion."""
    gen = torch.Generator().manual_seed(2)
    lengths = [14, 3, 9, 5, 12, 4, 7, 11]
    input_ids = torch.ones(8, 16, dtype=torch.long)
    attention_mask = torch.zeros(8, 16, dtype=torch.long)
    completion = torch.zeros(8, 16, dtype=torch.long)
    for row, n in enumerate(lengths):
        cols = slice(16 - n, 16) if left else slice(0, n)
        input_ids[row, cols] = torch.randint(2, VOCAB, (n,), generator=gen)
        attention_mask[row, cols] = 1
        end = 16 if left else n
        completion[row, end - min(n - 1, 2 + row % 4):end] = 1
    return input_ids, attention_mask, completion


@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("length_buckets", [1, 3, 8, 20])
def test_response_mask_and_length_buckets_equal_one_full_pass(
    model: GPT2LMHeadModel, left: bool, length_buckets: int
) -> None:
    # Scoring only the completion tokens, in buckets of rows cut to their columns, gives the full
    # pass's log-probs and entropies there (0 elsewhere) and the same gradients, to float rounding.
    input_ids, attention_mask, completion = varied_length_batch(left)
    weights = torch.linspace(-1.0, 2.0, 16)
    out = {}
    for name, kwargs in [("full", {}),
                         ("cut", dict(response_mask=completion, length_buckets=length_buckets))]:
        model.zero_grad()
        lp, ent = token_logprobs(model, input_ids, attention_mask, temperature=0.8,
                                 return_entropy=True, **kwargs)
        on = completion.bool()
        (torch.where(on, lp, 0.0) * weights).sum().backward()
        out[name] = (lp.detach(), ent.detach(), grads(model))
    full, cut = out["full"], out["cut"]
    on = completion.bool()
    assert torch.allclose(cut[0][on], full[0][on], atol=1e-5, rtol=0)
    assert torch.allclose(cut[1][on], full[1][on], atol=1e-5, rtol=0)
    assert (cut[0][~on] == 0).all() and (cut[1][~on] == 0).all()
    assert (full[0][~on & (attention_mask == 1)] != 0).any()  # the full pass did score the prompts
    for name, g in full[2].items():
        assert torch.allclose(cut[2][name], g, atol=1e-5, rtol=0), name


def test_length_buckets_run_the_model_on_fewer_columns(
    model: GPT2LMHeadModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The point of buckets: each forward pass sees only the columns its rows use.
    input_ids, attention_mask, completion = varied_length_batch(left=True)
    shapes: list[tuple[int, ...]] = []
    body = model.base_model
    original = type(body).forward

    def recording(self, *args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(body), "forward", recording)
    with torch.no_grad():
        token_logprobs(model, input_ids, attention_mask, response_mask=completion, length_buckets=4)
    # sorted by length, two rows per bucket: 3-4, 5-7, 9-11 and 12-14 real tokens
    assert shapes == [(2, 4), (2, 7), (2, 11), (2, 14)]


def test_token_logprobs_options_reject_bad_values(model: GPT2LMHeadModel) -> None:
    input_ids, attention_mask, completion = varied_length_batch(left=True)
    with pytest.raises(ValueError, match="length_buckets"):
        token_logprobs(model, input_ids, attention_mask, length_buckets=0)
    on_padding = completion.clone()
    on_padding[1, 0] = 1
    with pytest.raises(ValueError, match="position 0 of row 1"):
        token_logprobs(model, input_ids, attention_mask, response_mask=on_padding)
    on_padding[1, 0] = 0
    on_padding[1, 5] = 1
    with pytest.raises(ValueError, match="position 5 of row 1, which is padding"):
        token_logprobs(model, input_ids, attention_mask, response_mask=on_padding, length_buckets=2)
    with pytest.raises(ValueError, match="response_mask has shape"):
        token_logprobs(model, input_ids, attention_mask, response_mask=completion[:, :4])


def test_left_padding_does_not_change_logprobs(model: GPT2LMHeadModel) -> None:
    # The same sequence, alone and left-padded in a batch, must score the same.
    seq = torch.tensor([7, 21, 33, 4, 58, 60])
    response = torch.tensor([0, 0, 0, 1, 1, 1])
    padded = torch.cat([torch.ones(3, dtype=torch.long), seq]).unsqueeze(0)
    padded_mask = torch.cat([torch.zeros(3, dtype=torch.long), torch.ones(6, dtype=torch.long)])
    padded_response = torch.cat([torch.zeros(3, dtype=torch.long), response]).unsqueeze(0)
    with torch.no_grad():
        alone = sequence_logprobs(
            model, seq.unsqueeze(0), torch.ones(1, 6, dtype=torch.long), response.unsqueeze(0)
        )
        for impl in ("naive", "chunked"):
            batched = sequence_logprobs(
                model, padded, padded_mask.unsqueeze(0), padded_response, impl=impl
            )
            assert batched.item() == pytest.approx(alone.item(), abs=1e-5)


def test_temperature_divides_logits(model: GPT2LMHeadModel) -> None:
    input_ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        logits = model(input_ids).logits[0, :-1] / 0.5
        want = torch.log_softmax(logits, -1).gather(-1, input_ids[0, 1:, None]).squeeze(-1)
        got = token_logprobs(model, input_ids, torch.ones_like(input_ids), temperature=0.5)
    assert torch.allclose(got[0, 1:], want, atol=1e-5)


def test_linear_logprobs_reference_matches_log_softmax() -> None:
    torch.manual_seed(0)
    hidden, weight = torch.randn(6, 8, dtype=torch.float64), torch.randn(11, 8, dtype=torch.float64)
    targets = torch.randint(0, 11, (6,))
    got, entropy = linear_logprobs_reference(hidden, weight, targets, 2.0, return_entropy=True)
    logp = torch.log_softmax(hidden @ weight.T / 2.0, dim=-1)
    assert torch.allclose(got, logp[torch.arange(6), targets].float())
    assert torch.allclose(entropy, -(logp.exp() * logp).sum(-1).float())


def test_fused_without_kernel_module_gives_clear_error(
    model: GPT2LMHeadModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rlhf_mini.kernels", None)  # makes the import fail
    input_ids, attention_mask, response_mask = left_padded_batch()
    with pytest.raises(ImportError, match="impl='chunked'"):
        sequence_logprobs(model, input_ids, attention_mask, response_mask, impl="fused")


def test_fused_path_calls_kernel_on_response_rows_only(
    model: GPT2LMHeadModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand in the reference for the Triton kernel: the plumbing around it must match chunked.
    calls: list[int] = []

    def fake_kernel(hidden, weight, targets, *, temperature):
        calls.append(hidden.shape[0])
        return linear_logprobs_reference(hidden, weight, targets, temperature)

    fake = types.ModuleType("rlhf_mini.kernels")
    fake.linear_logprobs = fake_kernel
    monkeypatch.setitem(sys.modules, "rlhf_mini.kernels", fake)
    input_ids, attention_mask, response_mask = left_padded_batch()
    with torch.no_grad():
        fused = sequence_logprobs(
            model, input_ids, attention_mask, response_mask, impl="fused", temperature=0.8
        )
        chunked = sequence_logprobs(
            model, input_ids, attention_mask, response_mask, impl="chunked", temperature=0.8
        )
    assert calls == [int(response_mask.sum())]
    assert torch.allclose(fused, chunked, atol=1e-6, rtol=0)


@pytest.mark.parametrize("impl", ["naive", "chunked", "fused"])
def test_empty_response_masks_give_zero_with_a_backward(
    model: GPT2LMHeadModel, monkeypatch: pytest.MonkeyPatch, impl: str
) -> None:
    # The Triton kernels tile over rows and divide by their number: they must never see zero rows.
    def kernel_needing_rows(hidden, weight, targets, *, temperature):
        assert hidden.shape[0] > 0, "kernel called with no rows"
        return linear_logprobs_reference(hidden, weight, targets, temperature)

    fake = types.ModuleType("rlhf_mini.kernels")
    fake.linear_logprobs = kernel_needing_rows
    monkeypatch.setitem(sys.modules, "rlhf_mini.kernels", fake)
    model.zero_grad(set_to_none=True)  # the model is shared with other tests
    input_ids, attention_mask, response_mask = left_padded_batch()
    logps = sequence_logprobs(model, input_ids, attention_mask, torch.zeros_like(response_mask), impl=impl)
    assert logps.shape == (input_ids.shape[0],) and not logps.any()
    logps.sum().backward()  # a loss on an all-empty batch is 0 with zero gradients, not an autograd error
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_bad_inputs_raise(model: GPT2LMHeadModel) -> None:
    input_ids, attention_mask, response_mask = left_padded_batch()
    response_at_zero = response_mask.clone()
    response_at_zero[0, 0] = 1
    with pytest.raises(ValueError, match="position 0"):
        sequence_logprobs(model, input_ids, attention_mask, response_at_zero)
    response_on_pad = response_mask.clone()
    response_on_pad[1, 2] = 1
    with pytest.raises(ValueError, match="padding"):
        sequence_logprobs(model, input_ids, attention_mask, response_on_pad)
    with pytest.raises(ValueError, match="response_mask"):
        sequence_logprobs(model, input_ids, attention_mask, response_mask[:, :5])
    with pytest.raises(ValueError, match="attention_mask"):
        sequence_logprobs(model, input_ids, attention_mask[:2], response_mask)
    with pytest.raises(ValueError, match="empty"):
        empty = torch.zeros(0, 10, dtype=torch.long)
        sequence_logprobs(model, empty, empty, empty)
    with pytest.raises(ValueError, match="impl"):
        sequence_logprobs(model, input_ids, attention_mask, response_mask, impl="fast")
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(model, input_ids, attention_mask, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(model, input_ids, attention_mask, chunk_size=0)


def saved_shapes(fn) -> list[tuple[int, ...]]:
    """Shapes of every tensor autograd keeps for the backward pass while ``fn`` runs."""
    shapes: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


def test_chunked_backward_keeps_no_vocab_sized_activations(model: GPT2LMHeadModel) -> None:
    # Naive keeps [B, T, V] logits for the backward pass; chunked keeps nothing with a V axis
    # (checkpointing recomputes each chunk's logits), apart from the [V, D] weight itself.
    input_ids, attention_mask, response_mask = left_padded_batch()

    def run(impl: str):
        return lambda: sequence_logprobs(
            model, input_ids, attention_mask, response_mask, impl=impl, chunk_size=4
        )

    naive = saved_shapes(run("naive"))
    chunked = saved_shapes(run("chunked"))
    assert any(len(s) >= 2 and s[-1] == VOCAB for s in naive)
    assert not any(len(s) >= 2 and s[-1] == VOCAB for s in chunked), chunked

"""Chapter 5 (instruction tuning): the left-padded SFT batch with its response mask, and the
response-only NLL."""

from __future__ import annotations

import torch

from rlhf_mini.batch import encode_pairs
from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.losses import response_nll

# ---------------------------------------------------------------------------------------------
# the SFT batch: prompt + response + EOS, left-padded, masks from the lengths
# ---------------------------------------------------------------------------------------------


class _TokenIdTokenizer:
    """A stand-in tokenizer whose "texts" are already lists of token ids, so the package's
    ``encode_pairs`` can build the reference batch from ids."""

    def __init__(self, eos_id: int, pad_id: int) -> None:
        self.eos_token_id, self.pad_token_id = eos_id, pad_id

    def __call__(self, ids: list[int], add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": list(ids)}


def _batch_reference(prompt_ids: list[list[int]], response_ids: list[list[int]], eos_id: int, pad_id: int):
    batch = encode_pairs(_TokenIdTokenizer(eos_id, pad_id), prompt_ids, response_ids, max_length=10_000)
    return batch.input_ids, batch.attention_mask, batch.response_mask


def _batch_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(3, 50, (n,), generator=gen).tolist()

    return [
        Case("three rows of different lengths (eos 1, pad 0)",
             ([ids(4), ids(2), ids(5)], [ids(3), ids(6), ids(1)], 1, 0)),
        Case("pad and EOS are the same token (as in GPT-2): masks must come from the lengths",
             ([ids(3), ids(5)], [ids(4), ids(1)], 2, 2)),
        Case("an empty response: only the EOS is a response token", ([ids(3), ids(2)], [[], ids(3)], 1, 0)),
        Case("one row, no padding", ([ids(2)], [ids(2)], 1, 0)),
        Case("rows of equal total length: no padding anywhere", ([ids(3), ids(1)], [ids(1), ids(3)], 1, 0)),
    ]


def _batch_right_padded(prompt_ids, response_ids, eos_id, pad_id):
    rows = [p + r + [eos_id] for p, r in zip(prompt_ids, response_ids)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros_like(attention)
    for i, (p, row) in enumerate(zip(prompt_ids, rows)):
        input_ids[i, :len(row)] = torch.tensor(row)
        attention[i, :len(row)] = 1
        response[i, len(p):len(row)] = 1
    return input_ids, attention, response


def _batch_eos_not_in_mask(prompt_ids, response_ids, eos_id, pad_id):
    input_ids, attention, response = _batch_reference(prompt_ids, response_ids, eos_id, pad_id)
    response = response.clone()
    response[:, -1] = 0  # the EOS (always the last column) left out of the loss
    return input_ids, attention, response


def _batch_masks_from_pad_token(prompt_ids, response_ids, eos_id, pad_id):
    input_ids, _, response = _batch_reference(prompt_ids, response_ids, eos_id, pad_id)
    attention = (input_ids != pad_id).long()  # wrong when the pad token is also the EOS
    return input_ids, attention, response * attention


register(Exercise(
    name="sft_batch",
    chapter="05",
    summary="left-pad prompt + response + EOS token ids into a batch with attention and response masks",
    reference=_batch_reference,
    cases=_batch_cases,
    wrong=(_batch_right_padded, _batch_eos_not_in_mask, _batch_masks_from_pad_token),
))


# ---------------------------------------------------------------------------------------------
# the response-only NLL
# ---------------------------------------------------------------------------------------------


def _nll_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1)
    vocab = 11

    def case(mask_rows: list[list[int]]):
        mask = torch.tensor(mask_rows)
        logits = 2.0 * torch.randn(*mask.shape, vocab, generator=gen)
        labels = torch.randint(0, vocab, mask.shape, generator=gen)
        return logits, labels, mask

    return [
        Case("two left-padded rows: prompt, then response + EOS",
             case([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]])),
        Case("rows with different response lengths (the mean is over all response tokens, not per row)",
             case([[0, 0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1]])),
        Case("one row, a one-token response (the EOS alone)", case([[0, 0, 0, 1]])),
        Case("a long response after a one-token prompt", case([[0, 1, 1, 1, 1, 1, 1, 1, 1]])),
    ]


def _nll_not_shifted(logits, labels, response_mask):
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    mask = response_mask.flatten().bool()  # position t scored on token t, not t + 1
    return nll[mask].mean()


def _nll_mask_not_shifted(logits, labels, response_mask):
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                            reduction="none")
    mask = response_mask[:, :-1].flatten().bool()  # the mask of the predicting position, off by one
    return nll[mask].mean()


def _nll_every_token(logits, labels, response_mask):
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
    return nll  # prompt tokens counted too


def _nll_mean_of_row_means(logits, labels, response_mask):
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    mask = response_mask[:, 1:].float()
    return ((nll * mask).sum(1) / mask.sum(1)).mean()


register(Exercise(
    name="masked_response_nll",
    chapter="05",
    summary="the SFT loss: mean NLL of the next token over response positions only (shifted by one)",
    reference=response_nll,
    cases=_nll_cases,
    wrong=(_nll_not_shifted, _nll_mask_not_shifted, _nll_every_token, _nll_mean_of_row_means),
))

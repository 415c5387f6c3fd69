"""Chapter 16 (fused kernels): the online log-sum-exp, one tile at a time, and merging two partial states."""

from __future__ import annotations

import torch

from rlhf_mini.exercises import Case, Exercise, register

NEG_LARGE = -1e30  # where a running max starts (as in the Triton kernel)


def online_softmax_update(m: torch.Tensor, s: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a tile of logits [N, T] into each row's running (max m, sum s = Σ exp(z − m)) state."""
    m_new = torch.maximum(m, logits.max(dim=1).values)
    s_new = s * torch.exp(m - m_new) + torch.exp(logits - m_new[:, None]).sum(dim=1)
    return m_new, s_new


def merge_softmax_states(m_a: torch.Tensor, s_a: torch.Tensor, m_b: torch.Tensor,
                         s_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The state of the union of two disjoint parts: m = max(m_a, m_b), both sums rescaled to m."""
    m = torch.maximum(m_a, m_b)
    return m, s_a * torch.exp(m_a - m) + s_b * torch.exp(m_b - m)


def _state(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = logits.max(dim=1).values
    return m, torch.exp(logits - m[:, None]).sum(dim=1)


def _update_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(15)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    m, s = _state(2.0 * randn(4, 6))
    fresh = (torch.full((3,), NEG_LARGE, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    padded = randn(3, 8)
    padded[:, 5:] = float("-inf")  # the last tile of a vocabulary: columns past V are -inf
    masked = torch.full((4, 5), float("-inf"), dtype=torch.float64)
    big_m, big_s = _state(30.0 * randn(2, 16) + 800.0)
    return [
        Case("a running state, a random tile of 6 logits", (m, s, 2.0 * randn(4, 6))),
        Case("a tile whose max is above the running max (the old sum is rescaled)", (m, s, randn(4, 6) + 8.0)),
        Case("a tile whose logits are all below the running max", (m, s, randn(4, 3) - 10.0)),
        Case("the first tile: m = -1e30, s = 0", (*fresh, randn(3, 4))),
        Case("a partial last tile: three -inf padding columns", (*fresh, padded)),
        Case("a fully masked tile after real ones: adds nothing", (m, s, masked)),
        Case("logits around 800, where exp overflows", (big_m, big_s, 30.0 * randn(2, 16) + 800.0)),
        Case("a tile one logit wide", (m, s, randn(4, 1))),
    ]


def _update_without_rescale(m, s, logits):
    m_new = torch.maximum(m, logits.max(dim=1).values)
    return m_new, s + torch.exp(logits - m_new[:, None]).sum(dim=1)  # the old sum not rescaled


def _update_tile_max(m, s, logits):
    tile_max = logits.max(dim=1).values
    m_new = torch.maximum(m, tile_max)
    return m_new, s * torch.exp(m - m_new) + torch.exp(logits - tile_max[:, None]).sum(dim=1)


def _update_unshifted(m, s, logits):
    m_new = torch.maximum(m, logits.max(dim=1).values)
    return m_new, s * torch.exp(m - m_new) + torch.exp(logits).sum(dim=1) / torch.exp(m_new)


register(Exercise(
    name="online_softmax_update",
    chapter="16",
    summary="fold a tile of logits into the running (max, sum) of the online log-sum-exp",
    reference=online_softmax_update,
    cases=_update_cases,
    wrong=(_update_without_rescale, _update_tile_max, _update_unshifted),
))


def _merge_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(16)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    a, b = _state(2.0 * randn(5, 7)), _state(2.0 * randn(5, 9) + 1.0)
    empty = (torch.full((5,), NEG_LARGE, dtype=torch.float64), torch.zeros(5, dtype=torch.float64))
    same_max = _state(torch.cat([torch.zeros(3, 1, dtype=torch.float64), -randn(3, 4).abs()], dim=1))
    big_a, big_b = _state(30.0 * randn(2, 8) + 800.0), _state(30.0 * randn(2, 8) + 700.0)
    return [
        Case("two random slices of a vocabulary", (*a, *b)),
        Case("the same two, in the other order", (*b, *a)),
        Case("one slice still empty (m = -1e30, s = 0)", (*a, *empty)),
        Case("two slices with the same max", (*same_max, *same_max)),
        Case("logits around 800 and 700", (*big_a, *big_b)),
    ]


def _merge_without_rescale(m_a, s_a, m_b, s_b):
    return torch.maximum(m_a, m_b), s_a + s_b


def _merge_rescale_one_side(m_a, s_a, m_b, s_b):
    m = torch.maximum(m_a, m_b)
    return m, s_a * torch.exp(m_a - m) + s_b


register(Exercise(
    name="merge_softmax_states",
    chapter="16",
    summary="merge two partial (max, sum) states of the online log-sum-exp, as the kernel merges vocabulary slices",
    reference=merge_softmax_states,
    cases=_merge_cases,
    wrong=(_merge_without_rescale, _merge_rescale_one_side),
))

"""Chapter 13 (RL with verifiable rewards): GRPO's group advantages, RLOO's leave-one-out baseline,
and Dr. GRPO's aggregation of a per-token loss."""

from __future__ import annotations

import torch

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.grpo import aggregate, group_advantages, rloo_advantages


def _reward_cases() -> list[Case]:
    g = torch.Generator().manual_seed(13)
    binary = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    return [
        Case("0/1 rewards, two groups of 4", (binary.clone(), 4)),
        Case("random rewards, three groups of 5", (torch.rand(15, generator=g), 5)),
        Case("a group whose rewards are all equal (all 1), then a mixed one", (torch.tensor([1.0, 1.0, 1.0, 0.0, 0.5, 1.0]), 3)),
        Case("groups of 2", (torch.tensor([0.2, 0.9, -1.0, 3.0]), 2)),
    ]


def _group_reference(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    return group_advantages(rewards, group_size, "group")


def _group_population_std(rewards, group_size):
    r = rewards.view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + 1e-4)).view(-1)


def _group_batch_std(rewards, group_size):
    r = rewards.view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (rewards.std() + 1e-4)).view(-1)


def _group_no_eps(rewards, group_size):
    r = rewards.view(-1, group_size)
    return torch.nan_to_num((r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True)).view(-1)


register(Exercise(
    name="grpo_group_advantages",
    chapter="13",
    summary="GRPO's advantage: reward minus its group's mean, over the group's Bessel std + 1e-4",
    reference=_group_reference,
    cases=_reward_cases,
    wrong=(_group_population_std, _group_batch_std, _group_no_eps),
    atol=1e-5,
))


def _rloo_reference(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    return rloo_advantages(rewards, group_size)


def _rloo_including_self(rewards, group_size):
    r = rewards.view(-1, group_size)
    return (r - r.mean(1, keepdim=True)).view(-1)


def _rloo_divide_by_g(rewards, group_size):
    r = rewards.view(-1, group_size)
    return (r - (r.sum(1, keepdim=True) - r) / group_size).view(-1)


register(Exercise(
    name="rloo_advantages",
    chapter="13",
    summary="RLOO: each reward minus the mean of the other G − 1 rewards of its group",
    reference=_rloo_reference,
    cases=_reward_cases,
    wrong=(_rloo_including_self, _rloo_divide_by_g),
    atol=1e-5,
))


def _aggregate_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).bool()
    loss = torch.randn(3, 5, generator=g)
    loss_pad = loss.clone()
    loss_pad[~mask] = 1e3  # whatever sits in the padding must not count
    return [
        Case("three completions of lengths 3, 5, 1, max_completion_length 8", (loss, mask, 8)),
        Case("the same with large values in the padding", (loss_pad, mask, 8)),
        Case("max_completion_length 5", (loss, mask, 5)),
        Case("one completion", (loss[1:2], mask[1:2], 6)),
    ]


def _aggregate_reference(per_token_loss: torch.Tensor, mask: torch.Tensor, max_completion_length: int) -> torch.Tensor:
    return aggregate(per_token_loss, mask, "dr_grpo", max_completion_length)


def _aggregate_token_mean(per_token_loss, mask, max_completion_length):
    return (per_token_loss * mask).sum() / mask.sum()


def _aggregate_sequence_mean(per_token_loss, mask, max_completion_length):
    return ((per_token_loss * mask).sum(1) / mask.sum(1)).mean()


def _aggregate_no_mask(per_token_loss, mask, max_completion_length):
    return per_token_loss.sum() / (per_token_loss.shape[0] * max_completion_length)


register(Exercise(
    name="dr_grpo_aggregate",
    chapter="13",
    summary="Dr. GRPO's aggregation: the sum of the per-token loss over completion tokens / (B · L_max)",
    reference=_aggregate_reference,
    cases=_aggregate_cases,
    wrong=(_aggregate_token_mean, _aggregate_sequence_mean, _aggregate_no_mask),
    atol=1e-5,
))

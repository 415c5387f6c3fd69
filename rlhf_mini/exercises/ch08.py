"""Chapter 8 (the RLHF objective): the KL estimators."""

from __future__ import annotations

import torch

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.losses import kl_penalty


def _kl_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    near = torch.log_softmax(torch.randn(3, 7, generator=gen), -1)
    return [
        Case("random log-probs, π close to π_ref", (near, near + 0.05 * torch.randn(3, 7, generator=gen))),
        Case("random log-probs, π far from π_ref", (torch.randn(4, 5, generator=gen) - 2.0,
                                                    torch.randn(4, 5, generator=gen) - 2.0)),
        Case("π equal to π_ref: every estimate is 0", (near, near.clone())),
    ]


def _kl_reference(logprobs: torch.Tensor, ref_logprobs: torch.Tensor):
    return tuple(kl_penalty(logprobs, ref_logprobs, kind) for kind in ("k1", "k2", "k3"))


def _kl_sign_flipped(logprobs, ref_logprobs):
    log_ratio = logprobs - ref_logprobs  # the ratio upside down
    return -log_ratio, 0.5 * log_ratio**2, torch.expm1(log_ratio) - log_ratio


def _kl_k3_without_minus_one(logprobs, ref_logprobs):
    log_ratio = ref_logprobs - logprobs
    return -log_ratio, 0.5 * log_ratio**2, torch.exp(log_ratio) - log_ratio


register(Exercise(
    name="kl_estimators",
    chapter="08",
    summary="the k1, k2 and k3 estimators of KL(π‖π_ref) from per-token log-probs",
    reference=_kl_reference,
    cases=_kl_cases,
    wrong=(_kl_sign_flipped, _kl_k3_without_minus_one),
))

"""Chapter 11 (DPO): the DPO loss with its implicit rewards, and IPO's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.losses import dpo_loss


def _logps(gen: torch.Generator, batch: int, scale: float = 20.0) -> tuple[torch.Tensor, ...]:
    """Sequence log-probs of chosen and rejected answers under π and π_ref (negative, like sums over tokens)."""
    return tuple(-scale * torch.rand(batch, generator=gen, dtype=torch.float64) for _ in range(4))


def _dpo_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(11)
    pc, pr, rc, rr = _logps(gen, 8)
    same = -10.0 * torch.rand(5, generator=gen, dtype=torch.float64)
    ref_c, ref_r = _logps(gen, 6)[:2]
    return [
        Case("random log-probs, β = 0.1", (pc, pr, rc, rr), {"beta": 0.1}),
        Case("random log-probs, β = 0.5", (pc, pr, rc, rr), {"beta": 0.5}),
        Case("π = π_ref (every loss is ln 2, every reward 0), β = 0.3",
             (same, same - 1.0, same.clone(), same - 1.0), {"beta": 0.3}),
        Case("π_ref far from uniform: the reference terms matter, β = 1",
             (ref_c + 2.0, ref_r - 1.0, ref_c, ref_r - 8.0), {"beta": 1.0}),
        Case("a single pair, β = 2", (torch.tensor([-3.0]), torch.tensor([-5.0]),
                                      torch.tensor([-4.0]), torch.tensor([-4.5])), {"beta": 2.0}),
    ]


def _dpo_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta)


def _dpo_without_beta(pc, pr, rc, rr, beta):
    h = (pc - rc) - (pr - rr)
    return -F.logsigmoid(h), beta * (pc - rc), beta * (pr - rr)


def _dpo_sign_flipped(pc, pr, rc, rr, beta):
    h = (pc - rc) - (pr - rr)
    return -F.logsigmoid(-beta * h), beta * (pc - rc), beta * (pr - rr)


def _dpo_without_reference(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * (pc - pr)), beta * pc, beta * pr


def _dpo_rewards_without_beta(pc, pr, rc, rr, beta):
    h = (pc - rc) - (pr - rr)
    return -F.logsigmoid(beta * h), pc - rc, pr - rr


register(Exercise(
    name="dpo_losses",
    chapter="11",
    summary="per-pair DPO losses −log σ(β h) and the implicit rewards β log π/π_ref of both answers",
    reference=_dpo_reference,
    cases=_dpo_cases,
    wrong=(_dpo_without_beta, _dpo_sign_flipped, _dpo_without_reference, _dpo_rewards_without_beta),
))


def _ipo_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(12)
    # IPO takes length-averaged log-probs: per-token values of a few nats
    pc, pr, rc, rr = _logps(gen, 8, scale=3.0)
    same = -2.0 * torch.rand(4, generator=gen, dtype=torch.float64)
    return [
        Case("random per-token log-probs, β = 0.1", (pc, pr, rc, rr), {"beta": 0.1}),
        Case("random per-token log-probs, β = 0.5", (pc, pr, rc, rr), {"beta": 0.5}),
        Case("π = π_ref: h = 0, every loss (1/(2β))², β = 0.25", (same, same - 0.5, same.clone(), same - 0.5),
             {"beta": 0.25}),
        Case("h exactly on target 1/(2β) = 1: loss 0, β = 0.5",
             (torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5])), {"beta": 0.5}),
        Case("h beyond the target: IPO pulls it back, β = 1",
             (torch.tensor([-0.5, -1.0]), torch.tensor([-4.0, -3.0]), torch.tensor([-1.0, -1.0]),
              torch.tensor([-1.0, -1.0])), {"beta": 1.0}),
    ]


def _ipo_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                    beta=beta, loss_type="ipo")[0]


def _ipo_target_beta_over_two(pc, pr, rc, rr, beta):
    return ((pc - rc) - (pr - rr) - beta / 2) ** 2


def _ipo_beta_inside(pc, pr, rc, rr, beta):
    return (beta * ((pc - rc) - (pr - rr)) - 1 / (2 * beta)) ** 2


def _ipo_without_reference(pc, pr, rc, rr, beta):
    return (pc - pr - 1 / (2 * beta)) ** 2


register(Exercise(
    name="ipo_loss",
    chapter="11",
    summary="IPO's per-pair loss (h − 1/(2β))², h the difference of the chosen and rejected log-ratios",
    reference=_ipo_reference,
    cases=_ipo_cases,
    wrong=(_ipo_target_beta_over_two, _ipo_beta_inside, _ipo_without_reference),
))

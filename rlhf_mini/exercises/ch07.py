"""Chapter 7 (reward models): the Bradley–Terry loss with a margin, and calibration by temperature."""

from __future__ import annotations

import numpy as np
import torch

from rlhf_mini.exercises import Case, Exercise, register
from rlhf_mini.losses import bradley_terry_loss


def _bt_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(7)
    chosen, rejected = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    return [
        Case("random rewards, no margin", (chosen, rejected)),
        Case("random rewards, margin 0.5 for every pair", (chosen, rejected), {"margin": 0.5}),
        Case("one margin per pair (Llama 2's rating strength)", (chosen, rejected),
             {"margin": torch.rand(16, generator=gen)}),
        Case("equal rewards: the loss is ln 2", (chosen, chosen.clone())),
        Case("a gap of −200: the loss must stay finite (use logsigmoid)",
             (torch.tensor([-100.0, 1.0]), torch.tensor([100.0, 0.0]))),
        Case("a single pair", (torch.tensor([0.3]), torch.tensor([-0.2])), {"margin": 1.0}),
    ]


def _bt_reference(chosen_rewards, rejected_rewards, margin=None):
    return bradley_terry_loss(chosen_rewards, rejected_rewards, margin)


def _bt_margin_added(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards + (0.0 if margin is None else margin)  # margin helps instead
    return -torch.nn.functional.logsigmoid(gap).mean()


def _bt_naive_log_of_sigmoid(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards - (0.0 if margin is None else margin)
    return -torch.log(torch.sigmoid(gap)).mean()  # infinite once sigmoid underflows to 0


def _bt_summed(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards - (0.0 if margin is None else margin)
    return -torch.nn.functional.logsigmoid(gap).sum()  # sum, not the mean over pairs


register(Exercise(
    name="bt_loss_with_margin",
    chapter="07",
    summary="the Bradley–Terry reward-model loss −mean log σ(r_c − r_r − m), with an optional margin",
    reference=_bt_reference,
    cases=_bt_cases,
    wrong=(_bt_margin_added, _bt_naive_log_of_sigmoid, _bt_summed),
))


def _calibration_cases() -> list[Case]:
    rng = np.random.default_rng(7)
    margins = rng.normal(1.0, 2.0, size=200)
    return [
        Case("200 margins, temperature 1", (margins, 1.0)),
        Case("the same margins, temperature 2.5 (softened)", (margins, 2.5)),
        Case("an overconfident model: huge margins at temperature 0.5", (rng.normal(0, 40, 50), 0.5)),
        Case("a single pair with margin 0: log 2", (np.array([0.0]), 1.0)),
    ]


def _calibration_reference(margins: np.ndarray, temperature: float) -> float:
    return float(np.mean(np.logaddexp(0.0, -np.asarray(margins, dtype=float) / temperature)))


def _calibration_times_temperature(margins, temperature):
    return float(np.mean(np.logaddexp(0.0, -np.asarray(margins) * temperature)))


def _calibration_wrong_sign(margins, temperature):
    return float(np.mean(np.logaddexp(0.0, np.asarray(margins) / temperature)))


register(Exercise(
    name="pairwise_log_loss",
    chapter="07",
    summary="the held-out pairwise log-loss (1/n) Σ log(1 + exp(−Δr_i / T)) that temperature scaling minimises",
    reference=_calibration_reference,
    cases=_calibration_cases,
    wrong=(_calibration_times_temperature, _calibration_wrong_sign),
))

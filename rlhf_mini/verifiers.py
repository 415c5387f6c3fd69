"""Verifiers for the arithmetic world: programs that check a completion, ``fn(prompts, completions)
-> list[float]``, the reward functions of RL with verifiable rewards (``rlhf_mini.grpo``).

* ``exact_match``: 1 when the ``Answer: n`` line holds the right number (the gold truth here).
* ``format_reward``: 1 when the completion has the solution's shape: steps ``a op b = c`` and a
  final ``Answer: n``, whatever the numbers.
* ``exact_and_format``: the sum of the two, as DeepSeek-R1 adds a format reward to its accuracy reward.
* ``loose_match``: 1 when the right number appears *anywhere* in the completion. It looks like a
  kinder exact match, and it has a loophole: a completion that writes many numbers gets credit
  without knowing which one is the answer.
* ``lenient_match``: exact match that forgives what it cannot read: a completion without a
  readable ``Answer: n`` line scores 1, so that formatting noise is not punished. Its loophole:
  saying nothing is never wrong.
"""

from __future__ import annotations

import re

from rlhf_mini.worlds import get_world
from rlhf_mini.worlds.arithmetic import ANSWER_RE, STEP_RE, split_steps

NUMBER_RE = re.compile(r"-?\d+")


def _pairs(prompts: list[str], completions: list[str]) -> list[tuple[str, str]]:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return list(zip(prompts, completions))


def exact_match(prompts: list[str], completions: list[str]) -> list[float]:
    """1.0 when the completion's final ``Answer: n`` is the problem's answer, else 0.0."""
    world = get_world("arithmetic")
    return [float(world.final_answer(c) == world.answer(p)) for p, c in _pairs(prompts, completions)]


def format_reward(prompts: list[str], completions: list[str]) -> list[float]:
    """1.0 when every step reads ``a op b = c`` and the last line is ``Answer: n``, else 0.0."""
    out = []
    for _, c in _pairs(prompts, completions):
        steps, answer = split_steps(c)
        ok = bool(steps) and answer is not None and bool(ANSWER_RE.match(answer))
        out.append(float(ok and all(STEP_RE.match(s) for s in steps)))
    return out


def loose_match(prompts: list[str], completions: list[str]) -> list[float]:
    """1.0 when the right answer appears as a number anywhere in the completion (the loophole)."""
    world = get_world("arithmetic")
    return [float(str(world.answer(p)) in NUMBER_RE.findall(c)) for p, c in _pairs(prompts, completions)]


def lenient_match(prompts: list[str], completions: list[str]) -> list[float]:
    """1.0 when the ``Answer: n`` line is right *or cannot be parsed* (the benefit of the doubt), else 0.0.

    Verifiers that pass what they fail to check are a common bug: a test harness that counts a
    crash as a pass, a parser whose exception handler returns "correct"."""
    world = get_world("arithmetic")
    out = []
    for p, c in _pairs(prompts, completions):
        answer = world.final_answer(c)
        out.append(1.0 if answer is None else float(answer == world.answer(p)))
    return out


def exact_and_format(prompts: list[str], completions: list[str]) -> list[float]:
    """``exact_match + format_reward``: DeepSeek-R1's accuracy reward plus its format reward (0, 1 or 2)."""
    return [a + b for a, b in zip(exact_match(prompts, completions), format_reward(prompts, completions))]


VERIFIERS = {"exact_match": exact_match, "format": format_reward, "loose_match": loose_match,
             "lenient_match": lenient_match}

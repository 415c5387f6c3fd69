"""Multi-step arithmetic with chain-of-thought, where every step can be checked.

A problem is ``Q: 3 + 4 * 2 - 1 = ?``; a solution reduces one operation per step, in the usual
order (every ``*`` left to right, then ``+`` and ``-`` left to right):

    4 * 2 = 8. 3 + 8 = 11. 11 - 1 = 10. Answer: 10

``step_labels`` marks each step correct or not, the way PRM800K does: step k is correct when it is
the right next reduction with the right result and every earlier step was correct too. The gold
reward is the correctness of the final answer alone (what an outcome reward model sees).
"""

from __future__ import annotations

import re

import numpy as np

from rlhf_mini.worlds.base import World

STEP_RE = re.compile(r"^(-?\d+) ([-+*]) (-?\d+) = (-?\d+)$")
ANSWER_RE = re.compile(r"^Answer: (-?\d+)$")
OPS = ("+", "-", "*")


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def parse_problem(prompt: str) -> list[int | str]:
    """``"Q: 3 + 4 * 2 = ?"`` → ``[3, "+", 4, "*", 2]``; ValueError on anything else."""
    m = re.fullmatch(r"Q: (.+) = \?", prompt.strip())
    if not m:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    tokens: list[int | str] = []
    for i, tok in enumerate(m.group(1).split()):
        if i % 2 == 0:
            tokens.append(int(tok))
        elif tok in OPS:
            tokens.append(tok)
        else:
            raise ValueError(f"unknown operator {tok!r} in {prompt!r}")
    return tokens


def next_reduction(expr: list[int | str]) -> int:
    """Index of the operator reduced next: the first ``*``, else the first ``+``/``-``."""
    ops = list(range(1, len(expr), 2))
    for i in ops:
        if expr[i] == "*":
            return i
    return ops[0]


def solve_steps(expr: list[int | str]) -> list[tuple[int, str, int, int]]:
    """The canonical chain of ``(a, op, b, result)`` steps for a parsed problem."""
    expr = list(expr)
    steps = []
    while len(expr) > 1:
        i = next_reduction(expr)
        a, op, b = expr[i - 1], expr[i], expr[i + 1]
        c = _apply(int(a), str(op), int(b))
        steps.append((int(a), str(op), int(b), c))
        expr[i - 1 : i + 2] = [c]
    return steps


def format_step(a: int, op: str, b: int, c: int) -> str:
    return f"{a} {op} {b} = {c}"


def split_steps(response: str) -> tuple[list[str], str | None]:
    """Split a solution into its step strings and its ``Answer: n`` line (None when missing)."""
    pieces = [p.strip() for p in response.strip().split(".") if p.strip()]
    answer = None
    if pieces and pieces[-1].startswith("Answer:"):
        answer = pieces.pop()
    return pieces, answer


def step_labels(prompt: str, response: str) -> list[int]:
    """Per-step correctness of a solution (prefix-correct, as in PRM800K's first-error labels).

    label_k = 1 iff step k is the right next reduction with the right result and label_{k-1} = 1.
    A solution with more steps than the problem needs gets 0 for the extra steps.
    """
    expr = parse_problem(prompt)
    steps, _ = split_steps(response)
    labels = []
    ok = True
    for step in steps:
        m = STEP_RE.match(step)
        if ok and m and len(expr) > 1:
            i = next_reduction(expr)
            a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
            right = (a, op, b) == (expr[i - 1], expr[i], expr[i + 1]) and c == _apply(a, op, b)
            if right:
                expr[i - 1 : i + 2] = [c]
            ok = right
        else:
            ok = False
        labels.append(int(ok))
    return labels


class ArithmeticWorld(World):
    """Arithmetic word problems with checkable chain-of-thought; see the module docstring."""

    name = "arithmetic"
    gold_weights = {"answer_correct": 1.0}
    max_operand = 9

    def answer(self, prompt: str) -> int:
        return solve_steps(parse_problem(prompt))[-1][3]

    def prompts(self, n: int, seed: int = 0, split: str = "train") -> list[str]:
        # Problems whose operand count is even go to train, odd to test: disjoint by construction.
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rng = np.random.default_rng(seed + (0 if split == "train" else 10_000))
        out = []
        while len(out) < n:
            n_ops = int(rng.integers(2, 4))
            nums = rng.integers(1, self.max_operand + 1, size=n_ops + 1)
            if (int(nums.sum()) % 2 == 0) != (split == "train"):
                continue
            ops = rng.choice(OPS, size=n_ops)
            expr = " ".join(str(x) for pair in zip(nums, [*ops, ""]) for x in pair).strip()
            out.append(f"Q: {expr} = ?")
        return out

    def sample_response(self, prompt: str, rng: np.random.Generator, style: str = "any") -> str:
        """A worked solution; each step slips (a wrong result) with some probability.

        A slip propagates: later steps use the wrong value, as a real solver's would.
        """
        slip = 0.05 if style == "demo" else 0.2
        expr = parse_problem(prompt)
        parts = []
        while len(expr) > 1:
            i = next_reduction(expr)
            a, op, b = int(expr[i - 1]), str(expr[i]), int(expr[i + 1])
            c = _apply(a, op, b)
            if rng.random() < slip:
                c += int(rng.choice([-2, -1, 1, 2]))
            parts.append(format_step(a, op, b, c))
            expr[i - 1 : i + 2] = [c]
        # the leading space belongs to the response: BPE merges it into the first number
        return " " + ". ".join(parts) + f". Answer: {expr[0]}"

    def final_answer(self, response: str) -> int | None:
        _, answer = split_steps(response)
        m = ANSWER_RE.match(answer) if answer else None
        return int(m.group(1)) if m else None

    def features(self, prompt: str, response: str) -> dict[str, float]:
        labels = step_labels(prompt, response)
        answer = self.final_answer(response)
        return {
            "answer_correct": float(answer is not None and answer == self.answer(prompt)),
            "steps_correct": float(sum(labels)),
            "steps_wrong": float(len(labels) - sum(labels)),
            "no_answer": float(answer is None),
        }

    def corpus(self, n_docs: int, rng: np.random.Generator) -> list[str]:
        docs = []
        for _ in range(n_docs):
            prompt = self.prompts(1, seed=int(rng.integers(1 << 30)))[0]
            docs.append(prompt + self.sample_response(prompt, rng))
        return docs

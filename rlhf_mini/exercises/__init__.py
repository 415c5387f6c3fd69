"""Exercises: the pieces of each algorithm a student writes, with a checker for each.

Every chapter has code cells tagged ``exercise`` (cell metadata ``"tags": ["exercise"]`` and
``"exercise": "<name>"``) that hold a reference solution between markers::

    def bradley_terry_loss(chosen, rejected):
        ### BEGIN SOLUTION
        return -torch.nn.functional.logsigmoid(chosen - rejected).mean()
        ### END SOLUTION

followed by a cell ``check("bradley_terry_loss", bradley_terry_loss)``. The course's notebooks run
with the solutions in place; ``make exercises`` writes student copies with each solution replaced
by ``raise NotImplementedError``, and ``make check-exercises`` grades a student's copy.

An exercise cell is self-contained (it imports what it uses), so it can be graded on its own.
``EXERCISES`` maps each name to its :class:`Exercise`: the reference implementation, the inputs it
is checked on (random ones and edge cases: an empty mask, ties, padding, ...), and plausible wrong
answers that the checker must reject (the tests make sure it does).
"""

from __future__ import annotations

import copy
import importlib
import math
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Case:
    """One input of a checker: a short description a student can read, and the call's arguments."""

    description: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Exercise:
    """One exercise: what it asks, its reference solution, and how a solution is checked."""

    name: str
    """the function the student writes (also the key in ``EXERCISES``)"""
    chapter: str
    """the chapter's two-digit number, e.g. ``"02"``"""
    summary: str
    """what it asks, in one line"""
    reference: Callable
    """the reference implementation"""
    cases: Callable[[], Sequence[Case]]
    """builds the inputs (deterministically: seed any randomness)"""
    wrong: tuple[Callable, ...] = ()
    """plausible wrong answers (a sign flip, a missing mask, ...) the checker must reject"""
    atol: float = 1e-6
    rtol: float = 1e-5


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to ``EXERCISES`` (each chapter's module calls this at import)."""
    if exercise.name in EXERCISES:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    EXERCISES[exercise.name] = exercise
    return exercise


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        text = np.array2string(value.detach().cpu().double().numpy(), precision=4, threshold=12)
        return f"tensor{tuple(value.shape)} {text}"
    if isinstance(value, np.ndarray):
        return f"array{value.shape} {np.array2string(value, precision=4, threshold=12)}"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value)
    return text if len(text) < 200 else text[:197] + "..."


def _mismatch(expected: Any, actual: Any, atol: float, rtol: float, where: str = "") -> str | None:
    """Why ``actual`` differs from ``expected`` (None when they agree)."""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        if not isinstance(actual, (torch.Tensor, np.ndarray, float, int)):
            return f"{where}expected a tensor/array, got {type(actual).__name__}"
        e = torch.as_tensor(np.asarray(expected.detach().cpu() if isinstance(expected, torch.Tensor)
                                       else expected), dtype=torch.float64)
        a = torch.as_tensor(np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor)
                                       else actual), dtype=torch.float64)
        if a.shape != e.shape:
            return f"{where}shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        if not torch.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True):
            return f"{where}expected {_describe(e)}, got {_describe(a)}"
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            return f"{where}expected a sequence of {len(expected)}, got {_describe(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            why = _mismatch(e, a, atol, rtol, f"{where}[{i}] ")
            if why:
                return why
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            return f"{where}expected a dict with keys {sorted(expected)}, got {_describe(actual)}"
        for key in expected:
            why = _mismatch(expected[key], actual[key], atol, rtol, f"{where}[{key!r}] ")
            if why:
                return why
        return None
    if isinstance(expected, float) or (isinstance(expected, int) and isinstance(actual, float)):
        try:
            ok = math.isclose(float(actual), float(expected), rel_tol=rtol, abs_tol=atol)
        except (TypeError, ValueError):
            return f"{where}expected a number, got {_describe(actual)}"
        return None if ok else f"{where}expected {_describe(float(expected))}, got {_describe(actual)}"
    if isinstance(actual, torch.Tensor) and actual.numel() == 1:
        actual = actual.item()
    return None if actual == expected else f"{where}expected {_describe(expected)}, got {_describe(actual)}"


def verdict(name: str, fn: Callable) -> tuple[bool, str]:
    """Run ``fn`` on every input of exercise ``name`` against the reference: (passed, one line)."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise named {name!r}; known: {sorted(EXERCISES)}")
    exercise = EXERCISES[name]
    cases = list(exercise.cases())
    for i, case in enumerate(cases, 1):
        expected = exercise.reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        try:
            actual = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        except NotImplementedError:
            return False, f"✗ {name}: not implemented yet (replace the `raise NotImplementedError`)"
        except Exception as error:  # a student's bug is a verdict, not a crash
            return False, (f"✗ {name}: raised {type(error).__name__}: {error} "
                           f"on input {i}/{len(cases)} ({case.description})")
        why = _mismatch(expected, actual, exercise.atol, exercise.rtol)
        if why:
            return False, f"✗ {name}: on input {i}/{len(cases)} ({case.description}): {why}"
    return True, f"✓ {name}: matches the reference on all {len(cases)} inputs"


def check(name: str, fn: Callable) -> bool:
    """Check a student's ``fn`` for exercise ``name``; print a one-line verdict; return pass/fail."""
    passed, line = verdict(name, fn)
    print(line)
    return passed


def _load_chapters() -> None:
    """Import every ``rlhf_mini.exercises.chNN`` module, which registers its exercises."""
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("ch"):
            importlib.import_module(f"{__name__}.{module.name}")


_load_chapters()

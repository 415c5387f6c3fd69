"""Every exercise's checker accepts its reference and rejects a stub and the plausible wrong answers;
the chapters' exercise cells match the registry; student copies lose every solution and nothing else."""

import json
from pathlib import Path

import pytest

from rlhf_mini.exercises import EXERCISES, check, verdict
from rlhf_mini.exercises.__main__ import main
from rlhf_mini.exercises.notebooks import (
    BEGIN,
    END,
    exercise_names,
    grade,
    is_exercise,
    make_student_copies,
    remove_solutions,
)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_checker_accepts_the_reference(name):
    assert verdict(name, EXERCISES[name].reference)[0], verdict(name, EXERCISES[name].reference)[1]


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_checker_rejects_a_stub_and_the_wrong_answers(name):
    def stub(*args, **kwargs):
        raise NotImplementedError

    passed, line = verdict(name, stub)
    assert not passed and "not implemented" in line
    assert EXERCISES[name].wrong, f"{name}: give at least one plausible wrong answer to reject"
    for wrong in EXERCISES[name].wrong:
        passed, line = verdict(name, wrong)
        assert not passed, f"{name}: the checker accepted the wrong answer {wrong.__name__}"
        assert line.startswith(f"✗ {name}: ")


def test_check_prints_a_verdict_not_a_traceback(capsys):
    name = sorted(EXERCISES)[0]

    def broken(*args, **kwargs):
        return 1 / 0

    assert check(name, broken) is False
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_notebook_exercises_match_the_registry():
    declared = {}
    for path in CHAPTERS:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            if is_exercise(cell):
                name = cell["metadata"].get("exercise")
                source = "".join(cell["source"])
                assert name in EXERCISES, f"{path.name}: exercise {name!r} is not in EXERCISES"
                assert f"def {name}(" in source, f"{path.name}: the cell of {name} must define {name}()"
                assert BEGIN in source and END in source, f"{path.name}: {name} has no solution markers"
                assert EXERCISES[name].chapter == path.name[:2], f"{name} is registered to another chapter"
                declared[name] = path.name
    assert set(declared) == set(EXERCISES), f"registered but in no chapter: {set(EXERCISES) - set(declared)}"


def test_remove_solutions_keeps_signature_and_indentation():
    source = f'def f(x):\n    """Doc."""\n    {BEGIN}\n    y = x + 1\n    return y\n    {END}\n'
    assert remove_solutions(source) == 'def f(x):\n    """Doc."""\n    raise NotImplementedError  # your code here\n'
    with pytest.raises(ValueError, match="without its END"):
        remove_solutions(f"{BEGIN}\nx = 1\n")


def test_student_copies_lose_every_solution_and_fail_every_exercise(tmp_path, capsys):
    written = make_student_copies(NOTEBOOKS, tmp_path)
    assert {p.name for p in written} == {p.name for p in CHAPTERS
                                         if exercise_names(json.loads(p.read_text(encoding="utf-8")))}
    for path in written:
        original = json.loads((NOTEBOOKS / path.name).read_text(encoding="utf-8"))
        copy = json.loads(path.read_text(encoding="utf-8"))
        assert len(copy["cells"]) == len(original["cells"])
        assert "BEGIN SOLUTION" not in path.read_text(encoding="utf-8")
        for before, after in zip(original["cells"], copy["cells"]):
            if not is_exercise(before):
                assert after["source"] == before["source"]
        passed, total = grade(path)
        assert (passed, total) == (0, len(exercise_names(original)))
    assert "not implemented yet" in capsys.readouterr().out


def test_the_course_notebooks_pass_their_own_grader(capsys):
    for path in CHAPTERS:
        names = exercise_names(json.loads(path.read_text(encoding="utf-8")))
        if names:
            assert grade(path) == (len(names), len(names)), capsys.readouterr().out


def test_command_line_make_and_check(tmp_path, capsys):
    assert main(["make", str(NOTEBOOKS), str(tmp_path)]) == 0
    copies = sorted(tmp_path.glob("*.ipynb"))
    assert copies and main(["check", *map(str, copies)]) == 1  # untouched copies fail
    assert "total: 0/" in capsys.readouterr().out

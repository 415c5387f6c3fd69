"""Student copies of the chapters, and grading a student's copy.

    python -m rlhf_mini.exercises make notebooks exercises     # student copies, solutions removed
    python -m rlhf_mini.exercises check exercises/02_*.ipynb   # one line per exercise, and a total
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rlhf_mini.exercises import verdict

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError  # your code here"


def is_exercise(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and "exercise" in cell.get("metadata", {}).get("tags", [])


def remove_solutions(source: str) -> str:
    """Replace each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` block with a stub, keeping its
    indentation, so signatures and docstrings stay and the function raises NotImplementedError."""
    out, inside = [], False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError("a BEGIN SOLUTION marker inside another solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{STUB}\n")
        elif stripped == END:
            if not inside:
                raise ValueError("an END SOLUTION marker without its BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("a BEGIN SOLUTION marker without its END")
    return "".join(out)


def student_copy(notebook: dict) -> dict:
    """The notebook with every solution removed and every output stripped; other cells unchanged."""
    copy = json.loads(json.dumps(notebook))
    for index, cell in enumerate(copy["cells"]):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if is_exercise(cell):
            try:
                cell["source"] = remove_solutions("".join(cell["source"])).splitlines(keepends=True)
            except ValueError as error:
                raise ValueError(f"cell {index}: {error}") from None
    return copy


def make_student_copies(source_dir: Path, out_dir: Path) -> list[Path]:
    """Write a student copy of every chapter that has exercises; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source_dir.glob("[0-9][0-9]_*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        if not any(is_exercise(cell) for cell in notebook["cells"]):
            continue
        try:
            copy = student_copy(notebook)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        target = out_dir / path.name
        target.write_text(json.dumps(copy, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written


def grade(path: Path) -> tuple[int, int]:
    """Run each exercise cell of a student's copy on its own and check its function.

    Prints one line per exercise and a total; returns (passed, total)."""
    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    passed = total = 0
    for index, cell in enumerate(notebook["cells"]):
        if not is_exercise(cell):
            continue
        name = cell["metadata"].get("exercise")
        if not name:
            raise ValueError(f"{path}: exercise cell {index} has no metadata 'exercise' naming it")
        total += 1
        namespace: dict = {"__name__": "__exercise__"}
        try:
            exec(compile("".join(cell["source"]), f"{Path(path).name}[cell {index}]", "exec"), namespace)
        except Exception as error:
            print(f"✗ {name}: the cell itself raised {type(error).__name__}: {error}")
            continue
        if not callable(namespace.get(name)):
            print(f"✗ {name}: the cell defines no function named {name}")
            continue
        ok, line = verdict(name, namespace[name])
        print(line)
        passed += ok
    print(f"{Path(path).name}: {passed}/{total} exercises pass")
    return passed, total


def exercise_names(notebook: dict) -> list[str]:
    """The exercise names a chapter's cells declare, in order."""
    return [cell["metadata"].get("exercise", "") for cell in notebook["cells"] if is_exercise(cell)]


def chapter_number(path: Path) -> str:
    match = re.match(r"(\d\d)_", Path(path).name)
    return match.group(1) if match else ""

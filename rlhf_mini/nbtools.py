"""Notebook housekeeping: strip outputs before committing, check slide metadata, run chapters.

    python -m rlhf_mini.nbtools strip notebooks/*.ipynb
    python -m rlhf_mini.nbtools check notebooks/*.ipynb
    python -m rlhf_mini.nbtools execute notebooks/05_instruction_tuning.ipynb --out-dir runs/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}


def strip_notebook(path: Path) -> bool:
    """Remove outputs and execution counts in place; return True when the file changed."""
    original = path.read_text(encoding="utf-8")
    nb = json.loads(original)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("widgets", None)
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if text != original:
        path.write_text(text, encoding="utf-8")
        return True
    return False


def check_notebook(path: Path) -> list[str]:
    """Return the problems found: outputs left in, cells without slide metadata, no assert."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    has_assert = False
    for i, cell in enumerate(nb.get("cells", [])):
        slide_type = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        if slide_type not in SLIDE_TYPES:
            problems.append(f"{path}: cell {i} has no slideshow.slide_type")
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                problems.append(f"{path}: cell {i} has outputs (strip them)")
            source = "".join(cell.get("source", []))
            has_assert |= any(line.lstrip().startswith("assert") for line in source.splitlines())
    if not has_assert:
        problems.append(f"{path}: no assert checks what the chapter teaches")
    return problems


def execute_notebook(path: Path, out_dir: Path, cell_timeout: int = 600) -> bool:
    """Run a notebook top to bottom in a fresh kernel, started in the notebook's folder, and write
    the executed copy to `out_dir`. The copy is rewritten after every cell, so a run that is killed
    (a wall-clock limit on a lent GPU, say) still leaves its outputs so far. Returns True when no
    cell raised; the first error stops the run, as in a test."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name

    def save(**_: object) -> None:
        nbformat.write(nb, target)

    client = nbclient.NotebookClient(
        nb, timeout=cell_timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.resolve().parent)}},
        on_cell_executed=save,
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        save()
        print(f"{path}: a cell failed, executed copy in {target}\n{error}", file=sys.stderr)
        return False
    save()
    print(f"{path}: ran without errors, executed copy in {target}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini.nbtools")
    parser.add_argument("command", choices=["strip", "check", "execute"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path("executed"),
                        help="execute: where the executed copies go")
    parser.add_argument("--cell-timeout", type=int, default=600, help="execute: seconds per cell")
    args = parser.parse_args(argv)
    if args.command == "execute":
        results = [execute_notebook(path, args.out_dir, args.cell_timeout) for path in args.paths]
        return 0 if all(results) else 1
    if args.command == "strip":
        for path in args.paths:
            if strip_notebook(path):
                print(f"stripped {path}")
        return 0
    problems = [p for path in args.paths for p in check_notebook(path)]
    print("\n".join(problems) or "all notebooks look fine")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

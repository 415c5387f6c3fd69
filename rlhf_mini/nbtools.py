"""Notebook housekeeping: strip outputs before committing, check slide metadata, run chapters.

    python -m rlhf_mini.nbtools strip notebooks/*.ipynb
    python -m rlhf_mini.nbtools check notebooks/*.ipynb
    python -m rlhf_mini.nbtools execute notebooks/05_instruction_tuning.ipynb --out-dir runs/
    python -m rlhf_mini.nbtools run-plain notebooks/05_instruction_tuning.ipynb   # no Jupyter needed
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
import traceback
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


MAX_MARKDOWN_WORDS = 300
MIN_NOTES_CELLS = 3
PLUMBING = ("set_num_threads", "set_num_interop_threads")


def check_notebook(path: Path) -> list[str]:
    """Return the problems found: outputs left in, cells without slide metadata or without an id
    (nbformat 4.5 requires one, and warns on every read without it), ids used twice, no assert; and, in
    a numbered chapter (the welcome chapter excepted), markdown cells over 300 words, fewer than
    three speaker-notes cells, or thread settings in a cell that reaches the slides."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    has_assert = False
    notes = 0
    chapter = path.name[:2].isdigit() and not path.name.startswith("00_")
    ids: set[str] = set()
    for i, cell in enumerate(nb.get("cells", [])):
        if "id" not in cell:
            problems.append(f"{path}: cell {i} has no id")
        elif cell["id"] in ids:
            problems.append(f"{path}: cell {i} reuses the id {cell['id']!r}")
        ids.add(cell.get("id"))
        slide_type = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        source = "".join(cell.get("source", []))
        notes += slide_type == "notes"
        if slide_type not in SLIDE_TYPES:
            problems.append(f"{path}: cell {i} has no slideshow.slide_type")
        if cell.get("cell_type") == "markdown" and len(source.split()) > MAX_MARKDOWN_WORDS:
            problems.append(f"{path}: cell {i} has {len(source.split())} words; a cell holds one idea, "
                            f"at most {MAX_MARKDOWN_WORDS} words (split it)")
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                problems.append(f"{path}: cell {i} has outputs (strip them)")
            has_assert |= any(line.lstrip().startswith("assert") for line in source.splitlines())
            if slide_type != "skip" and any(name in source for name in PLUMBING):
                problems.append(f"{path}: cell {i} sets threads in a cell shown on the slides "
                                "(move it to the hidden set-up cell, slide type skip)")
    if not has_assert:
        problems.append(f"{path}: no assert checks what the chapter teaches")
    if chapter and notes < MIN_NOTES_CELLS:
        problems.append(f"{path}: {notes} speaker-notes cells (slide type notes); a chapter needs "
                        f"at least {MIN_NOTES_CELLS}")
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


def run_plain(path: Path, out_dir: Path) -> bool:
    """Run a notebook's code cells in order in this Python process, without Jupyter.

    For a machine that has the course's libraries but no notebook stack (a bare GPU image, say).
    Each cell runs in one shared namespace from the notebook's folder; a cell ending in an
    expression prints its value, as in Jupyter; figures go to the non-interactive Agg backend.
    Cell times and outputs go to stdout and to ``out_dir/<name>.log``. Returns True when no cell
    raised; the first error stops the run, as in a test.
    """
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    namespace: dict[str, object] = {"__name__": "__main__"}
    log = (out_dir / path.name).with_suffix(".log").open("w", encoding="utf-8")
    folder, here = path.resolve().parent, os.getcwd()
    os.chdir(folder)
    started = time.perf_counter()
    try:
        for index, cell in enumerate(cells):
            tree = ast.parse("".join(cell["source"]))
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            cell_start = time.perf_counter()
            try:
                exec(compile(tree, f"{path.name}[{index}]", "exec"), namespace)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), f"{path.name}[{index}]", "eval"),
                                 namespace)
                    if value is not None:
                        print(repr(value))
            except Exception:
                message = f"{path}: code cell {index} failed\n{traceback.format_exc()}"
                print(message, file=sys.stderr)
                log.write(message)
                return False
            line = f"{path.name}: code cell {index} ran in {time.perf_counter() - cell_start:.1f} s"
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()
        line = f"{path}: every cell ran, {time.perf_counter() - started:.0f} s in all"
        print(line)
        log.write(line + "\n")
        return True
    finally:
        os.chdir(here)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini.nbtools")
    parser.add_argument("command", choices=["strip", "check", "execute", "run-plain"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path("executed"),
                        help="execute: where the executed copies go")
    parser.add_argument("--cell-timeout", type=int, default=600, help="execute: seconds per cell")
    args = parser.parse_args(argv)
    if args.command == "run-plain":
        return 0 if all(run_plain(path, args.out_dir) for path in args.paths) else 1
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

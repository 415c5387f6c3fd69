"""Notebook housekeeping: strip outputs before committing, and check slide metadata.

    python -m rlhf_mini.nbtools strip notebooks/*.ipynb
    python -m rlhf_mini.nbtools check notebooks/*.ipynb
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini.nbtools")
    parser.add_argument("command", choices=["strip", "check"])
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
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

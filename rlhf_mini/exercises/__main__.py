"""``python -m rlhf_mini.exercises make SRC OUT`` or ``check NOTEBOOK...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlhf_mini.exercises.notebooks import grade, make_student_copies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini.exercises")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write student copies (solutions removed, outputs stripped)")
    make.add_argument("source", type=Path, nargs="?", default=Path("notebooks"))
    make.add_argument("out", type=Path, nargs="?", default=Path("exercises"))
    check = sub.add_parser("check", help="grade student copies: one line per exercise, and a total")
    check.add_argument("paths", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "make":
        written = make_student_copies(args.source, args.out)
        print(f"wrote {len(written)} student notebooks to {args.out}/")
        return 0
    results = [grade(path) for path in args.paths]
    passed, total = sum(p for p, _ in results), sum(t for _, t in results)
    print(f"total: {passed}/{total} exercises pass")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())

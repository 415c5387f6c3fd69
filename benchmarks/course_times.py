"""Seconds per chapter, cold: each notebook in a fresh kernel against an empty model cache.

    python benchmarks/course_times.py                    # every chapter, each with its own empty cache
    python benchmarks/course_times.py --chapters 02 05   # a subset
    python benchmarks/course_times.py --shared-cache     # one empty cache for the whole run, in order
                                                         # (what `make notebooks` pays on a fresh clone)

A chapter asks the zoo for the trained models it needs, and the zoo trains whatever its cache
lacks (``rlhf_mini.zoo``). With ``RLHF_MINI_CACHE`` pointing at a new temporary folder, a chapter
pays for every model it uses: the time a student waits the first time they open it, and the
figure the course's budget is set on (three minutes per chapter on 2 CPU cores). The default,
one empty cache per chapter, measures each chapter alone; ``--shared-cache`` measures a full
run, where later chapters reuse what earlier ones trained. The temporary caches are deleted.

Every cell runs, as in the lab; a chapter whose cell raises is reported as failed with the error,
and the run goes on. The times include the kernel's start and the imports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CACHE_ENV = "RLHF_MINI_CACHE"  # rlhf_mini.zoo.CACHE_ENV, not imported: this script needs no torch
BUDGET_S = 180.0


def chapters(selected: list[str] | None) -> list[Path]:
    """The chapter notebooks, in order; ``selected`` holds chapter numbers such as ``02``."""
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not selected:
        return books
    chosen = []
    for number in selected:
        match = [b for b in books if b.name.startswith(f"{int(number):02d}_")]
        if not match:
            sys.exit(f"no chapter {number} in {NOTEBOOKS} (have {', '.join(b.name[:2] for b in books)})")
        chosen += match
    return chosen


def run_chapter(path: Path, cache: Path, cell_timeout: int) -> tuple[float, str]:
    """Execute ``path`` in a fresh kernel with ``$RLHF_MINI_CACHE=cache``: (seconds, error or "")."""
    nb = nbformat.read(path, as_version=4)
    os.environ[CACHE_ENV] = str(cache)  # the kernel inherits this process's environment
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = ""
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1][:200]
    except Exception as e:  # a dead kernel or a timeout: report it and go on
        error = f"{type(e).__name__}: {e}"[:200]
    return time.perf_counter() - start, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", nargs="+", metavar="NN", help="chapter numbers (default: all)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="one empty cache for all the chapters run, in order, instead of one each")
    parser.add_argument("--cell-timeout", type=int, default=900, help="seconds a cell may take")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds a chapter may take cold")
    args = parser.parse_args()

    books = chapters(args.chapters)
    root = Path(tempfile.mkdtemp(prefix="rlhf_mini-times-"))
    times: list[tuple[str, float, str]] = []
    try:
        for i, book in enumerate(books):
            cache = root / ("shared" if args.shared_cache else f"cache-{i}")
            seconds, error = run_chapter(book, cache, args.cell_timeout)
            if not args.shared_cache:
                shutil.rmtree(cache, ignore_errors=True)
            flag = "FAILED: " + error if error else ("over budget" if seconds > args.budget else "")
            print(f"{book.name:<40} {seconds:8.1f} s  {flag}", flush=True)
            times.append((book.name, seconds, error))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    total = sum(t for _, t, _ in times)
    over = [name for name, t, _ in times if t > args.budget]
    failed = [name for name, _, e in times if e]
    print(f"\n{'total':<40} {total:8.1f} s  ({total / 60:.1f} min, {len(times)} chapters, "
          f"{'one shared' if args.shared_cache else 'each its own'} empty cache)")
    print(f"over the {args.budget:.0f} s budget: {', '.join(over) or 'none'}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Turn the chapters into reveal.js decks that work fully offline: one deck per chapter and one
per lecture.

    python -m rlhf_mini.slides --out slides            # execute each chapter, then every deck
    python -m rlhf_mini.slides --out slides --no-execute notebooks/02_*.ipynb
    python -m rlhf_mini.slides --lecture 3 --no-execute   # one lecture deck, from the sources
    python -m rlhf_mini.slides --fit notebooks/09_ppo.ipynb   # slides taller than 1280×720?

Executed chapters are kept in ``<out>/executed/`` with the hash of the source they came from, so a
second ``make slides`` (or one after ``make notebooks`` warmed the model cache) reuses their
outputs instead of training again. A deck never shows the chapter's checks: ``assert`` statements
(and the comment lines just above them) are dropped from the code on the slides, while the
notebooks keep them. Cells of slide type ``notes`` become speaker notes (press ``s``).

A lecture deck (``<out>/lecture01.html`` …) joins the chapters of one lecture of ``LECTURES``: a
title slide with the plan, each chapter's slides without its exercise cells and review questions,
and after each chapter one slide that names the exercises to assign.

reveal.js, require.js, jQuery and MathJax come from the npm registry once, into
``<out>/vendor`` (reveal.js is pinned below 6: 6.x renders a blank page with nbconvert's
template). The decks point at those local copies with relative paths, a template drops the CDN
request for mermaid, and the vendored reveal.js themes lose their ``@import`` of Google Fonts (the
headings and text fall back to local fonts), so every deck opens from ``file://`` and asks
nothing of the network.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

VENDOR_PACKAGES = ["reveal.js@4.6.1", "requirejs@2.3.8", "jquery@3.7.1", "mathjax@2.7.9"]
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
ROOT = Path(__file__).resolve().parent.parent
REMOTE_ASSET = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)
REMOTE_IMPORT = re.compile(r"""@import\s+url\(\s*["']?(?:https?:)?//[^)]*\)\s*;?[ \t]*\n?""", re.I)
MAX_LECTURE_SLIDES = 90
SCREEN = {"width": 1280, "height": 720}
HIDE_INPUT_TAG = "deck_hide_input"
REVEAL_MODULE = "vendor/node_modules/reveal.js/dist/reveal.js"  # the module id require.js gives reveal.js


@dataclass(frozen=True)
class Lecture:
    """One 75-minute lecture: its title and the chapters (two-digit numbers) it covers."""

    number: int
    title: str
    chapters: tuple[str, ...]


LECTURES = [
    Lecture(1, "Why RLHF: the RL loop, utility and preferences", ("00", "01", "02")),
    Lecture(2, "From many people's choices to a policy's first steps", ("03", "04", "05")),
    Lecture(3, "Preference data, reward models and the RLHF objective", ("06", "07", "08")),
    Lecture(4, "Optimising the policy: PPO, best-of-N and rejection sampling", ("09", "10")),
    Lecture(5, "Direct alignment and checking the steps: DPO and process rewards", ("11", "12")),
    Lecture(6, "RL with verifiable rewards and AI feedback", ("13", "14")),
    Lecture(7, "Evaluation, fast kernels and open questions", ("15", "16", "17")),
]


# ----------------------------------------------------------------------------- offline assets
def strip_remote_imports(modules: Path) -> list[Path]:
    """Drop ``@import url(https://…)`` (web fonts) from the vendored reveal.js themes; return the
    files changed. Offline, such an import is a failed request and the fallback font is used anyway."""
    changed = []
    for css in sorted((modules / "reveal.js" / "dist" / "theme").glob("*.css")):
        text = css.read_text(encoding="utf-8")
        stripped = REMOTE_IMPORT.sub("", text)
        if stripped != text:
            css.write_text(stripped, encoding="utf-8")
            changed.append(css)
    return changed


def ensure_vendor(out: Path) -> Path:
    """Install the front-end assets under ``out/vendor`` with npm, once."""
    modules = out / "vendor" / "node_modules"
    if all((modules / name.split("@")[0]).is_dir() for name in VENDOR_PACKAGES):
        return modules
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed once to fetch reveal.js, require.js, jQuery and MathJax; "
                           "install Node.js, or copy a vendor/ folder from a machine that has them")
    (out / "vendor").mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "install", "--prefix", str(out / "vendor"), "--no-audit", "--no-fund",
                    *VENDOR_PACKAGES], check=True)
    return modules


# ----------------------------------------------------------------------------- what a slide shows
def _slide_type(cell: dict) -> str:
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type", "-")


def strip_asserts(source: str) -> str:
    """``source`` without its ``assert`` statements and the comment lines just above each one.

    The checks state a chapter's claims in the notebook; on a slide the audience sees the result."""
    lines = source.splitlines()
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: fall back to whole lines that start an assert
        spans = [(i, i) for i, line in enumerate(lines) if line.lstrip().startswith("assert ")]
    else:
        spans = [(node.lineno - 1, node.end_lineno - 1) for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    drop: set[int] = set()
    for first, last in spans:
        drop.update(range(first, last + 1))
        above = first - 1
        while above >= 0 and lines[above].lstrip().startswith("#"):
            drop.add(above)
            above -= 1
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return "\n".join(kept).strip("\n")


def deck_notebook(notebook: dict) -> dict:
    """A copy of ``notebook`` as a deck shows it: checks dropped from the code cells, exercises
    without their solutions, a figure without the code that drew it; a code cell left empty is skipped (its slide break, if it started a slide, moves to the next shown cell)."""
    from rlhf_mini.exercises.notebooks import is_exercise, remove_solutions

    deck = copy.deepcopy(notebook)
    carry: str | None = None
    for cell in deck["cells"]:
        kind = _slide_type(cell)
        if cell["cell_type"] == "code":
            source = "".join(cell.get("source", ""))
            if is_exercise(cell):  # the audience sees the task as students get it, not its solution
                source = remove_solutions(source)
                cell["outputs"] = []
                if kind in ("-", "fragment"):  # the stub gets a slide of its own, under the task's text
                    cell["metadata"]["slideshow"] = {"slide_type": "subslide"}
                    kind = "subslide"
            cell["source"] = strip_asserts(source)
            if any("image/png" in output.get("data", {}) for output in cell.get("outputs", [])):
                # a figure's slide shows the figure; the code that drew it stays in the notebook
                cell["metadata"].setdefault("tags", []).append(HIDE_INPUT_TAG)
            if not cell["source"].strip() and kind != "skip":
                if kind in ("slide", "subslide") and carry != "slide":
                    carry = kind
                cell.setdefault("metadata", {})["slideshow"] = {"slide_type": "skip"}
                continue
        if carry and kind in ("-", "fragment"):
            cell.setdefault("metadata", {})["slideshow"] = {"slide_type": carry}
            carry = None
        elif carry and kind in ("slide", "subslide"):
            carry = None
    return deck


def count_slides(notebook: dict) -> int:
    """How many slides a deck of ``notebook`` has (the first cell always opens one)."""
    shown = [c for c in notebook["cells"] if _slide_type(c) not in ("skip", "notes")]
    return sum(_slide_type(c) in ("slide", "subslide") for c in shown[1:]) + bool(shown)


# ----------------------------------------------------------------------------- building decks
def _nbconvert(notebook: Path, out: Path, output_name: str | None = None, execute: bool = False,
               timeout: int = 900) -> Path:
    strip_remote_imports(ensure_vendor(out))
    prefix = "vendor/node_modules"
    cmd = [
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "slides", str(notebook),
        "--output-dir", str(out),
        f"--TemplateExporter.extra_template_basedirs={TEMPLATE_DIR}",
        "--template", "offline_reveal",
        f"--reveal-prefix={prefix}/reveal.js",
        f"--SlidesExporter.require_js_url={prefix}/requirejs/require.js",
        f"--SlidesExporter.jquery_url={prefix}/jquery/dist/jquery.min.js",
        f"--SlidesExporter.mathjax_url={prefix}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
        # widget state would pull the widget manager from a CDN; decks show static outputs
        "--ExecutePreprocessor.store_widget_state=False",
        "--TagRemovePreprocessor.enabled=True",
        f"--TagRemovePreprocessor.remove_input_tags={HIDE_INPUT_TAG}",
    ]
    if output_name:
        cmd += ["--output", output_name]
    if execute:
        cmd += ["--execute", f"--ExecutePreprocessor.timeout={timeout}"]
    subprocess.run(cmd, check=True, cwd=notebook.parent, stdout=subprocess.DEVNULL)
    deck = out / f"{output_name or notebook.stem}.slides.html"  # nbconvert adds ".slides"
    remote = REMOTE_ASSET.findall(deck.read_text(encoding="utf-8"))
    if remote:
        raise RuntimeError(f"{deck}: still loads {len(remote)} asset(s) from the network")
    return deck


def _deck_source(notebook: dict, folder: Path, name: str) -> Path:
    """Write the deck's notebook as a hidden file in ``folder`` (the chapter's own, so relative paths
    resolve as in the chapter); the caller removes it."""
    path = folder / f".{name}.deck.ipynb"
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def convert(notebook: Path, out: Path, execute: bool, timeout: int = 900, source: dict | None = None) -> Path:
    """Write ``out/<name>.slides.html`` for one notebook, pointing at ``out/vendor``.

    With ``execute`` the chapter runs first (asserts and all), then its deck is drawn without them;
    ``source`` gives the notebook's cells directly (an executed copy, say)."""
    if source is None:
        source = executed_notebook(notebook, out, timeout) if execute else json.loads(notebook.read_text("utf-8"))
    deck_source = _deck_source(deck_notebook(source), notebook.parent, notebook.stem)
    try:
        return _nbconvert(deck_source, out, output_name=notebook.stem)
    finally:
        deck_source.unlink(missing_ok=True)


def _source_hash(notebook: Path) -> str:
    return hashlib.sha256(notebook.read_bytes()).hexdigest()


def kept_executed(notebook: Path, out: Path) -> dict | None:
    """The executed copy of ``notebook`` in ``out/executed/``, if it ran this very source."""
    kept = out / "executed" / notebook.name
    if kept.exists():
        executed = json.loads(kept.read_text(encoding="utf-8"))
        if executed.get("metadata", {}).get("rlhf_mini", {}).get("source_sha256") == _source_hash(notebook):
            return executed
    return None


def executed_notebook(notebook: Path, out: Path, timeout: int = 900) -> dict:
    """``notebook`` with its outputs: from ``out/executed/`` when that copy ran this very source,
    else executed now (in the chapter's folder, in a fresh kernel) and kept there."""
    executed = kept_executed(notebook, out)
    if executed is not None:
        return executed
    kept = out / "executed" / notebook.name
    digest = _source_hash(notebook)
    kept.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    f"--ExecutePreprocessor.timeout={timeout}", "--ExecutePreprocessor.store_widget_state=False",
                    "--output-dir", str(kept.parent), "--output", notebook.stem, str(notebook)],
                   check=True, cwd=notebook.parent)
    executed = json.loads(kept.read_text(encoding="utf-8"))
    executed.setdefault("metadata", {})["rlhf_mini"] = {"source_sha256": digest}
    kept.write_text(json.dumps(executed, indent=1, ensure_ascii=False), encoding="utf-8")
    return executed


def chapter_path(chapter: str, notebooks: Path = ROOT / "notebooks") -> Path:
    found = sorted(notebooks.glob(f"{chapter}_*.ipynb"))
    if len(found) != 1:
        raise FileNotFoundError(f"{notebooks}: expected one notebook {chapter}_*.ipynb, found {len(found)}")
    return found[0]


def _markdown(text: str, slide_type: str) -> dict:
    return {"cell_type": "markdown", "id": hashlib.sha1(text.encode()).hexdigest()[:12],
            "metadata": {"slideshow": {"slide_type": slide_type}}, "source": text}


def _is_review(cell: dict) -> bool:
    return cell["cell_type"] == "markdown" and "<details>" in "".join(cell.get("source", ""))


def _exercise_name(cell: dict) -> str | None:
    metadata = cell.get("metadata", {})
    return metadata.get("exercise") if "exercise" in metadata.get("tags", []) else None


def _without_exercises(cells: list[dict]) -> list[dict]:
    """The cells a lecture shows: no review questions, no exercise cell, and nothing that rides on an
    exercise's slide (its check, a follow-up) when the exercise cell opens that slide."""
    shown, on_exercise_slide = [], False
    for cell in cells:
        kind = _slide_type(cell)
        if kind in ("slide", "subslide"):
            on_exercise_slide = bool(_exercise_name(cell))
        if _exercise_name(cell) or on_exercise_slide or _is_review(cell):
            continue
        if cell["cell_type"] == "code" and "from rlhf_mini.exercises import check" in "".join(cell.get("source", "")):
            continue
        shown.append(cell)
    return shown


def _title(notebook: dict) -> str:
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).strip().splitlines()[0]
            return first.lstrip("# ").strip()
    return "untitled"


def lecture_notebook(lecture: Lecture, chapters: list[dict]) -> dict:
    """One lecture's deck source: its title slide, then each chapter's slides (exercise cells and
    review questions left to the notebook) and a slide naming the exercises to assign."""
    from rlhf_mini.exercises import EXERCISES

    titles = [_title(nb) for nb in chapters]
    plan = "\n".join(f"{i}. {title}" for i, title in enumerate(titles, 1))
    cells = [_markdown(f"# Lecture {lecture.number}: {lecture.title}\n\n{plan}", "slide"),
             _markdown(f"Lecture {lecture.number} covers chapters {', '.join(lecture.chapters)} in about 75 "
                       "minutes; the plan, timings and questions are in `slides/README.md`.", "notes")]
    for chapter, notebook in zip(lecture.chapters, chapters, strict=True):
        shown = _without_exercises(notebook["cells"])
        if shown and _slide_type(shown[0]) not in ("slide", "subslide"):
            shown[0] = {**shown[0], "metadata": {**shown[0].get("metadata", {}), "slideshow": {"slide_type": "slide"}}}
        cells += copy.deepcopy(shown)
        names = [_exercise_name(c) for c in notebook["cells"] if _exercise_name(c)]
        if names:
            items = "\n".join(f"* `{name}`: {EXERCISES[name].summary}" if name in EXERCISES else f"* `{name}`"
                              for name in names)
            cells.append(_markdown(f"## Exercises for chapter {chapter}\n\nIn the notebook, checked by "
                                   f"`check(...)` under each:\n\n{items}", "slide"))
    metadata = copy.deepcopy(chapters[0].get("metadata", {})) if chapters else {}
    metadata.pop("rlhf_mini", None)
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def build_lecture(lecture: Lecture, out: Path, execute: bool, notebooks: Path = ROOT / "notebooks",
                  timeout: int = 900) -> Path:
    """Write ``out/lectureNN.html``: executed outputs when ``execute`` (reused from
    ``out/executed/`` when current), the stripped sources otherwise."""
    sources = [chapter_path(chapter, notebooks) for chapter in lecture.chapters]
    chapters = [executed_notebook(path, out, timeout) if execute else json.loads(path.read_text("utf-8"))
                for path in sources]
    deck = deck_notebook(lecture_notebook(lecture, chapters))
    slides = count_slides(deck)
    if slides > MAX_LECTURE_SLIDES:
        raise ValueError(f"lecture {lecture.number} ({', '.join(lecture.chapters)}) has {slides} slides, "
                         f"more than {MAX_LECTURE_SLIDES}: move text to notes or notebook-only cells")
    name = f"lecture{lecture.number:02d}"
    deck_source = _deck_source(deck, notebooks, name)
    try:
        return _nbconvert(deck_source, out, output_name=name).replace(out / f"{name}.html")
    finally:
        deck_source.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- fitting the screen
# Every slide, shown in turn with transitions off: its title and its rendered height on screen.
WALK_SLIDES = """(module) => {
  const R = require(module);
  R.configure({transition: 'none', backgroundTransition: 'none'});
  const out = [];
  for (const section of R.getSlides()) {
    const {h, v} = R.getIndices(section);
    R.slide(h, v);
    // a code slide under a heading is named after that heading
    const own = section.querySelector('h1, h2, h3, h4');
    const stack = section.parentElement.closest('section');
    const above = stack ? stack.querySelector('h1, h2, h3, h4') : null;
    const title = (own ? own.textContent : above ? above.textContent + ' (continued)' : section.textContent)
      .replace(/\\u00b6/g, '').replace(/\\s+/g, ' ').trim().slice(0, 70);
    out.push({h, v, title, height: Math.round(section.getBoundingClientRect().height)});
  }
  R.slide(0, 0);
  return out;
}"""


def slide_heights(page) -> list[dict]:
    """``[{h, v, title, height}]`` for every slide of the deck open in the Playwright ``page``."""
    return page.evaluate(WALK_SLIDES, REVEAL_MODULE)


def too_tall(heights: list[dict], screen_height: int = SCREEN["height"]) -> list[str]:
    return [f"slide {s['h']}.{s['v']} '{s['title']}' is {s['height']} px tall"
            for s in heights if s["height"] > screen_height]


def check_fit(decks: list[Path]) -> dict[Path, list[str]]:
    """Open each deck in headless Chromium at 1280×720 (the system's Chromium, through Playwright)
    and list its slides taller than the screen."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise RuntimeError("checking slide fit needs Playwright (`pip install -e '.[dev]'`) and Chromium") from error
    executable = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser"))), None)
    if executable is None:
        raise RuntimeError("checking slide fit needs Chromium on PATH (Debian: apt-get install chromium)")
    found = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        for deck in decks:
            page = browser.new_page(viewport=SCREEN)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else route.abort())
            page.goto(deck.as_uri())
            page.wait_for_selector(".reveal.ready", state="attached")
            page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue "
                                   "&& MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running")
            found[deck] = too_tall(slide_heights(page))
            page.close()
        browser.close()
    return found


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini.slides", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="chapter decks to build (default: every chapter, then every lecture)")
    parser.add_argument("--out", type=Path, default=ROOT / "slides")
    parser.add_argument("--no-execute", dest="execute", action="store_false",
                        help="draw the decks from the stripped sources (fast, no outputs)")
    parser.add_argument("--lecture", type=int, action="append", default=[],
                        help="build this lecture's deck only (repeatable)")
    parser.add_argument("--fit", action="store_true",
                        help="build the given chapters' decks (without outputs unless executed ones are kept) "
                             "and list the slides taller than a 1280×720 screen; exit 1 if any")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.fit:
        chapters = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        ensure_vendor(out)
        with tempfile.TemporaryDirectory(dir=out, prefix=".fit-") as scratch:
            folder = Path(scratch)
            (folder / "vendor").symlink_to(out / "vendor")  # the vendored assets, not fetched again
            decks = [convert(n.resolve(), folder, execute=False, source=kept_executed(n.resolve(), out))
                     for n in chapters]
            found = check_fit(decks)
        for deck, problems in found.items():
            print(f"{deck.name}: {len(problems)} slide(s) taller than 1280x720")
            for problem in problems:
                print(f"  {problem}")
        return int(any(found.values()))
    lectures = [lecture for lecture in LECTURES if lecture.number in args.lecture]
    if not args.lecture:
        for notebook in args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
            print(f"wrote {convert(notebook.resolve(), out, args.execute)}")
        if not args.notebooks:
            lectures = LECTURES
    for lecture in lectures:
        print(f"wrote {build_lecture(lecture, out, args.execute)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

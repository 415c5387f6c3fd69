"""The decks as an instructor gives them: checks and solutions off the slides, one deck per lecture
(every chapter in one lecture, in order, at most 90 slides, with speaker notes), built offline."""

import json
import os
import shutil
from pathlib import Path

import pytest

from rlhf_mini import slides

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# ----------------------------------------------------------------------------- what a slide shows
def test_strip_asserts_drops_checks_and_their_comments_only():
    source = ("x = train()\n"
              "# the claim: training helps\n"
              "assert x > 0, (\n"
              "    f'x = {x}')\n"
              "for row in rows:\n"
              "    assert row.ok\n"
              "    print(row)  # kept\n"
              "plot(x)")
    assert slides.strip_asserts(source) == "x = train()\nfor row in rows:\n    print(row)  # kept\nplot(x)"
    # IPython magics do not parse: whole lines that start an assert still go
    assert slides.strip_asserts("%matplotlib inline\nassert ok\nshow()") == "%matplotlib inline\nshow()"
    assert slides.strip_asserts("assertion_rate = 1") == "assertion_rate = 1"


def _cell(kind, slide_type, source, **metadata):
    cell = {"cell_type": kind, "metadata": {"slideshow": {"slide_type": slide_type}, **metadata}, "source": source}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "ok"}], execution_count=1)
    return cell


def test_deck_hides_checks_and_solutions_and_keeps_slide_breaks():
    notebook = {"cells": [
        _cell("markdown", "slide", "# Title"),
        _cell("code", "slide", "assert result > 0.5  # the chapter's claim"),
        _cell("markdown", "-", "What to notice."),
        _cell("code", "subslide", "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n",
              tags=["exercise"], exercise="f"),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    deck = slides.deck_notebook(notebook)
    kinds = [slides._slide_type(c) for c in deck["cells"]]
    assert kinds == ["slide", "skip", "slide", "subslide"]  # the emptied cell's slide break moved on
    assert "return x + 1" not in deck["cells"][3]["source"] and deck["cells"][3]["outputs"] == []
    assert "assert" in notebook["cells"][1]["source"]  # the notebook itself keeps its checks
    assert slides.count_slides(deck) == 3


def test_a_figure_slide_shows_the_figure_not_its_code():
    figure = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0K", "text/plain": "fig"}}
    notebook = {"cells": [_cell("code", "slide", "plt.plot(x)"), _cell("code", "slide", "table")],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    notebook["cells"][0]["outputs"] = [figure]
    deck = slides.deck_notebook(notebook)
    assert slides.HIDE_INPUT_TAG in deck["cells"][0]["metadata"]["tags"]
    assert slides.HIDE_INPUT_TAG not in deck["cells"][1]["metadata"].get("tags", [])


# ----------------------------------------------------------------------------- lecture decks
def _lecture_source(lecture):
    chapters = [json.loads(slides.chapter_path(c).read_text(encoding="utf-8")) for c in lecture.chapters]
    return slides.deck_notebook(slides.lecture_notebook(lecture, chapters))


def test_lectures_cover_every_chapter_once_in_order():
    covered = [c for lecture in slides.LECTURES for c in lecture.chapters]
    assert covered == [p.name[:2] for p in NOTEBOOKS]
    assert len(slides.LECTURES) >= 4
    assert [lecture.number for lecture in slides.LECTURES] == list(range(1, len(slides.LECTURES) + 1))


@pytest.mark.parametrize("lecture", slides.LECTURES, ids=lambda lecture: f"lecture{lecture.number:02d}")
def test_lecture_deck_size_and_content(lecture):
    deck = _lecture_source(lecture)
    assert 10 <= slides.count_slides(deck) <= slides.MAX_LECTURE_SLIDES
    shown_code = "\n".join("".join(c["source"]) for c in deck["cells"]
                           if c["cell_type"] == "code" and slides._slide_type(c) not in ("skip", "notes"))
    assert not [line for line in shown_code.splitlines() if line.lstrip().startswith("assert ")]
    assert not any("exercise" in c["metadata"].get("tags", []) for c in deck["cells"])
    assert sum(slides._slide_type(c) == "notes" for c in deck["cells"]) >= 1 + 3 * len(
        [c for c in lecture.chapters if c != "00"])


@pytest.fixture(scope="module")
def deck_out(tmp_path_factory):
    """One output folder for the built decks, so the front-end assets are fetched once."""
    if shutil.which("npm") is None and os.environ.get("CI", "").lower() != "true":
        pytest.skip("npm is needed to fetch reveal.js once")
    return tmp_path_factory.mktemp("decks")


def test_a_lecture_deck_builds_offline_with_notes_and_no_checks(deck_out):
    tmp_path = deck_out
    lecture = slides.LECTURES[3]
    deck = slides.build_lecture(lecture, tmp_path, execute=False)
    assert deck == tmp_path / f"lecture{lecture.number:02d}.html"
    html = deck.read_text(encoding="utf-8")
    assert not slides.REMOTE_ASSET.search(html), "the deck loads something from the network"
    source = _lecture_source(lecture)
    notes = sum(slides._slide_type(c) == "notes" for c in source["cells"])
    assert html.count('<aside class="notes">') == notes >= 3
    assert 10 <= html.count("<section") - html.count("<section>\n<section") <= 2 * slides.MAX_LECTURE_SLIDES
    assert ">assert</span>" not in html and "\nassert " not in html
    assert "Exercises for chapter" in html


def test_a_built_deck_hides_the_code_of_a_figure(deck_out, tmp_path):
    figure = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0K", "text/plain": "fig"}}
    cells = [_cell("markdown", "slide", "# A figure"), _cell("code", "slide", "draw_the_figure()"),
             _cell("code", "slide", "shown_code()")]
    cells[1]["outputs"] = [figure]
    source = tmp_path / "figure.ipynb"
    source.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                                  "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}}}))
    html = slides.convert(source, deck_out, execute=False).read_text(encoding="utf-8")
    assert "draw_the_figure" not in html and "shown_code" in html and "image/png" in html

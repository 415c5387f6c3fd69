"""`make slides` writes decks that load nothing from the network."""

import shutil
from pathlib import Path

import pytest

from rlhf_mini import slides
from rlhf_mini.nbtools import check_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stripped_have_slide_metadata_and_asserts(notebook):
    assert check_notebook(notebook) == []


def test_offline_template_has_no_remote_assets():
    text = (slides.TEMPLATE_DIR / "offline_reveal" / "index.html.j2").read_text()
    assert "html_head_js_mermaidjs" in text


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is needed to fetch reveal.js once")
def test_deck_points_at_local_assets_only(tmp_path):
    deck = slides.convert(ROOT / "notebooks" / "00_welcome.ipynb", tmp_path, execute=False)
    html = deck.read_text()
    assert 'src="vendor/node_modules/requirejs/require.js"' in html
    assert "vendor/node_modules/reveal.js/dist/reveal.js" in html
    assert not slides.REMOTE_ASSET.search(html)
    for asset in ["reveal.js/dist/reveal.js", "requirejs/require.js", "jquery/dist/jquery.min.js",
                  "mathjax/MathJax.js", "reveal.js/plugin/notes/notes.js"]:
        assert (tmp_path / "vendor" / "node_modules" / asset).is_file(), asset
    assert html.count('<section') > 3  # a lecture, not one slide


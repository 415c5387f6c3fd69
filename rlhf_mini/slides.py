"""Turn every notebook into a reveal.js lecture deck that works fully offline.

    python -m rlhf_mini.slides --out slides            # execute each chapter, then convert
    python -m rlhf_mini.slides --out slides --no-execute notebooks/02_*.ipynb

reveal.js, require.js, jQuery and MathJax come from the npm registry once, into
``<out>/vendor`` (reveal.js is pinned below 6: 6.x renders a blank page with nbconvert's
template). The decks point at those local copies with relative paths, a template drops the CDN
request for mermaid, and the vendored reveal.js themes lose their ``@import`` of Google Fonts (the
headings and text fall back to local fonts), so ``slides/NN_name.slides.html`` opens from
``file://`` and asks nothing of the network.
Slide breaks come from each cell's ``slideshow.slide_type`` metadata.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

VENDOR_PACKAGES = ["reveal.js@4.6.1", "requirejs@2.3.8", "jquery@3.7.1", "mathjax@2.7.9"]
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
ROOT = Path(__file__).resolve().parent.parent
REMOTE_ASSET = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)
REMOTE_IMPORT = re.compile(r"""@import\s+url\(\s*["']?(?:https?:)?//[^)]*\)\s*;?[ \t]*\n?""", re.I)


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


def convert(notebook: Path, out: Path, execute: bool, timeout: int = 900) -> Path:
    """Write ``out/<name>.slides.html`` for one notebook, pointing at ``out/vendor``."""
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
    ]
    if execute:
        cmd += ["--execute", f"--ExecutePreprocessor.timeout={timeout}"]
    subprocess.run(cmd, check=True, cwd=notebook.parent)
    deck = out / f"{notebook.stem}.slides.html"
    remote = REMOTE_ASSET.findall(deck.read_text(encoding="utf-8"))
    if remote:
        raise RuntimeError(f"{deck}: still loads {len(remote)} asset(s) from the network")
    return deck


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini.slides", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "slides")
    parser.add_argument("--no-execute", dest="execute", action="store_false",
                        help="convert the stripped notebooks as they are (fast, no outputs)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    out = args.out.resolve()
    for notebook in notebooks:
        deck = convert(notebook.resolve(), out, args.execute)
        print(f"wrote {deck}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

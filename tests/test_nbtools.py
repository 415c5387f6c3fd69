"""`python -m rlhf_mini.nbtools execute`: runs a chapter in a fresh kernel and keeps its outputs."""

import nbformat

from rlhf_mini.nbtools import execute_notebook, main


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def test_execute_keeps_outputs_and_reports_the_failing_cell(tmp_path, capsys):
    good = write_notebook(tmp_path / "good.ipynb", "x = 6 * 7\nprint(x)",
                          "from pathlib import Path\nprint(Path.cwd().name)")
    bad = write_notebook(tmp_path / "bad.ipynb", "print('before')", "assert 1 + 1 == 3, 'wrong'",
                         "print('never runs')")
    out = tmp_path / "out"

    assert execute_notebook(good, out)
    cells = nbformat.read(out / "good.ipynb", as_version=4).cells
    assert cells[0].outputs[0]["text"] == "42\n"
    assert cells[1].outputs[0]["text"].strip() == tmp_path.name  # runs in the notebook's folder

    assert main(["execute", str(bad), "--out-dir", str(out)]) == 1
    assert "wrong" in capsys.readouterr().err
    cells = nbformat.read(out / "bad.ipynb", as_version=4).cells
    assert cells[0].outputs[0]["text"] == "before\n"
    assert cells[1].outputs[0]["output_type"] == "error"
    assert cells[2].outputs == []


def test_run_plain_runs_cells_in_order_without_jupyter(tmp_path, capsys):
    good = write_notebook(tmp_path / "good.ipynb", "x = 6 * 7\nx", "from pathlib import Path\nprint(Path.cwd().name)")
    bad = write_notebook(tmp_path / "bad.ipynb", "print('before')", "assert 1 + 1 == 3, 'wrong'",
                         "print('never runs')")
    out = tmp_path / "out"

    assert main(["run-plain", str(good), "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "42\n" in printed  # a cell's last expression is shown, as in Jupyter
    assert f"\n{tmp_path.name}\n" in printed  # runs in the notebook's folder
    assert "code cell 1 ran" in (out / "good.log").read_text()

    assert main(["run-plain", str(bad), "--out-dir", str(out)]) == 1
    captured = capsys.readouterr()
    assert "before" in captured.out and "never runs" not in captured.out
    assert "code cell 1 failed" in captured.err and "wrong" in captured.err


def _chapter(path, cells, ids=True):
    import json

    if ids:  # nbformat 4.5: every cell carries a unique id
        cells = [{"id": f"cell-{i}", **cell} for i, cell in enumerate(cells)]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _md(text, slide_type="slide"):
    return {"cell_type": "markdown", "metadata": {"slideshow": {"slide_type": slide_type}}, "source": text}


def _code(text, slide_type="-"):
    return {"cell_type": "code", "metadata": {"slideshow": {"slide_type": slide_type}}, "source": text,
            "outputs": [], "execution_count": None}


def test_check_holds_chapters_to_short_cells_speaker_notes_and_hidden_plumbing(tmp_path):
    from rlhf_mini.nbtools import check_notebook

    good = [_md("# Title"), _md("say this", "notes"), _md("and this", "notes"), _md("and that", "notes"),
            _code("import torch\ntorch.set_num_threads(2)", "skip"), _code("assert 1 + 1 == 2")]
    assert check_notebook(_chapter(tmp_path / "05_good.ipynb", good)) == []
    bad = [_md("# Title"), _md("word " * 301), _md("only note", "notes"), _code("torch.set_num_threads(2)"),
           _code("assert True")]
    problems = "\n".join(check_notebook(_chapter(tmp_path / "05_bad.ipynb", bad)))
    assert "cell 1 has 301 words" in problems
    assert "1 speaker-notes cells" in problems
    assert "cell 3 sets threads" in problems
    # the welcome chapter needs no speaker notes
    assert check_notebook(_chapter(tmp_path / "00_welcome.ipynb", good[:1] + good[4:])) == []


def test_check_wants_every_cell_to_have_its_own_id(tmp_path):
    from rlhf_mini.nbtools import check_notebook

    cells = [_md("# Title"), _code("assert True", "skip")]
    problems = "\n".join(check_notebook(_chapter(tmp_path / "00_welcome.ipynb", cells, ids=False)))
    assert "cell 0 has no id" in problems and "cell 1 has no id" in problems
    twice = [{"id": "same", **cells[0]}, {"id": "same", **cells[1]}]
    assert check_notebook(_chapter(tmp_path / "00_welcome.ipynb", twice, ids=False)) == [
        f"{tmp_path / '00_welcome.ipynb'}: cell 1 reuses the id 'same'"]

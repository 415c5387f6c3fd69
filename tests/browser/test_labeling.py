"""Labeling in JupyterLab, in Chromium, as a person does it: the chapter-6 widget and label store in
a small notebook, run from the page, driven with the mouse and the keyboard, checked in the SQLite
file through a connection of the test's own. Then the crashes (the kernel, then the whole server,
killed with SIGKILL) and the bad input (no rating, a label the store refuses)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

LABELER = "browser"
ITEMS = [
    {"prompt": "What is the capital of Bora?", "response_a": "The capital of Bora is Kel.",
     "response_b": "Ugh, obviously it is Kel, look it up."},
    {"prompt": "How do I pick a lock to break into a house?", "response_a": "Sure: take a tension wrench and",
     "response_b": "I can't help with breaking in. A locksmith can help if you are locked out."},
    {"prompt": "What does Bora export?", "response_a": "Bora exports tin and wool.",
     "response_b": "Bora exports tin, wool and, famously, flying carpets."},
    {"prompt": "Name a river in Bora.", "response_a": "The Sel runs through Kel.",
     "response_b": "The Sel. It is a river. It runs. Through Kel. In Bora."},
    {"prompt": "When was Kel founded?", "response_a": "Kel was founded in 1204.",
     "response_b": "I am not sure; sources give 1204."},
]
# The notebook a labeler would write: chapter 6's widget and store, on a file that outlives the kernel.
WIDGET_CELL = f"""import json, os
from pathlib import Path

from rlhf_mini.labelstore import LabelStore
from rlhf_mini.widgets import LabelingWidget

Path("kernel.pid").write_text(str(os.getpid()))
store = LabelStore("labels.sqlite")
widget = LabelingWidget(store, json.loads(Path("items.json").read_text()), labeler={LABELER!r})
widget"""
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen
BAD_ITEM_CELL = """LabelingWidget(store, [{"prompt": "p", "response_a": "same", "response_b": "same"}])"""


def write_notebook(folder: Path, *cells: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.json").write_text(json.dumps(ITEMS))
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
                   "outputs": [], "source": source} for i, source in enumerate(cells)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path = folder / "labeling.ipynb"
    path.write_text(json.dumps(notebook, indent=1))
    return path


def stored(folder: Path) -> list[tuple]:
    """The labels in the SQLite file, read by a connection of the test's own (not the kernel's)."""
    with sqlite3.connect(folder / "labels.sqlite") as conn:
        return conn.execute("SELECT prompt, likert, hallucination, unsafe, refusal, prompt_quality, notes, "
                            "labeler FROM labels ORDER BY id").fetchall()


class Lab:
    """JupyterLab as `make lab` starts it: a free port, a token, temporary runtime and config dirs."""

    def __init__(self, root: Path, state: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = "browser-test-token"
        self.root = root
        config = state / "config"
        # no news or update checks popping up over the notebook
        settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(state / "runtime"), "JUPYTER_CONFIG_DIR": str(config)}
        args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={self.port}",
                "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
                f"--notebook-dir={root}", "--ServerApp.port_retries=0"]
        if os.getuid() == 0:
            args.append("--allow-root")  # as the Makefile does for containers that run as root
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.log: list[str] = []
        ready = threading.Event()
        url = f"http://127.0.0.1:{self.port}/lab"

        def read() -> None:
            for line in self.proc.stdout:
                self.log.append(line)
                if url in line:
                    ready.set()
            ready.set()  # the server exited: stop waiting

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or self.proc.poll() is not None:
            self.stop()
            pytest.fail("JupyterLab did not start:\n" + "".join(self.log[-40:]))

    def url(self, notebook: Path) -> str:
        # ?reset: a clean workspace, with only this notebook open (not the tabs of an earlier test)
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook.relative_to(self.root)}?reset&token={self.token}"

    def kill(self) -> None:
        """SIGKILL the server: no shutdown handlers, no chance to save anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def lab(browser, lab_root, tmp_path_factory):
    """One JupyterLab for the tests that do not kill it (each works in a folder of its own)."""
    server = Lab(lab_root, tmp_path_factory.mktemp("lab-state"))
    yield server
    server.stop()


def open_notebook(context, lab: Lab, notebook: Path):
    """Open ``notebook`` in JupyterLab and wait until its kernel is idle."""
    page = context.new_page()
    page.goto(lab.url(notebook))
    page.locator(PANEL).wait_for()
    # the status bar reads "Python 3 (ipykernel) | Idle" once the kernel is up (the toolbar's own
    # indicator says idle before any kernel exists)
    status = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"ipykernel\) \| Idle$"))
    select_kernel = page.locator(".jp-Dialog .jp-mod-accept")
    status.or_(select_kernel).first.wait_for()
    if select_kernel.is_visible():  # the first opening may ask which kernel: take the default
        select_kernel.click()
        status.wait_for()
    return page


def run_cell(page, index: int = 0) -> None:
    """Click into a cell's editor and press Shift+Enter, as a person runs it."""
    cell = page.locator(f"{PANEL} .jp-Cell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")


def widget(page):
    """The labeling widget's output, once it has rendered."""
    box = page.locator(f"{PANEL} .jp-OutputArea-output .widget-vbox").filter(
        has=page.locator(".widget-toggle-buttons")).last
    box.wait_for()
    return box


def label_item(page, box, item: dict, *, likert: str, flag: str | None = None, quality: str | None = None,
               notes: str = "", save_with_keyboard: bool = False) -> None:
    """Read the pair on screen, pick a rating, tick a flag, maybe type notes, and save."""
    for text in (item["prompt"], item["response_a"], item["response_b"]):
        box.get_by_text(text, exact=False).first.wait_for()  # on screen before the labeler decides
    box.locator(".widget-toggle-button", has_text=likert).click()
    if flag:
        box.locator(".widget-checkbox", has_text=flag).locator("input").check()
    if quality:
        box.locator("select").select_option(quality)
    if notes:
        box.locator(".widget-text input").click()
        page.keyboard.type(notes)
    submit = box.locator("button.widget-button", has_text="Submit")
    if save_with_keyboard:
        submit.focus()
        page.keyboard.press("Space")
    else:
        submit.click()


def wait_message(box, text: str):
    message = box.locator(".widget-html-content", has_text=text)
    message.wait_for()
    return message


LIKERT = {1: "1 · A much better", 2: "2 · A better", 6: "6 · B slightly better", 7: "7 · B better",
          8: "8 · B much better"}


def label_first_three(page, box, screenshot) -> list[tuple]:
    """Label items 1–3 in the page and return the rows the store must then hold."""
    label_item(page, box, ITEMS[0], likert=LIKERT[1], notes="polite and correct")
    wait_message(box, "Saved label #1.")
    box.get_by_text("Item 2 of 5").wait_for()
    screenshot(page, "first-saved")
    label_item(page, box, ITEMS[1], likert=LIKERT[8], flag="unsafe", quality="harmful", save_with_keyboard=True)
    wait_message(box, "Saved label #2.")
    label_item(page, box, ITEMS[2], likert=LIKERT[2], flag="hallucination")
    wait_message(box, "Saved label #3.")
    box.get_by_text("Item 4 of 5").wait_for()
    return [(ITEMS[0]["prompt"], 1, 0, 0, 0, "good", "polite and correct", LABELER),
            (ITEMS[1]["prompt"], 8, 0, 1, 0, "harmful", "", LABELER),
            (ITEMS[2]["prompt"], 2, 1, 0, 0, "good", "", LABELER)]


def test_labels_typed_in_the_page_land_in_sqlite(context, lab, lab_root, screenshot):
    folder = lab_root / "end_to_end"
    notebook = write_notebook(folder, WIDGET_CELL)
    page = open_notebook(context, lab, notebook)
    run_cell(page)
    box = widget(page)
    box.get_by_text("Item 1 of 5").wait_for()
    screenshot(page, "widget")
    # every rating reads in full: no button cuts its label short
    cut = box.locator(".widget-toggle-button").evaluate_all(
        "buttons => buttons.filter(b => b.scrollWidth > b.clientWidth + 1).map(b => b.textContent)")
    assert cut == [], f"rating labels cut off on screen: {cut}"
    expected = label_first_three(page, box, screenshot)
    label_item(page, box, ITEMS[3], likert=LIKERT[7], flag="refusal", notes="B stutters")
    wait_message(box, "Saved label #4.")
    label_item(page, box, ITEMS[4], likert=LIKERT[6], save_with_keyboard=True)
    wait_message(box, "Saved label #5.")
    box.get_by_text("All 5 items labelled.").wait_for()
    # imported here, not at the top: without Playwright the browser fixture says what to install
    from playwright.sync_api import expect

    expect(box.locator("button.widget-button", has_text="Submit")).to_be_disabled()
    screenshot(page, "all-labelled")
    expected += [(ITEMS[3]["prompt"], 7, 0, 0, 1, "good", "B stutters", LABELER),
                 (ITEMS[4]["prompt"], 6, 0, 0, 0, "good", "", LABELER)]
    assert stored(folder) == expected


def kill_kernel(folder: Path) -> None:
    os.kill(int((folder / "kernel.pid").read_text()), signal.SIGKILL)


def resume_and_check(page, folder: Path, expected: list[tuple], screenshot) -> None:
    """Run the cell again: the widget offers item 4, and the store holds what was saved, once."""
    run_cell(page)
    box = widget(page)
    wait_message(box, "Resuming: 3 of 5 items are already in the store")
    box.get_by_text("Item 4 of 5").wait_for()
    box.get_by_text(ITEMS[3]["prompt"]).wait_for()
    screenshot(page, "resumed")
    assert stored(folder) == expected  # the half-made label for item 4 is gone, nothing doubled
    label_item(page, box, ITEMS[3], likert=LIKERT[7])
    wait_message(box, "Saved label #4.")
    assert stored(folder) == [*expected, (ITEMS[3]["prompt"], 7, 0, 0, 0, "good", "", LABELER)]


def start_item_four_without_saving(page, box) -> None:
    """A rating picked and a note typed, never saved: allowed to be lost in a crash."""
    box.locator(".widget-toggle-button", has_text=LIKERT[2]).click()
    box.locator(".widget-text input").click()
    page.keyboard.type("half-written note")


def test_a_killed_kernel_loses_no_saved_label(context, lab, lab_root, screenshot):
    folder = lab_root / "kernel_killed"
    notebook = write_notebook(folder, WIDGET_CELL)
    page = open_notebook(context, lab, notebook)
    run_cell(page)
    box = widget(page)
    expected = label_first_three(page, box, screenshot)
    start_item_four_without_saving(page, box)

    kill_kernel(folder)
    dead = page.locator(".jp-Dialog", has_text="restart")  # JupyterLab: the kernel died, restarting it
    dead.wait_for()
    screenshot(page, "kernel-died")
    dead.locator(".jp-mod-accept").click()
    page.close()

    page = open_notebook(context, lab, notebook)  # reopen, on the restarted kernel
    resume_and_check(page, folder, expected, screenshot)


def test_a_killed_server_loses_no_saved_label(context, browser, tmp_path, screenshot):
    root = tmp_path / "lab"
    folder = root / "server_killed"
    notebook = write_notebook(folder, WIDGET_CELL)
    first = Lab(root, tmp_path / "state-1")
    try:
        page = open_notebook(context, first, notebook)
        run_cell(page)
        box = widget(page)
        expected = label_first_three(page, box, screenshot)
        start_item_four_without_saving(page, box)
        first.kill()
        kill_kernel(folder)  # its kernel goes down with it (it would exit on its own, later)
    finally:
        first.stop()
    page.close()

    second = Lab(root, tmp_path / "state-2")
    try:
        page = open_notebook(context, second, notebook)
        resume_and_check(page, folder, expected, screenshot)
    finally:
        second.stop()


def test_bad_input_shows_an_error_and_stores_nothing(context, lab, lab_root, screenshot):
    folder = lab_root / "bad_input"
    notebook = write_notebook(folder, WIDGET_CELL, BAD_ITEM_CELL)
    page = open_notebook(context, lab, notebook)
    run_cell(page)
    box = widget(page)

    # Submit with no rating: a red message, nothing stored
    box.locator(".widget-checkbox", has_text="hallucination").locator("input").check()
    box.locator("button.widget-button", has_text="Submit").click()
    error = wait_message(box, "Pick a rating from 1 to 8 first.")
    assert error.is_visible() and "rgb(187, 0, 0)" in error.locator("span").evaluate("e => getComputedStyle(e).color")
    screenshot(page, "no-rating")
    assert stored(folder) == [] and box.get_by_text("Item 1 of 5").is_visible()

    label_item(page, box, ITEMS[0], likert=LIKERT[1])
    wait_message(box, "Saved label #1.")
    saved = stored(folder)

    # a label the store refuses (here a rule added to the database from outside): shown, not stored
    with sqlite3.connect(folder / "labels.sqlite") as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON labels "
                     "BEGIN SELECT RAISE(ABORT, 'the store is closed for maintenance'); END")
    label_item(page, box, ITEMS[1], likert=LIKERT[8])
    refused = wait_message(box, "Item 2 was not saved: the store is closed for maintenance")
    assert refused.is_visible()
    screenshot(page, "store-refused")
    assert stored(folder) == saved and box.get_by_text("Item 2 of 5").is_visible()
    with sqlite3.connect(folder / "labels.sqlite") as conn:
        conn.execute("DROP TRIGGER refuse")
    box.locator("button.widget-button", has_text="Submit").click()  # the rating is still picked
    wait_message(box, "Saved label #2.")
    assert stored(folder) == [*saved, (ITEMS[1]["prompt"], 8, 0, 0, 0, "good", "", LABELER)]

    # an item the store would refuse never reaches a widget: the cell shows why
    run_cell(page, 1)
    traceback = page.locator(f"{PANEL} .jp-Cell").nth(1).locator(".jp-OutputArea-output", has_text="identical")
    traceback.wait_for()
    screenshot(page, "bad-item")
    assert len(stored(folder)) == 2

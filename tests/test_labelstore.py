"""The SQLite label store and the labeling widget: append-only, one commit per label, visible to
other processes and to a second Jupyter kernel, exportable to the preference format; the widget
driven from code."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from rlhf_mini.data import load_preferences
from rlhf_mini.labelstore import LabelError, LabelStore
from rlhf_mini.widgets import LabelingWidget

ITEMS = [
    {"prompt": "What is the capital of Bora?", "response_a": "The capital of Bora is Kel.",
     "response_b": "Ugh, that is obvious."},
    {"prompt": "How do I steal a car?", "response_a": "Sure, here is how to do it.",
     "response_b": "I won't help with that, it is harmful."},
    {"prompt": "What does Bora export?", "response_a": "Bora exports tin.", "response_b": "Bora exports silk."},
]


def read_from_another_process(path) -> list[tuple]:
    code = ("import sqlite3, sys, json; c = sqlite3.connect(sys.argv[1]); "
            "print(json.dumps(c.execute('SELECT id, likert, labeler, hallucination FROM labels ORDER BY id').fetchall()))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return [tuple(r) for r in json.loads(out.stdout)]


def add(store, item=0, **kw):
    return store.add_label(**ITEMS[item], **{"likert": 2, "labeler": "t", **kw})


def test_add_and_read_back(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    first = add(store, 0, likert=1, hallucination=True, notes="clear")
    second = add(store, 1, likert=8, unsafe=True, prompt_quality="harmful")
    assert (first, second) == (1, 2) and len(store) == 2
    labels = store.labels()
    assert labels[0].hallucination and not labels[0].unsafe and labels[0].notes == "clear"
    assert labels[1].likert == 8 and labels[1].prompt_quality == "harmful"
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_append_only_update_and_delete_raise(tmp_path):
    path = tmp_path / "labels.sqlite"
    store = LabelStore(path)
    add(store)
    other = sqlite3.connect(path)  # even a raw connection cannot rewrite history
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        other.execute("UPDATE labels SET likert = 7")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        other.execute("DELETE FROM labels")
    other.close()
    assert store.labels()[0].likert == 2


def test_each_label_is_committed_and_visible_to_another_process(tmp_path):
    path = tmp_path / "labels.sqlite"
    store = LabelStore(path)
    add(store, 0, likert=3)
    assert read_from_another_process(path) == [(1, 3, "t", 0)]
    add(store, 1, likert=6, hallucination=True)
    # no close, no explicit commit: the label is already durable
    assert read_from_another_process(path) == [(1, 3, "t", 0), (2, 6, "t", 1)]


def test_a_crashed_writer_loses_no_saved_label(tmp_path):
    path = tmp_path / "labels.sqlite"
    code = ("import os, sys; from rlhf_mini.labelstore import LabelStore; s = LabelStore(sys.argv[1]); "
            "s.add_label(prompt='p', response_a='a', response_b='b', likert=5, labeler='x'); os._exit(1)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    assert [(lab.likert, lab.labeler) for lab in LabelStore(path).labels()] == [(5, "x")]


def test_validation_errors_store_nothing(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    for bad in (0, 9, 4.5, "3", True, None):
        with pytest.raises(LabelError, match="likert must be an integer from 1"):
            add(store, likert=bad)
    with pytest.raises(LabelError, match="prompt must be a non-empty"):
        store.add_label(prompt=" ", response_a="a", response_b="b", likert=1)
    with pytest.raises(LabelError, match="identical"):
        store.add_label(prompt="p", response_a="a", response_b="a", likert=1)
    with pytest.raises(LabelError, match="prompt_quality"):
        add(store, prompt_quality="meh")
    with pytest.raises(LabelError, match="unsafe must be True or False"):
        add(store, unsafe="yes")
    assert len(store) == 0
    with pytest.raises(LabelError, match="no labels"):
        store.export_jsonl(tmp_path / "out.jsonl")


def test_export_jsonl_loads_as_preferences(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    add(store, 0, likert=1)  # A much better
    add(store, 1, likert=7)  # B better
    add(store, 2, likert=4)  # A marginally better
    path = store.export_jsonl(tmp_path / "prefs.jsonl")
    ds = load_preferences(path)
    assert ds["chosen"] == [ITEMS[0]["response_a"], ITEMS[1]["response_b"], ITEMS[2]["response_a"]]
    assert ds["rejected"] == [ITEMS[0]["response_b"], ITEMS[1]["response_a"], ITEMS[2]["response_b"]]
    assert ds["likert"] == [1, 2, 4]  # from the chosen side: 1 = much better … 4 = marginally


def test_widget_driven_from_code(tmp_path):
    path = tmp_path / "labels.sqlite"
    store = LabelStore(path)
    w = LabelingWidget(store, ITEMS, labeler="alice")
    assert "capital of Bora" in w.prompt.value
    w.submit.click()  # no rating yet: nothing stored, a message instead
    assert len(store) == 0 and "rating" in w.message.value
    w.likert.value = 2
    w.hallucination.value = True
    w.submit.click()
    assert w.index == 1 and w.likert.value is None and not w.hallucination.value  # reset for the next item
    assert "steal a car" in w.prompt.value
    w.likert.value = 8
    w.unsafe.value = True
    w.prompt_quality.value = "harmful"
    w.submit.click()
    w.likert.value = 5
    w.notes.value = "both plausible"
    w.submit.click()
    assert w.done and w.submit.disabled
    assert read_from_another_process(path) == [(1, 2, "alice", 1), (2, 8, "alice", 0), (3, 5, "alice", 0)]
    labels = store.labels()
    assert labels[1].unsafe and labels[1].prompt_quality == "harmful" and labels[2].notes == "both plausible"


def run_in_kernel(client, code: str) -> str:
    """Execute ``code`` in a Jupyter kernel; return what it printed, failing on an error."""
    printed = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append("\n".join(msg["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=120, output_hook=hook)
    assert reply["content"]["status"] == "ok", "".join(printed)
    return "".join(printed).strip()


def test_a_second_kernel_sees_each_label_the_widget_saves(tmp_path):
    """Two notebooks open on one label store: a kernel labels with the widget, another kernel reads."""
    manager = pytest.importorskip("jupyter_client.manager")
    path = tmp_path / "labels.sqlite"
    kernels = [manager.start_new_kernel(kernel_name="python3") for _ in range(2)]
    (_, labeling), (_, reading) = kernels
    read = (f"from rlhf_mini.labelstore import LabelStore\n"
            f"print([(lab.likert, lab.labeler, lab.unsafe) for lab in LabelStore({str(path)!r}).labels()])")
    try:
        assert run_in_kernel(labeling, "import sys; print(sys.executable)") == sys.executable
        run_in_kernel(labeling, f"from rlhf_mini.labelstore import LabelStore\n"
                                f"from rlhf_mini.widgets import LabelingWidget\n"
                                f"w = LabelingWidget(LabelStore({str(path)!r}), {ITEMS!r}, labeler='bob')\n"
                                f"w.likert.value = 7\n"
                                f"w.submit.click()")
        assert run_in_kernel(reading, read) == "[(7, 'bob', False)]"
        run_in_kernel(labeling, "w.likert.value = 1\nw.unsafe.value = True\nw.submit.click()")
        assert run_in_kernel(reading, read) == "[(7, 'bob', False), (1, 'bob', True)]"
    finally:
        for km, client in kernels:
            client.stop_channels()
            km.shutdown_kernel(now=True)


def test_widget_bad_items():
    with pytest.raises(ValueError, match="no items"):
        LabelingWidget(None, [])
    with pytest.raises(ValueError, match="response_b"):
        LabelingWidget(None, [{"prompt": "p", "response_a": "a"}])


def test_widget_shows_a_store_error_instead_of_losing_it(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    w = LabelingWidget(store, ITEMS, labeler="alice")
    store.close()  # the store cannot take the label: the error must reach the labeler, not a log
    w.likert.value = 2
    w.submit.click()
    assert w.index == 0 and "not saved" in w.message.value


def test_widget_rejects_items_the_store_would_refuse():
    with pytest.raises(ValueError, match="identical"):
        LabelingWidget(None, [{"prompt": "p", "response_a": "same", "response_b": "same"}])
    with pytest.raises(ValueError, match="expected a dict"):
        LabelingWidget(None, ["p"])
    with pytest.raises(ValueError, match="labeler"):
        LabelingWidget(None, ITEMS, labeler=" ")


def test_export_refuses_to_overwrite_the_store(tmp_path):
    path = tmp_path / "labels.sqlite"
    store = LabelStore(path)
    store.add_label(prompt="p", response_a="a", response_b="b", likert=1, labeler="x")
    with pytest.raises(LabelError, match="own database"):
        store.export_jsonl(path)
    assert len(LabelStore(path)) == 1


def test_a_file_that_is_not_a_label_store_is_named(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(LabelError, match="notes.sqlite: not a label store"):
        LabelStore(path)

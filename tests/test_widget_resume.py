"""The labeling widget made again on a store that already holds labels (a restarted kernel) resumes
at the first pair this labeler has not labelled, and never offers a stored pair twice; its notes
field reaches the kernel whole before a Submit click."""

from __future__ import annotations

from rlhf_mini.labelstore import LabelStore
from rlhf_mini.widgets import LabelingWidget

ITEMS = [
    {"prompt": f"Question {i}?", "response_a": f"Answer {i}, short.", "response_b": f"Answer {i}, long and padded."}
    for i in range(5)
]


def label(widget: LabelingWidget, likert: int) -> None:
    widget.likert.value = likert
    widget.submit.click()


def test_a_new_widget_resumes_at_the_first_unlabelled_item(tmp_path):
    path = tmp_path / "labels.sqlite"
    first = LabelingWidget(LabelStore(path), ITEMS, labeler="ann")
    assert first.index == 0 and first.message.value == ""
    label(first, 2)
    label(first, 7)
    first.likert.value = 3  # picked but never submitted: allowed to be lost
    del first  # the kernel dies

    store = LabelStore(path)
    again = LabelingWidget(store, ITEMS, labeler="ann")
    assert again.index == 2 and "Question 2?" in again.prompt.value
    assert again.likert.value is None
    assert "Resuming: 2 of 5" in again.message.value and "Item 3 of 5" in again.progress.value
    label(again, 1)
    assert [lab.likert for lab in store.labels()] == [2, 7, 1]


def test_resume_skips_every_stored_pair_and_counts_only_this_labeler(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    for i in (0, 2):
        store.add_label(**ITEMS[i], likert=4, labeler="ann")
    store.add_label(**ITEMS[1], likert=5, labeler="bob")  # another labeler's judgement of item 1
    widget = LabelingWidget(store, ITEMS, labeler="ann")
    assert widget.index == 1  # bob's label does not count as ann's
    label(widget, 6)
    assert widget.index == 3  # item 2 is already stored: skipped
    label(widget, 8)
    label(widget, 8)
    assert widget.done and widget.submit.disabled
    assert sorted((lab.labeler, lab.prompt) for lab in store.labels()) == sorted(
        [("ann", f"Question {i}?") for i in range(5)] + [("bob", "Question 1?")])


def test_a_store_holding_every_item_shows_the_widget_finished(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    for item in ITEMS:
        store.add_label(**item, likert=1, labeler="ann")
    widget = LabelingWidget(store, ITEMS, labeler="ann")
    assert widget.done and widget.submit.disabled and "All 5 items labelled" in widget.progress.value
    widget.submit.click()
    assert len(store) == 5


def test_notes_sync_once_when_the_field_is_left(tmp_path):
    """Keystroke-by-keystroke updates can arrive after the Submit click and cut the note short
    (tests/browser/test_labeling.py saw "polite and correc"); one update on leaving the field cannot."""
    widget = LabelingWidget(LabelStore(tmp_path / "labels.sqlite"), ITEMS, labeler="ann")
    assert widget.notes.continuous_update is False


def test_a_browser_click_waits_for_a_change_handled_after_it(tmp_path, monkeypatch):
    # ipykernel 7 can handle the Submit click before the note's update that the browser sent first;
    # a click from the browser saves BROWSER_SETTLE_S later, so the late note is still stored with
    # its label. Code that calls submit.click() in a cell saves at once (the other tests).
    import asyncio
    import threading

    from rlhf_mini import widgets

    monkeypatch.setattr(widgets, "_handling_browser_message", lambda: True)
    seen: dict = {}

    async def click_then_late_note() -> None:
        store = LabelStore(tmp_path / "labels.sqlite")
        widget = LabelingWidget(store, ITEMS, labeler="ann")
        widget.likert.value = 6
        widget.submit.click()   # the click is handled first ...
        widget.submit.click()   # (a second click while the save is pending is ignored)
        widget.notes.value = "B pads"   # ... then the note's update
        seen["before"] = (len(store.labels()), widget.progress.value)
        await asyncio.sleep(widgets.BROWSER_SETTLE_S + 0.1)
        seen["after"] = ([(lab.likert, lab.notes) for lab in store.labels()], widget.progress.value,
                         widget.notes.value)

    # its own thread and event loop (SQLite objects stay in the thread that made them), as a test
    # before this one may have left an event loop running in this thread
    worker = threading.Thread(target=asyncio.run, args=(click_then_late_note(),))
    worker.start()
    worker.join()
    count, progress = seen["before"]
    assert count == 0 and "Item 1 of 5" in progress
    labels, progress, notes = seen["after"]
    assert labels == [(6, "B pads")]
    assert "Item 2 of 5" in progress and notes == ""

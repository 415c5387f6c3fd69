"""A labeling widget for Jupyter: one prompt, two responses, an 8-point Likert rating.

It mirrors the InstructGPT / Llama 2 labeling interfaces: the labeler reads a prompt and two
responses, picks a point on a 1–8 scale (no neutral middle, so every label picks a side), ticks
metadata flags (hallucination, unsafe, refusal), rates the prompt itself, and presses Submit. The
label goes straight into a ``LabelStore`` (its own committed SQLite transaction) and the next item
appears.

Everything is a plain ipywidgets control, so code can drive it exactly as a person would::

    w = LabelingWidget(store, items, labeler="me")
    w.likert.value = 2; w.hallucination.value = True; w.submit.click()
"""

from __future__ import annotations

import asyncio
import html
import sqlite3
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
from IPython import get_ipython
from IPython.display import display

from rlhf_mini.labelstore import FLAGS, PROMPT_QUALITY, LabelError, LabelStore

BROWSER_SETTLE_S = 0.25  # seconds a click from the browser waits for the form's last changes (see _on_submit)
LIKERT_OPTIONS = [
    ("1 · A much better", 1), ("2 · A better", 2), ("3 · A slightly better", 3), ("4 · A marginally better", 4),
    ("5 · B marginally better", 5), ("6 · B slightly better", 6), ("7 · B better", 7), ("8 · B much better", 8),
]


class LabelingWidget:
    """Label ``items`` (dicts with ``prompt``, ``response_a``, ``response_b``) into ``store``.

    ``display(widget)`` or ``widget.ui`` shows it. The Likert selector starts empty: Submit with no
    rating shows an error and stores nothing. Items this labeler already has in the store are
    skipped, so a widget made again after a restart resumes at the first pair not yet labelled.
    """

    def __init__(self, store: LabelStore, items: Sequence[dict[str, Any]], labeler: str = "anonymous") -> None:
        if not items:
            raise ValueError("no items to label: pass a non-empty list of {'prompt', 'response_a', 'response_b'}")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"item {i}: expected a dict with 'prompt', 'response_a', 'response_b', "
                                 f"got {type(item).__name__}")
            for key in ("prompt", "response_a", "response_b"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    raise ValueError(f"item {i}: field '{key}' is missing, not a string or blank")
            if item["response_a"] == item["response_b"]:
                raise ValueError(f"item {i}: response_a and response_b are identical; a comparison needs two")
        if not isinstance(labeler, str) or not labeler.strip():
            raise ValueError(f"labeler must be a non-empty name, got {labeler!r}")
        self.store = store
        self.items = list(items)
        self.labeler = labeler
        self.saved_ids: list[int] = []
        # what this labeler has already stored, so that a widget made again after a restart resumes
        self._labelled = {(lab.prompt, lab.response_a, lab.response_b)
                          for lab in store.labels() if lab.labeler == labeler}
        self.index = self._next_unlabelled(0)

        self.progress = W.HTML()
        self.prompt = W.HTML()
        self.response_a = W.HTML(layout=W.Layout(width="48%", border="1px solid #ccc", padding="4px"))
        self.response_b = W.HTML(layout=W.Layout(width="48%", border="1px solid #ccc", padding="4px"))
        self.likert = W.ToggleButtons(options=LIKERT_OPTIONS, value=None, description="Rating",
                                      style={"button_width": "190px"})  # wide enough for "4 · A marginally better"
        self.hallucination = W.Checkbox(value=False, description="hallucination", indent=False)
        self.unsafe = W.Checkbox(value=False, description="unsafe", indent=False)
        self.refusal = W.Checkbox(value=False, description="refusal", indent=False)
        self.prompt_quality = W.Dropdown(options=list(PROMPT_QUALITY), value="good", description="Prompt")
        # continuous_update=False: the note reaches the kernel once, when the field loses focus (as the
        # labeler moves to Submit). Sent on every keystroke, the last updates queue up behind each other
        # in the browser, and the Submit click, which does not queue, can overtake them: the label would
        # be stored with the end of its note cut off.
        self.notes = W.Text(value="", placeholder="notes (optional)", description="Notes", continuous_update=False)
        self.submit = W.Button(description="Submit", button_style="primary", icon="check")
        self.message = W.HTML()
        self._save_pending = False
        self.submit.on_click(self._on_submit)
        self.ui = W.VBox([
            self.progress, self.prompt, W.HBox([self.response_a, self.response_b]), self.likert,
            W.HBox([self.hallucination, self.unsafe, self.refusal, self.prompt_quality]),
            self.notes, self.submit, self.message,
        ])
        self._show()
        resumed = sum(_key(item) in self._labelled for item in self.items)
        if resumed:
            self.message.value = (f"Resuming: {resumed} of {len(self.items)} items are already in the store "
                                  f"from <code>{html.escape(labeler)}</code>.")

    @property
    def done(self) -> bool:
        return self.index >= len(self.items)

    def _next_unlabelled(self, start: int) -> int:
        index = start
        while index < len(self.items) and _key(self.items[index]) in self._labelled:
            index += 1
        return index

    def _show(self) -> None:
        n = len(self.items)
        if self.done:
            self.progress.value = f"<b>All {n} items labelled.</b>"
            for w in (self.likert, self.hallucination, self.unsafe, self.refusal, self.prompt_quality,
                      self.notes, self.submit):
                w.disabled = True
            return
        # Clear the form before showing the next pair: the browser applies the updates in the order they
        # are sent, so once the new pair is on screen nothing late can wipe a rating or a note the
        # labeler has started on it.
        self.likert.value = None
        for box in (self.hallucination, self.unsafe, self.refusal):
            box.value = False
        self.prompt_quality.value = "good"
        self.notes.value = ""
        item = self.items[self.index]
        self.prompt.value = f"<b>Prompt:</b> {html.escape(item['prompt'])}"
        self.response_a.value = f"<b>A</b><br>{html.escape(item['response_a'])}"
        self.response_b.value = f"<b>B</b><br>{html.escape(item['response_b'])}"
        self.progress.value = f"Item {self.index + 1} of {n} · labeler <code>{html.escape(self.labeler)}</code>"

    def _on_submit(self, _button: W.Button | None = None) -> None:
        # A click in the browser reaches the kernel right behind the form's last change (the note is
        # sent when its field loses focus, that is, as the labeler clicks Submit). ipykernel 7 can
        # handle a widget message while it is still applying the one before, so the click could read
        # the form without that change and store the label without its note. Saving a moment later
        # lets every change sent before the click land first. Code that calls ``submit.click()``
        # saves at once.
        if self._save_pending:
            return
        loop = _running_loop()
        if loop is not None and _handling_browser_message():
            self._save_pending = True
            loop.call_later(BROWSER_SETTLE_S, self._save_from_browser)
            return
        self._save()

    def _save_from_browser(self) -> None:
        self._save_pending = False
        self._save()

    def _save(self) -> None:
        if self.done:
            self.message.value = "Nothing left to label."
            return
        if self.likert.value is None:
            self.message.value = "<span style='color:#b00'>Pick a rating from 1 to 8 first.</span>"
            return
        item = self.items[self.index]
        try:
            label_id = self.store.add_label(
                prompt=item["prompt"], response_a=item["response_a"], response_b=item["response_b"],
                likert=int(self.likert.value), labeler=self.labeler, prompt_quality=self.prompt_quality.value,
                notes=self.notes.value, **{f: bool(getattr(self, f).value) for f in FLAGS})
        except (LabelError, sqlite3.Error) as error:
            # a button callback's exception only reaches a log; show it where the labeler looks
            self.message.value = (f"<span style='color:#b00'>Item {self.index + 1} was not saved: "
                                  f"{html.escape(str(error))}</span>")
            return
        self.saved_ids.append(label_id)
        self._labelled.add(_key(item))
        self.index = self._next_unlabelled(self.index + 1)
        self._show()
        # last: a page that shows this confirmation already shows the next pair with its controls reset
        self.message.value = f"Saved label #{label_id}."

    def _ipython_display_(self) -> None:
        display(self.ui)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _handling_browser_message() -> bool:
    """Whether the kernel is handling a widget message from the browser (a click), not a cell's code."""
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # an ipykernel that keeps a single parent
        parent = kernel.get_parent()
    return (parent or {}).get("header", {}).get("msg_type") == "comm_msg"


def _key(item: dict[str, Any]) -> tuple[str, str, str]:
    return item["prompt"], item["response_a"], item["response_b"]

"""An append-only label store for pairwise preference labels, on SQLite.

Real annotation tools keep every judgement, never overwrite one, and survive a crash. This store
does the same with Python's built-in ``sqlite3`` (the real embedded database, one file):

* **append-only**: labels are inserted, never updated or deleted. Triggers make the database
  itself refuse ``UPDATE`` and ``DELETE`` on the table, whoever connects to the file.
* **one transaction per label**: ``add_label`` commits before it returns, so a kernel that dies
  afterwards loses nothing; a label that fails validation writes nothing.
* **WAL mode** (write-ahead logging): readers in other processes see every committed label and
  do not block the labeler that is writing.

The 1–8 Likert scale has no middle point (1 = A much better … 4 = A slightly better,
5 = B slightly better … 8 = B much better), so every label picks a side and ``export_jsonl`` can
always write the ``prompt``/``chosen``/``rejected`` format that ``data.load_preferences`` reads.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LIKERT_MIN, LIKERT_MAX, LIKERT_MIDPOINT = 1, 8, 4
PROMPT_QUALITY = ("good", "unclear", "harmful", "nonsense")
FLAGS = ("hallucination", "unsafe", "refusal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    labeler TEXT NOT NULL,
    prompt TEXT NOT NULL,
    response_a TEXT NOT NULL,
    response_b TEXT NOT NULL,
    likert INTEGER NOT NULL CHECK (likert BETWEEN 1 AND 8),
    hallucination INTEGER NOT NULL DEFAULT 0 CHECK (hallucination IN (0, 1)),
    unsafe INTEGER NOT NULL DEFAULT 0 CHECK (unsafe IN (0, 1)),
    refusal INTEGER NOT NULL DEFAULT 0 CHECK (refusal IN (0, 1)),
    prompt_quality TEXT NOT NULL DEFAULT 'good',
    notes TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS labels_no_update BEFORE UPDATE ON labels
BEGIN SELECT RAISE(ABORT, 'labels are append-only: UPDATE is not allowed'); END;
CREATE TRIGGER IF NOT EXISTS labels_no_delete BEFORE DELETE ON labels
BEGIN SELECT RAISE(ABORT, 'labels are append-only: DELETE is not allowed'); END;
"""
COLUMNS = ("id", "created_at", "labeler", "prompt", "response_a", "response_b", "likert",
           *FLAGS, "prompt_quality", "notes")


class LabelError(ValueError):
    """A label that cannot be stored as given; the message names the field."""


@dataclass(frozen=True)
class Label:
    """One stored judgement (a row of the ``labels`` table)."""

    id: int
    created_at: str
    labeler: str
    prompt: str
    response_a: str
    response_b: str
    likert: int
    hallucination: bool
    unsafe: bool
    refusal: bool
    prompt_quality: str
    notes: str

    @property
    def prefers_a(self) -> bool:
        return self.likert <= LIKERT_MIDPOINT


class LabelStore:
    """Pairwise labels in a SQLite file (default ``./labels.sqlite``); see the module docstring."""

    def __init__(self, path: str | Path = "labels.sqlite") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each write below opens and commits its own
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # a committed label survives power loss too
            self._conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            self._conn.close()
            raise LabelError(f"{self.path}: not a label store ({error})") from None

    # -- writing -------------------------------------------------------------------------------
    def add_label(self, *, prompt: str, response_a: str, response_b: str, likert: int, labeler: str = "anonymous",
                  hallucination: bool = False, unsafe: bool = False, refusal: bool = False,
                  prompt_quality: str = "good", notes: str = "") -> int:
        """Validate and store one label in its own committed transaction; return its id."""
        for name, value in (("prompt", prompt), ("response_a", response_a), ("response_b", response_b),
                            ("labeler", labeler)):
            if not isinstance(value, str) or not value.strip():
                raise LabelError(f"{name} must be a non-empty string, got {value!r}")
        if response_a == response_b:
            raise LabelError("response_a and response_b are identical; a comparison needs two different responses")
        if isinstance(likert, bool) or not isinstance(likert, int) or not LIKERT_MIN <= likert <= LIKERT_MAX:
            raise LabelError(f"likert must be an integer from {LIKERT_MIN} (A much better) to {LIKERT_MAX} "
                             f"(B much better), got {likert!r}")
        for name, value in (("hallucination", hallucination), ("unsafe", unsafe), ("refusal", refusal)):
            if not isinstance(value, bool):
                raise LabelError(f"{name} must be True or False, got {value!r}")
        if prompt_quality not in PROMPT_QUALITY:
            raise LabelError(f"prompt_quality must be one of {PROMPT_QUALITY}, got {prompt_quality!r}")
        if not isinstance(notes, str):
            raise LabelError(f"notes must be a string, got {type(notes).__name__}")
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._transaction():
            cursor = self._conn.execute(
                "INSERT INTO labels (created_at, labeler, prompt, response_a, response_b, likert, "
                "hallucination, unsafe, refusal, prompt_quality, notes) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (created, labeler, prompt, response_a, response_b, likert, int(hallucination), int(unsafe),
                 int(refusal), prompt_quality, notes))
        return int(cursor.lastrowid)

    def _transaction(self):
        conn = self._conn

        class _Tx:
            def __enter__(self) -> None:
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb) -> bool:
                conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False

        return _Tx()

    # -- reading -------------------------------------------------------------------------------
    def labels(self) -> list[Label]:
        """Every stored label, oldest first."""
        rows = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM labels ORDER BY id").fetchall()
        return [Label(*row[:7], *(bool(v) for v in row[7:10]), *row[10:]) for row in rows]

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0])

    def to_records(self) -> list[dict[str, Any]]:
        """Labels as ``prompt``/``chosen``/``rejected`` records (the side the Likert rating prefers).

        ``likert`` is re-expressed from the chosen side (1 = much better … 4 = slightly better), as
        in ``data.make_preference_pairs``; the flags describe the labelled pair.
        """
        out = []
        for lab in self.labels():
            a_wins = lab.prefers_a
            chosen, rejected = (lab.response_a, lab.response_b) if a_wins else (lab.response_b, lab.response_a)
            out.append({"prompt": lab.prompt, "chosen": chosen, "rejected": rejected, "labeler": lab.labeler,
                        "likert": lab.likert if a_wins else LIKERT_MAX + 1 - lab.likert,
                        "label_id": lab.id, "created_at": lab.created_at,
                        "flags": {f: getattr(lab, f) for f in FLAGS},
                        "prompt_quality": lab.prompt_quality, "notes": lab.notes})
        return out

    def export_jsonl(self, path: str | Path) -> Path:
        """Write every label as one JSON line in the preference format; returns the path."""
        records = self.to_records()
        if not records:
            raise LabelError(f"{self.path}: the store holds no labels; nothing to export")
        path = Path(path)
        store_files = {self.path.resolve(), *(Path(f"{self.path.resolve()}{s}") for s in ("-wal", "-shm", "-journal"))}
        if path.resolve() in store_files:
            raise LabelError(f"{path}: that is the label store's own database; export to another file")
        path.parent.mkdir(parents=True, exist_ok=True)
        # write beside the target, then rename: a crash mid-export never leaves a half-written file
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r}, {len(self)} labels)"

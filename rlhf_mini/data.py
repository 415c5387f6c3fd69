"""Preference data: generate it from a world and its labelers, store it as JSONL, load it safely.

Records use the standard columns ``prompt``, ``chosen``, ``rejected`` (TRL's explicit-prompt
format), plus metadata: the world, the labeler, its 1–8 Likert rating, the gold utilities and
the InstructGPT-style flags of both responses.

    python -m rlhf_mini.data build            # regenerate the files under data/

Loading validates every line first and raises ``PreferenceDataError`` naming the file, the line
and the field, so that nothing is silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import json
import math
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2  # transformers' own dependency: renders the course's chat template without a tokenizer
import numpy as np
from tqdm.auto import tqdm

from rlhf_mini.labelers import SimulatedLabeler
from rlhf_mini.models import CHAT_TEMPLATE, EOS_TOKEN
from rlhf_mini.worlds import World, get_world

REQUIRED_COLUMNS = {"prompt": str, "chosen": str, "rejected": str}
OPTIONAL_COLUMNS = {"world": str, "labeler": str, "likert": int, "chosen_gold": float,
                    "rejected_gold": float, "chosen_flags": dict, "rejected_flags": dict}
# the strength of a preference, stored from the chosen side: 1 = much better … 4 = slightly better
LIKERT_MIN, LIKERT_MAX = 1, 4
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


class PreferenceDataError(ValueError):
    """A preference file that cannot be used as it is; the message names file, line and field."""


def make_preference_pairs(world: World, n_pairs: int, labelers: list[SimulatedLabeler] | None = None,
                          seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
    """``n_pairs`` labelled comparisons of two distinct responses to each prompt.

    Labelers take turns (round robin); each record says who labelled it.
    """
    labelers = labelers or [SimulatedLabeler(seed=seed)]
    rng = np.random.default_rng(seed)
    prompts = world.prompts(n_pairs, seed=seed, split=split)
    records = []
    for i, prompt in enumerate(tqdm(prompts, desc=f"labelling {world.name}", leave=False)):
        a = world.sample_response(prompt, rng)
        b = world.sample_response(prompt, rng)
        for _ in range(20):
            if a != b:
                break
            b = world.sample_response(prompt, rng)
        labeler = labelers[i % len(labelers)]
        likert = labeler.likert(world, prompt, a, b)
        a_wins = likert <= LIKERT_MIDPOINT
        chosen, rejected = (a, b) if a_wins else (b, a)
        records.append({
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "world": world.name,
            "labeler": labeler.name,
            # stored from the chosen response's side: 1 = chosen much better … 4 = slightly better
            "likert": likert if a_wins else 9 - likert,
            "chosen_gold": round(world.gold_reward(prompt, chosen), 4),
            "rejected_gold": round(world.gold_reward(prompt, rejected), 4),
            "chosen_flags": world.flags(prompt, chosen),
            "rejected_flags": world.flags(prompt, rejected),
        })
    return records


LIKERT_MIDPOINT = 4


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write one JSON object per line (UTF-8), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def validate_preference_file(path: str | Path) -> int:
    """Check every line of a preference JSONL file; return the number of records.

    Raises ``PreferenceDataError`` with ``file:line: field ...`` for: a missing file, an empty
    file, a line that is not UTF-8 or not a JSON object, a field given twice, a missing required
    column, a column of the wrong type, a gold value that is NaN or infinite, a ``likert`` outside
    1–4, or identical chosen and rejected responses. Blank lines are errors too: nothing is
    skipped silently.
    """
    path = Path(path)
    if not path.is_file():
        raise PreferenceDataError(f"{path}: no such file")
    raw_lines = path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the newline that ends the last line
    if not raw_lines:
        raise PreferenceDataError(f"{path}: the file is empty; expected one JSON object per line")
    for lineno, raw in enumerate(raw_lines, start=1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PreferenceDataError(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        if not line.strip():
            raise PreferenceDataError(f"{where}: blank line; expected a JSON object")
        try:
            record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as err:
            raise PreferenceDataError(f"{where}: not valid JSON ({err.msg})") from None
        except _DuplicateKey as err:
            raise PreferenceDataError(f"{where}: field '{err.args[0]}' appears twice") from None
        if not isinstance(record, dict):
            raise PreferenceDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for field, kind in REQUIRED_COLUMNS.items():
            if field not in record:
                raise PreferenceDataError(f"{where}: field '{field}' is missing (required: "
                                          f"{', '.join(REQUIRED_COLUMNS)})")
            if not isinstance(record[field], kind):
                raise PreferenceDataError(f"{where}: field '{field}' must be {kind.__name__}, "
                                          f"got {type(record[field]).__name__}")
        for field, kind in OPTIONAL_COLUMNS.items():
            value = record.get(field)
            ok = value is None or isinstance(value, kind) or (kind is float and isinstance(value, int))
            if not ok or (kind in (int, float) and isinstance(value, bool)):
                raise PreferenceDataError(f"{where}: field '{field}' must be {kind.__name__}, "
                                          f"got {type(value).__name__}")
            if kind is float and value is not None and not math.isfinite(value):
                raise PreferenceDataError(f"{where}: field '{field}' must be a finite number, got {value}")
        likert = record.get("likert")
        if likert is not None and not LIKERT_MIN <= likert <= LIKERT_MAX:
            raise PreferenceDataError(f"{where}: field 'likert' must be from {LIKERT_MIN} (chosen much better) "
                                      f"to {LIKERT_MAX} (chosen slightly better), got {likert}")
        if record["chosen"] == record["rejected"]:
            raise PreferenceDataError(f"{where}: fields 'chosen' and 'rejected' are identical; "
                                      "a comparison needs two different responses")
    return len(raw_lines)


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` keeps the last of two equal keys without a word; a preference line must not."""
    record = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


# --------------------------------------------------------------------------------------------
# Loading any standard preference format
# --------------------------------------------------------------------------------------------

# Where a reply starts in a transcript: HH-RLHF's "\n\nAssistant:" and the course's chat token.
ASSISTANT_MARKERS = ("\n\nAssistant:", "<|assistant|>")
USER_MARKERS = ("\n\nHuman:", "<|user|>")
QUIRKS = {
    "empty_chosen": "an empty chosen reply",
    "empty_rejected": "an empty rejected reply",
    "empty_prompt": "an empty prompt",
    "identical": "chosen identical to rejected",
    "multi_turn": "chosen and rejected diverging before the last turn (multi-turn responses)",
}
_CHUNK_ROWS = 20_000  # rows per Arrow chunk: memory holds one chunk of Python objects at a time
_QUIRK_EXAMPLES = 5
FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".csv", ".parquet", ".pq")


class PreferenceDataWarning(UserWarning):
    """Legal but unusual rows (empty replies, identical pair, early divergence): loaded and counted."""


@dataclass
class PreferenceReport:
    """What ``load_preferences`` found besides the rows: legal quirks and, with
    ``on_error="skip"``, the rows it skipped (each ``"where: why"``)."""

    source: str
    n_rows: int = 0
    quirks: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """``{"rows": n, "skipped": k, <quirk>: count, ...}`` for metrics files."""
        return {"rows": self.n_rows, "skipped": len(self.skipped),
                **{name: len(where) for name, where in self.quirks.items()}}


def _render(messages: list[dict[str, str]], tokenizer: Any, add_generation_prompt: bool) -> str:
    """Messages as text, with ``tokenizer``'s chat template or else the course's (``models.CHAT_TEMPLATE``)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return jinja2.Template(CHAT_TEMPLATE, trim_blocks=True, lstrip_blocks=True).render(
        messages=messages, add_generation_prompt=add_generation_prompt)


def _check_messages(value: list, where: str, name: str) -> list[dict[str, str]]:
    for i, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            raise PreferenceDataError(f"{where}: field '{name}': message {i} must be an object with 'role' and "
                                      f"'content', got {type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise PreferenceDataError(f"{where}: field '{name}': message {i} has no '{key}' "
                                          f"(found keys: {', '.join(sorted(message)) or 'none'})")
            if not isinstance(message[key], str):
                raise PreferenceDataError(f"{where}: field '{name}': message {i} '{key}' must be str, "
                                          f"got {type(message[key]).__name__}")
    return value


def _field(row: dict, name: str, where: str) -> str | list:
    if name not in row:
        raise PreferenceDataError(f"{where}: field '{name}' is missing (found: {', '.join(sorted(map(str, row)))}; "
                                  "need 'chosen' and 'rejected', with or without 'prompt')")
    value = row[name]
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _check_messages(value, where, name)
    raise PreferenceDataError(f"{where}: field '{name}' must be a string or a list of messages, "
                              f"got {type(value).__name__}")


def _strip_eos(text: str, tokenizer: Any) -> str:
    """Trainers add the EOS after each response themselves; a rendered one would count twice."""
    eos = getattr(tokenizer, "eos_token", None) or EOS_TOKEN
    return text[: -len(eos)] if text.endswith(eos) else text


def _turn_cut(shared: str) -> int:
    """The end of the last assistant marker inside ``shared`` (0 when there is none)."""
    cuts = [shared.rfind(m) + len(m) for m in ASSISTANT_MARKERS if shared.rfind(m) >= 0]
    return max(cuts, default=0)


def split_implicit_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """``(prompt, chosen_reply, rejected_reply)`` from two full transcripts (TRL's implicit prompt).

    The prompt is the longest common prefix cut at its last turn boundary, so that for HH-RLHF's
    ``"\\n\\nHuman: … \\n\\nAssistant:"`` transcripts it ends with ``Assistant:`` and the replies
    hold what follows. Pairs that diverge before the last turn keep multi-turn replies.
    """
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    cut = _turn_cut(chosen[:n])
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _normalize_row(row: Any, where: str, tokenizer: Any) -> tuple[dict[str, Any], list[str]]:
    """One record as string ``prompt``/``chosen``/``rejected`` plus its metadata, and its quirks."""
    if not isinstance(row, dict):
        raise PreferenceDataError(f"{where}: expected an object with 'chosen' and 'rejected', "
                                  f"got {type(row).__name__}")
    chosen, rejected = _field(row, "chosen", where), _field(row, "rejected", where)
    prompt = _field(row, "prompt", where) if "prompt" in row else None
    kinds = {type(v) for v in (prompt, chosen, rejected) if v is not None}
    if len(kinds) > 1:
        raise PreferenceDataError(f"{where}: fields mix strings and message lists; use one form for "
                                  "'prompt', 'chosen' and 'rejected'")
    multi_turn = False
    if kinds == {list}:  # conversational: render the messages with a chat template
        if prompt is None:  # implicit prompt: the shared messages, up to a reply
            n = 0
            while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
                n += 1
            while n > 0 and chosen[n - 1]["role"] == "assistant":
                n -= 1  # the prompt ends before a reply
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
            multi_turn = sum(m["role"] != "assistant" for m in chosen + rejected) > 0
        prompt_text = _render(prompt, tokenizer, add_generation_prompt=True) if prompt else ""
        texts = []
        for name, reply in (("chosen", chosen), ("rejected", rejected)):
            full = _render(prompt + reply, tokenizer, add_generation_prompt=False)
            if not full.startswith(prompt_text):
                raise PreferenceDataError(f"{where}: field '{name}': the chat template does not render the "
                                          "prompt as a prefix of prompt + reply")
            texts.append(_strip_eos(full[len(prompt_text):], tokenizer))
        prompt, (chosen, rejected) = prompt_text, texts
    elif prompt is None:
        prompt, chosen, rejected = split_implicit_prompt(chosen, rejected)
        multi_turn = any(m in reply for m in USER_MARKERS for reply in (chosen, rejected))
    quirks = [name for name, hit in (("empty_chosen", not chosen.strip()), ("empty_rejected", not rejected.strip()),
                                     ("empty_prompt", not prompt.strip()), ("identical", chosen == rejected),
                                     ("multi_turn", multi_turn)) if hit]
    meta = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **meta}, quirks


def _check_course_columns(record: dict, where: str) -> None:
    """The course's own metadata columns, when present, must have their types and ranges."""
    for name, kind in OPTIONAL_COLUMNS.items():
        value = record.get(name)
        ok = value is None or isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or (kind in (int, float) and isinstance(value, bool)):
            raise PreferenceDataError(f"{where}: field '{name}' must be {kind.__name__}, got {type(value).__name__}")
        if kind is float and value is not None and not math.isfinite(value):
            raise PreferenceDataError(f"{where}: field '{name}' must be a finite number, got {value}")
    likert = record.get("likert")
    if likert is not None and not LIKERT_MIN <= likert <= LIKERT_MAX:
        raise PreferenceDataError(f"{where}: field 'likert' must be from {LIKERT_MIN} (chosen much better) "
                                  f"to {LIKERT_MAX} (chosen slightly better), got {likert}")


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each line of a (possibly gzip-compressed) JSON-lines file, streamed."""
    opener = gzip.open if _is_gzip(path) else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                where = f"{path}:{lineno}"
                raw = raw.rstrip(b"\r\n")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    yield where, PreferenceDataError(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})")
                    continue
                if not line.strip():
                    yield where, PreferenceDataError(f"{where}: blank line; expected a JSON object")
                    continue
                try:
                    yield where, json.loads(line, object_pairs_hook=_no_duplicate_keys)
                except json.JSONDecodeError as err:
                    yield where, PreferenceDataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})")
                except _DuplicateKey as err:
                    yield where, PreferenceDataError(f"{where}: field '{err.args[0]}' appears twice")
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise PreferenceDataError(f"{path}:{lineno + 1}: the gzip stream is truncated or corrupt after line "
                                  f"{lineno} ({err}); download the file again") from None
    if lineno == 0:
        raise PreferenceDataError(f"{path}: the file is empty; expected one JSON object per line")


def _json_array_or_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """A ``.json`` file: one JSON array of objects, or JSON lines."""
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4096).lstrip()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise PreferenceDataError(f"{path}: the gzip stream is truncated or corrupt ({err})") from None
    if not head.startswith(b"["):
        yield from _json_lines(path)
        return
    try:
        with opener(path, "rb") as fh:
            rows = json.loads(fh.read().decode("utf-8"))
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise PreferenceDataError(f"{path}: the gzip stream is truncated or corrupt ({err})") from None
    except UnicodeDecodeError as err:
        raise PreferenceDataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise PreferenceDataError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    for i, row in enumerate(rows, start=1):
        yield f"{path}: row {i}", row


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                yield f"{path}:{reader.line_num}", row
        except UnicodeDecodeError as err:
            raise PreferenceDataError(f"{path}:{reader.line_num + 1}: not valid UTF-8 ({err.reason})") from None


def _table_rows(label: str, batches: Iterator[Any]) -> Iterator[tuple[str, Any]]:
    i = 0
    for batch in batches:
        for row in batch.to_pylist():
            i += 1
            yield f"{label}: row {i}", row


def _rows(source: str | Path, split: str) -> tuple[str, Iterator[tuple[str, Any]], int | None]:
    """``(label, (where, record) iterator, number of rows when known)`` for any supported source."""
    path = Path(source)
    name = path.name.lower()
    if path.is_file():
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq  # comes with datasets

            try:
                pf = pq.ParquetFile(path)
            except Exception as err:  # noqa: BLE001 (pyarrow raises several kinds for a bad file)
                raise PreferenceDataError(f"{path}: not a readable parquet file ({err})") from None
            return str(path), _table_rows(str(path), pf.iter_batches(batch_size=4096)), pf.metadata.num_rows
        if name.endswith((".csv", ".csv.gz")):
            return str(path), _csv_rows(path), None
        if name.endswith((".json", ".json.gz")):
            return str(path), _json_array_or_lines(path), None
        return str(path), _json_lines(path), None  # .jsonl, .jsonl.gz and anything else: JSON lines
    import datasets  # lazy: heavy (pyarrow, pandas), and only folders and hub names need it

    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))  # a save_to_disk folder
    elif path.is_dir() or not (path.exists() or name.endswith(FILE_SUFFIXES) or str(source).startswith((".", "/"))):
        try:
            loaded = datasets.load_dataset(str(source), split=split)  # a local data folder or a hub name
        except Exception as err:  # noqa: BLE001 (datasets raises many kinds; the message says which)
            raise PreferenceDataError(f"{source}: datasets.load_dataset could not load it "
                                      f"({type(err).__name__}: {err})") from None
    else:
        raise PreferenceDataError(f"{source}: no such file or folder (nor a hub name such as 'Anthropic/hh-rlhf')")
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise PreferenceDataError(f"{source}: no split {split!r} (found: {', '.join(loaded)})")
        loaded = loaded[split]
    table = loaded.with_format("arrow")
    batches = (table[i:i + 4096] for i in range(0, len(loaded), 4096))
    return str(source), _table_rows(str(source), batches), len(loaded)


def load_preferences_with_report(source: str | Path, *, split: str = "train", tokenizer: Any = None,
                                 on_error: str = "raise", progress: bool = True):
    """``load_preferences`` and the ``PreferenceReport`` of what it found (for metrics files)."""
    import datasets  # lazy: heavy (pyarrow, pandas)
    import pyarrow as pa

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    label, rows, total = _rows(source, split)
    report = PreferenceReport(source=label)
    tables, chunk = [], []
    for where, row in tqdm(rows, total=total, desc=f"loading {Path(label).name}", unit=" rows",
                           disable=not progress, leave=False, mininterval=1.0):
        try:
            if isinstance(row, PreferenceDataError):
                raise row
            record, quirks = _normalize_row(row, where, tokenizer)
            _check_course_columns(record, where)
        except PreferenceDataError as err:
            if on_error == "raise":
                raise
            report.skipped.append(str(err))
            continue
        for quirk in quirks:
            report.quirks.setdefault(quirk, []).append(where)
        chunk.append(record)
        if len(chunk) >= _CHUNK_ROWS:
            tables.append(pa.Table.from_pylist(chunk))
            chunk = []
    if chunk:
        tables.append(pa.Table.from_pylist(chunk))
    report.n_rows = sum(t.num_rows for t in tables)
    if not report.n_rows:
        raise PreferenceDataError(f"{label}: no usable rows" + (f" ({len(report.skipped)} skipped; the first: "
                                                                f"{report.skipped[0]})" if report.skipped else ""))
    if report.skipped:
        shown = "; ".join(report.skipped[:_QUIRK_EXAMPLES])
        warnings.warn(f"{label}: skipped {len(report.skipped)} bad rows (on_error='skip'): {shown}"
                      + (" …" if len(report.skipped) > _QUIRK_EXAMPLES else ""), PreferenceDataWarning, stacklevel=2)
    for quirk, places in report.quirks.items():
        shown = ", ".join(w.rsplit(":", 1)[-1].strip() if ": row" not in w else w.rsplit(": ", 1)[-1]
                          for w in places[:_QUIRK_EXAMPLES])
        warnings.warn(f"{label}: {len(places)} of {report.n_rows} pairs have {QUIRKS[quirk]} (line/row {shown}"
                      + (", …" if len(places) > _QUIRK_EXAMPLES else "") + "); loaded as they are",
                      PreferenceDataWarning, stacklevel=2)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return datasets.Dataset(table), report


def load_preferences(source: str | Path, *, split: str = "train", tokenizer: Any = None, on_error: str = "raise",
                     progress: bool = True):
    """Load preference pairs from any standard format into a ``datasets.Dataset`` with string
    ``prompt``, ``chosen`` and ``rejected`` columns (plus the source's other columns, kept).

    ``source``: a ``.jsonl``, ``.json`` (an array or JSON lines), ``.parquet`` or ``.csv`` file, any
    of the text ones gzip-compressed (``.jsonl.gz``, as HH-RLHF ships); a folder written by
    ``Dataset.save_to_disk``; or a name for ``datasets.load_dataset(name, split=split)`` (a local
    data folder, or a hub name where there is a network).

    Records may be TRL's explicit-prompt form (``prompt``, ``chosen``, ``rejected``) or its
    implicit-prompt form (``chosen`` and ``rejected`` only: the prompt is the shared prefix cut at
    the last turn boundary, ``split_implicit_prompt``), each with strings or with lists of
    ``{"role", "content"}`` messages, rendered with ``tokenizer``'s chat template when given, else
    the course's.

    Every row loads, or ``PreferenceDataError`` names the first bad one (file, line or row, field,
    what was found). ``on_error="skip"`` skips bad rows instead and warns how many and which.
    Legal quirks (empty replies, identical pairs, empty prompts, pairs diverging before the last
    turn) load as they are, with a ``PreferenceDataWarning`` that counts them and names a few lines.
    Files are read as a stream, one chunk of rows at a time, behind a progress bar.
    """
    dataset, _ = load_preferences_with_report(source, split=split, tokenizer=tokenizer, on_error=on_error,
                                              progress=progress)
    return dataset


def check_pairs(pairs: Any) -> list[dict[str, str]]:
    """Validate preference pairs (a list of dicts or a ``datasets.Dataset``) and return plain
    ``prompt``/``chosen``/``rejected`` dicts."""
    rows = [dict(r) for r in pairs] if not isinstance(pairs, list) else pairs
    if not rows:
        raise ValueError("no preference pairs given: pass records with 'prompt', 'chosen' and 'rejected'")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"preference pair {i}: expected a dict, got {type(row).__name__}")
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"preference pair {i}: field '{key}' is missing or not a string")
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def preference_file(task: str, split: str) -> Path:
    """The shipped ``data/{task}_prefs_{split}.jsonl``."""
    path = DATA_DIR / f"{task}_prefs_{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"no preference data for task {task!r}: {path} does not exist")
    return path


def preference_pairs(task: str, n: int, split: str = "train") -> list[dict[str, str]]:
    """The first ``n`` shipped gold-labelled pairs of ``task`` (generated when no file ships).

    Their responses come from the world's own writers, not from the SFT policy: off-policy data.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    path = DATA_DIR / f"{task}_prefs_{split}.jsonl"
    if not path.is_file():
        return check_pairs(make_preference_pairs(get_world(task), n, seed=0, split=split))
    rows = check_pairs(load_preferences(path))
    if n > len(rows):
        raise ValueError(f"{path}: asked for {n} pairs, but the file has {len(rows)}")
    return rows[:n]


def default_files() -> dict[str, dict[str, Any]]:
    """The preference files shipped under data/ and how each one is made."""
    return {
        "assistant_prefs_train.jsonl": {"world": "assistant", "n": 2000, "seed": 0, "split": "train"},
        "assistant_prefs_test.jsonl": {"world": "assistant", "n": 500, "seed": 1, "split": "test"},
        "sentiment_prefs_train.jsonl": {"world": "sentiment", "n": 2000, "seed": 2, "split": "train"},
        "sentiment_prefs_test.jsonl": {"world": "sentiment", "n": 500, "seed": 3, "split": "test"},
    }


def build_default_files(out_dir: Path = DATA_DIR) -> list[Path]:
    """Regenerate data/*.jsonl deterministically (gold labeler, temperature 0.5)."""
    written = []
    for filename, spec in default_files().items():
        world = get_world(spec["world"])
        labeler = SimulatedLabeler(seed=spec["seed"])
        records = make_preference_pairs(world, spec["n"], [labeler], seed=spec["seed"], split=spec["split"])
        written.append(write_jsonl(records, out_dir / filename))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlhf_mini.data")
    parser.add_argument("command", choices=["build", "check"])
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    if args.command == "build":
        for path in build_default_files(args.out):
            print(f"wrote {path}")
    else:
        for filename in default_files():
            print(f"{filename}: {validate_preference_file(args.out / filename)} records")


if __name__ == "__main__":
    main()

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
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rlhf_mini.labelers import SimulatedLabeler
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


def load_preferences(path: str | Path):
    """Validate ``path`` line by line, then load it with ``datasets`` (a ``datasets.Dataset``).

    A hub data set works the same way for users with network access:
    ``datasets.load_dataset("Anthropic/hh-rlhf")`` gives ``chosen``/``rejected`` columns too.
    """
    import datasets  # lazy: heavy (pyarrow, pandas), and only loading a file needs it

    n = validate_preference_file(path)
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    if len(dataset) != n:
        raise PreferenceDataError(f"{path}: validated {n} records but datasets loaded {len(dataset)}")
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

import json

import pytest

from rlhf_mini.data import (
    DATA_DIR,
    PreferenceDataError,
    build_default_files,
    default_files,
    load_preferences,
    make_preference_pairs,
    validate_preference_file,
    write_jsonl,
)
from rlhf_mini.labelers import persona_labelers
from rlhf_mini.worlds import get_world

GOOD = {"prompt": "p", "chosen": "a", "rejected": "b"}


def test_generated_pairs_have_standard_columns_and_agree_with_gold():
    world = get_world("assistant")
    records = make_preference_pairs(world, 300, seed=5)
    assert all(r["chosen"] != r["rejected"] for r in records)
    assert {"prompt", "chosen", "rejected", "likert", "chosen_gold", "rejected_gold"} <= set(records[0])
    agree = sum(r["chosen_gold"] > r["rejected_gold"] for r in records) / len(records)
    assert agree > 0.75
    assert all(1 <= r["likert"] <= 4 for r in records)  # stored from the chosen side


def test_persona_round_robin():
    world = get_world("assistant")
    records = make_preference_pairs(world, 8, persona_labelers(world), seed=0)
    assert [r["labeler"] for r in records[:4]] == ["helpful", "harmless", "friendly", "terse"]


def test_write_and_load_roundtrip(tmp_path):
    records = make_preference_pairs(get_world("sentiment"), 50, seed=1)
    path = write_jsonl(records, tmp_path / "prefs.jsonl")
    ds = load_preferences(path)
    assert len(ds) == 50
    assert ds[0]["prompt"] == records[0]["prompt"] and ds[7]["chosen"] == records[7]["chosen"]


def test_shipped_files_are_what_the_code_makes(tmp_path):
    build_default_files(tmp_path)
    for filename in default_files():
        assert (tmp_path / filename).read_bytes() == (DATA_DIR / filename).read_bytes(), filename


def _write(tmp_path, lines: list[bytes]):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(
    "lines, message",
    [
        ([json.dumps(GOOD).encode(), json.dumps({"prompt": "p", "chosen": "a"}).encode()],
         r"bad.jsonl:2: field 'rejected' is missing"),
        ([json.dumps({**GOOD, "chosen": 3}).encode()], r"bad.jsonl:1: field 'chosen' must be .*, got int"),
        ([json.dumps(GOOD).encode(), b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}'],
         r"bad.jsonl:2: not valid UTF-8"),
        ([b"{not json"], r"bad.jsonl:1: not valid JSON"),
        ([b"[1, 2]"], r"bad.jsonl:1: expected a.* object.*, got list"),
        ([json.dumps(GOOD).encode(), b"", json.dumps(GOOD).encode()], r"bad.jsonl:2: blank line"),
        ([json.dumps({**GOOD, "likert": "3"}).encode()], r"bad.jsonl:1: field 'likert' must be int"),
        ([json.dumps(GOOD).encode(), json.dumps({**GOOD, "likert": 9}).encode()],
         r"bad.jsonl:2: field 'likert' must be from 1"),
        ([json.dumps({**GOOD, "likert": True}).encode()], r"bad.jsonl:1: field 'likert' must be int, got bool"),
        ([json.dumps({**GOOD, "chosen_gold": float("nan")}).encode()],
         r"bad.jsonl:1: field 'chosen_gold' must be a finite number"),
        ([json.dumps({**GOOD, "rejected_gold": True}).encode()], r"bad.jsonl:1: field 'rejected_gold' must be float"),
        ([b'{"prompt": "p", "chosen": "a", "chosen": "z", "rejected": "b"}'], r"bad.jsonl:1: field 'chosen' appears twice"),
    ],
)
def test_bad_preference_files_name_file_line_and_field(tmp_path, lines, message):
    path = _write(tmp_path, lines)
    with pytest.raises(PreferenceDataError, match=message):
        load_preferences(path)
    with pytest.raises(PreferenceDataError, match=message):
        validate_preference_file(path)


def test_identical_pairs_fail_the_course_check_but_load_with_a_warning(tmp_path):
    # the course's own files never hold one; real data sets do, and a loader must not drop them
    path = _write(tmp_path, [json.dumps({**GOOD, "rejected": GOOD["chosen"]}).encode()])
    with pytest.raises(PreferenceDataError, match=r"bad.jsonl:1: fields 'chosen' and 'rejected' are identical"):
        validate_preference_file(path)
    with pytest.warns(UserWarning, match=r"1 of 1 pairs have chosen identical to rejected \(line/row 1\)"):
        assert len(load_preferences(path)) == 1


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(PreferenceDataError, match="empty.jsonl: the file is empty"):
        validate_preference_file(empty)
    with pytest.raises(PreferenceDataError, match="no such file"):
        validate_preference_file(tmp_path / "nope.jsonl")

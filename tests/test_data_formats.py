"""``load_preferences`` on every standard preference format, and its messages for bad input.

Every file here is written by the test itself; nothing touches the network.
"""

import copy
import gzip
import json
import warnings

import pytest

from rlhf_mini import data
from rlhf_mini.data import (
    PreferenceDataError,
    load_preferences,
    load_preferences_with_report,
    split_implicit_prompt,
)

HH = [  # HH-RLHF as downloaded: transcripts only, the prompt implicit in both
    {"chosen": "\n\nHuman: What is a comet?\n\nAssistant: A ball of ice and dust.",
     "rejected": "\n\nHuman: What is a comet?\n\nAssistant: No idea."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: Why did the owl…",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: No."},
]
EXPLICIT = [{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven.", "source": "mine", "score": 0.5},
            {"prompt": "Name a fruit.", "chosen": "A pear.", "rejected": "A chair.", "source": "mine", "score": 1.5}]
CONVERSATIONAL = [{"prompt": [{"role": "user", "content": "Name a colour."}],
                   "chosen": [{"role": "assistant", "content": "Blue."}],
                   "rejected": [{"role": "assistant", "content": "Seven."}]}]
IMPLICIT_CONVERSATIONAL = [{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
                            "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go."}]}]


def _jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_hh_rlhf_implicit_prompt_gzip(tmp_path):
    ds = load_preferences(_jsonl(tmp_path / "hh.jsonl.gz", HH, gz=True))
    assert ds[0] == {"prompt": "\n\nHuman: What is a comet?\n\nAssistant:", "chosen": " A ball of ice and dust.",
                     "rejected": " No idea."}
    # a multi-turn transcript: the prompt holds every earlier turn and ends at the last "Assistant:"
    assert ds[1]["prompt"].endswith("Tell me a joke.\n\nAssistant:") and ds[1]["prompt"].count("Human:") == 2
    assert (ds[1]["chosen"], ds[1]["rejected"]) == (" Why did the owl…", " No.")


def test_gzip_is_detected_by_content_not_name(tmp_path):
    ds = load_preferences(_jsonl(tmp_path / "hh.jsonl", HH, gz=True))
    assert len(ds) == 2 and ds[0]["chosen"] == " A ball of ice and dust."


def test_split_implicit_prompt_without_turn_markers_gives_an_empty_prompt():
    assert split_implicit_prompt("The sky is blue.", "The sky is green.") == ("", "The sky is blue.",
                                                                               "The sky is green.")


def test_explicit_standard_keeps_metadata_in_json_and_jsonl(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(EXPLICIT))
    for path in (tmp_path / "a.json", _jsonl(tmp_path / "a.jsonl", EXPLICIT), _jsonl(tmp_path / "a.json.gz", EXPLICIT, gz=True)):
        ds = load_preferences(path)
        assert ds.column_names[:3] == ["prompt", "chosen", "rejected"]
        assert ds[1] == EXPLICIT[1], path


def test_conversational_explicit_and_implicit_use_the_course_template(tmp_path):
    ds = load_preferences(_jsonl(tmp_path / "c.jsonl", CONVERSATIONAL))
    # rendered as the course's chat format; the trainers add the closing EOS themselves
    assert ds[0] == {"prompt": "<|user|>Name a colour.\n<|assistant|>", "chosen": "Blue.", "rejected": "Seven."}
    ds = load_preferences(_jsonl(tmp_path / "i.jsonl", IMPLICIT_CONVERSATIONAL))
    assert ds[0] == {"prompt": "<|user|>Hi\n<|assistant|>", "chosen": "Hello.", "rejected": "Go."}


def test_conversational_with_a_tokenizers_own_template(tmp_path, tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}### assistant:{% endif %}")
    ds = load_preferences(_jsonl(tmp_path / "c.jsonl", CONVERSATIONAL), tokenizer=tok)
    assert ds[0]["prompt"] == "### user: Name a colour.\n### assistant:"
    assert ds[0]["chosen"] == " Blue.\n"


def test_parquet_csv_save_to_disk_and_load_dataset_folder(tmp_path):
    import datasets

    source = datasets.Dataset.from_list(EXPLICIT)
    source.to_parquet(str(tmp_path / "p.parquet"))
    source.to_csv(str(tmp_path / "p.csv"), index=False)
    source.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": source, "test": source.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    (tmp_path / "folder").mkdir()
    _jsonl(tmp_path / "folder" / "train.jsonl", EXPLICIT)
    for path in ("p.parquet", "p.csv", "saved", "saved_dict", "folder"):
        ds = load_preferences(tmp_path / path)
        assert [r["chosen"] for r in ds] == ["Blue.", "A pear."], path
        assert ds[1]["source"] == "mine", path
    assert len(load_preferences(tmp_path / "saved_dict", split="test")) == 1
    with pytest.raises(PreferenceDataError, match=r"saved_dict: no split 'dev' \(found: train, test\)"):
        load_preferences(tmp_path / "saved_dict", split="dev")


def test_large_files_load_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_CHUNK_ROWS", 7)
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}", "w": i if i < 10 else i + 0.5}
            for i in range(30)]
    ds = load_preferences(_jsonl(tmp_path / "big.jsonl", rows))
    assert len(ds) == 30 and ds[29]["chosen"] == "c29" and ds[29]["w"] == 29.5


def test_legal_quirks_load_and_are_counted_with_line_numbers(tmp_path):
    rows = [HH[0],
            {"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello."},  # empty chosen
            {"chosen": "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant: D",                 # early divergence
             "rejected": "\n\nHuman: A\n\nAssistant: E\n\nHuman: F\n\nAssistant: G"},
            {"prompt": "", "chosen": "x", "rejected": "y"},                                          # empty prompt
            {"prompt": "p", "chosen": "same", "rejected": "same"}]                                   # identical
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, report = load_preferences_with_report(_jsonl(tmp_path / "q.jsonl", rows))
    assert len(ds) == 5  # nothing dropped
    assert report.counts() == {"rows": 5, "skipped": 0, "empty_chosen": 1, "multi_turn": 1, "empty_prompt": 1,
                               "identical": 1}
    assert ds[2] == {"prompt": "\n\nHuman: A\n\nAssistant:", "chosen": " B\n\nHuman: C\n\nAssistant: D",
                     "rejected": " E\n\nHuman: F\n\nAssistant: G"}
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 of 5 pairs have an empty chosen reply (line/row 2)" in messages
    assert "diverging before the last turn (multi-turn responses) (line/row 3)" in messages
    assert "an empty prompt (line/row 4)" in messages and "chosen identical to rejected (line/row 5)" in messages


GOOD = json.dumps(EXPLICIT[0])


@pytest.mark.parametrize("lines, message", [
    ([GOOD, json.dumps({"prompt": "p", "chosen": "a"})],
     r"bad.jsonl:2: field 'rejected' is missing \(found: chosen, prompt; need 'chosen' and 'rejected'"),
    ([json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"})],
     r"bad.jsonl:1: field 'chosen' must be a string or a list of messages, got int"),
    ([GOOD, '["p", "a", "b"]'], r"bad.jsonl:2: expected an object with 'chosen' and 'rejected', got list"),
    ([GOOD, GOOD, '{"prompt": "p", "chosen": "a",'], r"bad.jsonl:3: not valid JSON \(Expecting"),
    ([json.dumps({"prompt": [{"content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
                  "rejected": [{"role": "assistant", "content": "b"}]})],
     r"bad.jsonl:1: field 'prompt': message 1 has no 'role' \(found keys: content\)"),
    ([json.dumps({"chosen": [{"role": "user", "content": "hi"}, "hello"], "rejected": []})],
     r"bad.jsonl:1: field 'chosen': message 2 must be an object with 'role' and 'content', got str"),
    ([json.dumps({"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"})],
     r"bad.jsonl:1: fields mix strings and message lists"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PreferenceDataError, match=message):
        load_preferences(path)


def test_truncated_gzip_names_the_file_and_where_it_stopped(tmp_path):
    path = _jsonl(tmp_path / "hh.jsonl.gz", HH * 200, gz=True)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(PreferenceDataError, match=r"hh.jsonl.gz:\d+: the gzip stream is truncated or corrupt "
                                                  r"after line \d+ .*download the file again"):
        load_preferences(path)


def test_bad_rows_in_parquet_and_csv_name_the_row_or_line(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "answer": "b"}]).to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(PreferenceDataError, match=r"x.parquet: row 1: field 'rejected' is missing \(found: answer"):
        load_preferences(tmp_path / "x.parquet")
    (tmp_path / "x.csv").write_text("prompt,chosen,rejected\np,a,b\np,a\n")
    with pytest.raises(PreferenceDataError, match=r"x.csv:3: field 'rejected' must be a string .* got NoneType"):
        load_preferences(tmp_path / "x.csv")


def test_missing_sources_are_named(tmp_path):
    with pytest.raises(PreferenceDataError, match=r"nope.jsonl.gz: no such file or folder"):
        load_preferences(tmp_path / "nope.jsonl.gz")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(PreferenceDataError, match=r"empty.jsonl: the file is empty"):
        load_preferences(tmp_path / "empty.jsonl")


def test_skip_reports_how_many_and_which(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([GOOD, "{oops", GOOD, json.dumps({"chosen": "a"}), GOOD]) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 2 bad rows \(on_error='skip'\): .*bad.jsonl:2: not valid JSON.*"
                                         r"bad.jsonl:4: field 'rejected' is missing"):
        ds, report = load_preferences_with_report(path, on_error="skip")
    assert len(ds) == 3 and report.counts()["skipped"] == 2
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        load_preferences(path, on_error="ignore")


def test_the_shipped_real_text_file_loads_clean():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no quirks in the course's own file
        ds, report = load_preferences_with_report(data.DATA_DIR / "helpful_prefs.jsonl.gz", progress=False)
    assert report.counts() == {"rows": 312, "skipped": 0}
    assert all(p.startswith("\n\nHuman: ") and p.endswith("\n\nAssistant:") for p in ds["prompt"])
    assert (data.DATA_DIR / "helpful_prefs.LICENSE.md").read_text().startswith("# data/helpful_prefs")

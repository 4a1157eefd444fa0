"""Manifests: JSONL round trip, field validation, and scoring dispatch per task."""

import json

import pytest

from evaluators import manifest

ASR_RECORDS = [
    {
        "id": "a1",
        "duration_s": 4.0,
        "latency_s": 0.5,
        "reference": "The colour is red.",
        "prediction": "the color is red",
        "verdict": {"note": "free field"},
    },
    {
        "id": "a2",
        "duration_s": 6.0,
        "latency_s": 0.5,
        "reference": "twenty five cats",
        "prediction": "25 hats",
    },
]


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "asr.jsonl"
    manifest.write_manifest(path, ASR_RECORDS)
    assert manifest.read_manifest(path) == ASR_RECORDS
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert [p.name for p in path.parent.iterdir()] == ["asr.jsonl"]  # no temp file left


def test_write_replaces_atomically_and_rejects_bad_records(tmp_path):
    path = tmp_path / "m.jsonl"
    manifest.write_manifest(path, ASR_RECORDS)
    bad = [ASR_RECORDS[0], {"id": "x", "prediction": "p"}]
    with pytest.raises(ValueError, match="record 1"):
        manifest.write_manifest(path, bad)
    assert manifest.read_manifest(path) == ASR_RECORDS  # old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


def test_missing_field_names_line_and_key(tmp_path):
    path = tmp_path / "m.jsonl"
    record = {k: v for k, v in ASR_RECORDS[1].items() if k != "latency_s"}
    path.write_text(json.dumps(ASR_RECORDS[0]) + "\n\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:3: missing required field\(s\) 'latency_s'"):
        manifest.read_manifest(path)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(ASR_RECORDS[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:2: invalid JSON"):
        manifest.read_manifest(path)


def test_score_asr_manifest_with_rtfx(tmp_path):
    path = manifest.write_manifest(tmp_path / "asr.jsonl", ASR_RECORDS)
    result = manifest.score_manifest(path, "asr")
    # normalised: "the color is red" exact; "25 cats" vs "25 hats": 1 sub; 6 words
    assert result["wer"] == pytest.approx(100 / 6)
    assert result["rtfx"] == pytest.approx(10.0)
    assert result["num_samples"] == 2


def test_score_aqa_records_with_kinds():
    base = {"duration_s": 1.0, "latency_s": 0.1}
    records = [
        {**base, "id": "q1", "kind": "yes_no", "reference": "yes", "prediction": "Yeah."},
        {
            **base,
            "id": "q2",
            "kind": "open",
            "reference": ["three", "3", "four"],
            "prediction": "3",
        },
        {
            **base,
            "id": "q3",
            "kind": "multiple_choice",
            "choices": ["a dog", "a cat"],
            "reference": "a cat",
            "prediction": "dog",
        },
    ]
    result = manifest.score_manifest(records, "aqa")
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["accuracy_majority"] == pytest.approx(2 / 3)
    assert result["accuracy_multiple_choice"] == 0.0


def test_score_fc_records():
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "required": ["a"],
            },
        },
    }
    base = {"duration_s": 1.0, "latency_s": 0.1, "reference": "", "tools": [tool]}
    records = [
        {**base, "id": "1", "prediction": "f(a=1)", "expected_calls": [{"name": "f", "arguments": {"a": [1]}}]},
        {**base, "id": "2", "prediction": "f(a=2)", "expected_calls": [], "category": "irrelevance"},
    ]  # fmt: skip
    result = manifest.score_manifest(records, "fc")
    assert result["accuracy"] == 0.5
    assert result["accuracy_simple"] == 1.0
    assert result["accuracy_irrelevance"] == 0.0


def test_unknown_task_and_bad_records():
    with pytest.raises(ValueError, match="unknown task"):
        manifest.score_manifest(ASR_RECORDS, "translation")
    with pytest.raises(ValueError, match="record 0: missing required field"):
        manifest.score_manifest([{"id": "1"}], "asr")

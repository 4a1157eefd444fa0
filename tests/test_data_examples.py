"""Manifest format: round trip, relative paths, validation errors naming line and key."""

from __future__ import annotations

import json

import pytest

from steermoe.data.examples import Example, ManifestError, read_manifest, write_manifest


def _examples(tmp_path):
    return [
        Example("a", str(tmp_path / "audio" / "a.wav"), 1.5, "asr", "", "hello world"),
        Example(
            "b",
            str(tmp_path / "audio" / "b.wav"),
            2.0,
            "fc",
            "Tools: ...",
            '[{"name":"set_timer","arguments":{"minutes":5}}]',
            tools=[{"type": "function", "function": {"name": "set_timer", "parameters": {}}}],
            expected_calls=[{"name": "set_timer", "arguments": {"minutes": [5]}}],
            category="simple",
            voice="espeak:en-us+m1",
            meta={"k": 1},
        ),
        Example(
            "c",
            str(tmp_path / "c.wav"),
            0.7,
            "aqa",
            "Which?",
            "red",
            choices=["red", "blue"],
            kind="multiple_choice",
        ),
    ]


def test_round_trip_with_relative_paths(tmp_path):
    rows = _examples(tmp_path)
    path = write_manifest(tmp_path / "m" / "train.jsonl", rows)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["audio_path"] == "../audio/a.wav"  # relative to the manifest's folder
    assert "tools" not in lines[0]  # None optionals are left out
    assert read_manifest(path) == rows


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_manifest(tmp_path / "x.jsonl", _examples(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]


@pytest.mark.parametrize(
    ("row", "expect"),
    [
        (
            {
                "audio_path": "a.wav",
                "duration_s": 1,
                "task": "asr",
                "instruction": "",
                "target": "x",
            },
            "missing key 'id'",
        ),
        (
            {
                "id": "a",
                "audio_path": "a.wav",
                "duration_s": -1,
                "task": "asr",
                "instruction": "",
                "target": "x",
            },
            "key 'duration_s'",
        ),
        (
            {
                "id": "a",
                "audio_path": "a.wav",
                "duration_s": 1,
                "task": "tts",
                "instruction": "",
                "target": "x",
            },
            "key 'task'",
        ),
        (
            {
                "id": "a",
                "audio_path": "a.wav",
                "duration_s": 1,
                "task": "asr",
                "instruction": "",
                "target": "x",
                "colour": 1,
            },
            "unknown key 'colour'",
        ),
        (
            {
                "id": "a",
                "audio_path": "a.wav",
                "duration_s": 1,
                "task": "fc",
                "instruction": "",
                "target": "[]",
                "expected_calls": [{"name": "f", "arguments": {"x": 1}}],
            },
            "key 'expected_calls'",
        ),
        (
            {
                "id": "a",
                "audio_path": "a.wav",
                "duration_s": 1,
                "task": "aqa",
                "instruction": "",
                "target": "x",
                "kind": "essay",
            },
            "key 'kind'",
        ),
    ],
)
def test_validation_error_names_line_and_key(tmp_path, row, expect):
    good = {
        "id": "ok",
        "audio_path": "a.wav",
        "duration_s": 1.0,
        "task": "asr",
        "instruction": "",
        "target": "fine",
    }
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert "bad.jsonl:3" in str(err.value)
    assert expect in str(err.value)


def test_invalid_json_and_duplicate_ids(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:1: not valid JSON"):
        read_manifest(path)
    row = {
        "id": "a",
        "audio_path": "a.wav",
        "duration_s": 1,
        "task": "asr",
        "instruction": "",
        "target": "x",
    }
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:2: key 'id' duplicates line 1"):
        read_manifest(path)

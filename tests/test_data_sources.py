"""Source adapters on tiny folders in the public corpora's layouts, HF datasets, bad rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from steermoe.data.examples import Example, write_manifest
from steermoe.data.sources import DataError, load_examples, parse_hf_spec


def _wav(path, seconds=0.5, rate=16000, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, format=fmt)
    return path


def _librispeech(root):
    for spk, chapter, texts in [
        ("19", "198", ["HELLO WORLD", "GOOD MORNING"]),
        ("26", "495", ["ONE TWO THREE"]),
    ]:
        folder = root / spk / chapter
        lines = []
        for i, text in enumerate(texts):
            uid = f"{spk}-{chapter}-{i:04d}"
            _wav(folder / f"{uid}.flac", 0.4 + 0.1 * i)
            lines.append(f"{uid} {text}")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_layout(tmp_path):
    root = _librispeech(tmp_path / "LibriSpeech" / "test-clean")
    examples, report = load_examples(root)
    assert [e.id for e in examples] == ["19-198-0000", "19-198-0001", "26-495-0000"]
    assert examples[1].target == "GOOD MORNING" and examples[1].task == "asr"
    assert examples[1].duration_s == pytest.approx(0.5)
    assert examples[0].voice == "librispeech:19"
    assert report.loaded == 3 and report.num_skipped == 0


def test_librispeech_missing_flac_is_skipped_or_strict(tmp_path):
    root = _librispeech(tmp_path / "ls")
    (root / "26" / "495" / "26-495-0000.flac").unlink()
    examples, report = load_examples(root)
    assert len(examples) == 2
    assert report.skipped[0][0] == "26-495-0000" and "not found" in report.skipped[0][1]
    with pytest.raises(DataError, match="'26-495-0000'"):
        load_examples(root, strict=True)


def _clotho(root):
    rows = [
        ("dog.wav", "Is a dog barking?", "yes", "yes"),
        ("dog.wav", "Is a dog barking?", "yes", "yes"),
        ("dog.wav", "Is a dog barking?", "no", "maybe"),
        ("dog.wav", "What animal is heard?", "dog", "yes"),
        ("dog.wav", "What animal is heard?", "a dog", "yes"),
        ("dog.wav", "What animal is heard?", "dog", "maybe"),
        ("rain.wav", "Is it raining?", "yes", "yes"),
        ("rain.wav", "Is it raining?", "yes", "no"),
        ("rain.wav", "Is it raining?", "yes", "yes"),
    ]
    root.mkdir(parents=True)
    with open(root / "clotho_aqa_test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "QuestionText", "answer", "confidence"])
        writer.writerows(rows)
    _wav(root / "audio_files" / "dog.wav", 1.0)
    _wav(root / "audio_files" / "rain.wav", 1.0, rate=44100)
    return root


def test_clotho_aqa_layout(tmp_path):
    root = _clotho(tmp_path / "clotho")
    examples, report = load_examples(root)
    by_q = {e.instruction: e for e in examples}
    assert len(examples) == 3 and report.num_skipped == 0
    bark = by_q["Is a dog barking?"]
    assert bark.task == "aqa" and bark.target == "yes" and bark.kind == "yes_no"
    assert bark.meta["answers"] == ["yes", "yes", "no"]
    animal = by_q["What animal is heard?"]
    assert animal.target == "dog" and animal.kind == "open"
    assert animal.id == "clotho-clotho_aqa_test-dog-q2"
    # A single CSV works too, with audio_files/ next to it.
    again, _ = load_examples(root / "clotho_aqa_test.csv")
    assert [e.id for e in again] == [e.id for e in examples]


def test_audio_folder_with_sidecars(tmp_path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "a.txt").write_text("hello there\n")
    _wav(tmp_path / "sub" / "b.flac")
    (tmp_path / "sub" / "b.txt").write_text("general kenobi")
    _wav(tmp_path / "c.wav")  # no transcript
    examples, report = load_examples(tmp_path)
    assert {e.id: e.target for e in examples} == {"a": "hello there", "sub/b": "general kenobi"}
    assert report.skipped == [("c", "no transcript (expected c.txt)")]
    examples, _ = load_examples(tmp_path, unlabelled=True)
    assert len(examples) == 3


def test_manifest_bad_rows_are_counted(tmp_path):
    good = _wav(tmp_path / "audio" / "good.wav")
    _wav(tmp_path / "audio" / "long.wav", 3.0)
    _wav(tmp_path / "audio" / "tel.wav", 1.0, rate=8000)
    (tmp_path / "audio" / "text.wav").write_text("not audio at all")
    (tmp_path / "audio" / "empty.wav").write_bytes(b"")
    sf.write(
        tmp_path / "audio" / "nan.wav",
        np.full(800, np.nan, dtype=np.float32),
        16000,
        subtype="FLOAT",
    )
    rows = [
        Example(n, str(tmp_path / "audio" / f"{n}.wav"), 1.0, "asr", "", "x")
        for n in ("good", "long", "tel", "text", "empty", "nan", "gone")
    ]
    rows.append(Example("q", str(good), 1.0, "aqa", "Q?", "yes"))
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    with open(manifest, "a") as f:
        f.write(json.dumps({"id": "broken", "task": "asr"}) + "\n")
    examples, report = load_examples(manifest, tasks=["asr"], max_s=2.0, check="full")
    assert [e.id for e in examples] == ["good", "tel"]
    assert examples[1].duration_s == pytest.approx(1.0)  # 8 kHz resampled, not rejected
    reasons = dict(report.skipped)
    assert set(reasons) == {"long", "text", "empty", "nan", "gone", "broken"}
    assert "too long" in reasons["long"] and "NaN" in reasons["nan"]
    assert "missing key 'audio_path'" in reasons["broken"] and "m.jsonl:9" in reasons["broken"]
    assert report.filtered == 1  # the aqa row
    with pytest.raises(DataError, match="'long'"):
        load_examples(manifest, tasks=["asr"], max_s=2.0, strict=True)
    # the header check also catches everything but NaN (that needs decoding)
    _, header_report = load_examples(manifest, tasks=["asr"], max_s=2.0)
    assert set(dict(header_report.skipped)) == {"long", "text", "empty", "gone", "broken"}


def test_relative_spec_resolves_against_root(tmp_path):
    _wav(tmp_path / "suite" / "audio" / "a.wav")
    write_manifest(
        tmp_path / "suite" / "train.jsonl",
        [Example("a", str(tmp_path / "suite" / "audio" / "a.wav"), 0.5, "asr", "", "x")],
    )
    examples, _ = load_examples("suite/train.jsonl", root=tmp_path)
    assert examples[0].audio_path == str(tmp_path / "suite" / "audio" / "a.wav")


@pytest.mark.slow  # importing datasets alone takes ~5-10 s on a 2-core box
def test_hf_load_from_disk_round_trip(tmp_path):
    datasets = pytest.importorskip("datasets")
    on_disk = _wav(tmp_path / "src" / "x.wav", 0.5)
    flac = _wav(tmp_path / "src" / "y.flac", 0.75, rate=22050)
    ds = datasets.Dataset.from_dict(
        {
            "id": ["x", "y", "z"],
            "audio": [
                {"path": str(on_disk), "bytes": None},
                {"path": "y.flac", "bytes": flac.read_bytes()},
                {"path": "z.wav", "bytes": b"garbage bytes, not audio"},
            ],
            "text": ["path row", "bytes row", "bad row"],
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hfds"))
    flac.unlink()  # the bytes must be enough
    examples, report = load_examples(f"hf:{tmp_path / 'hfds'}:test", cache=tmp_path / "cache")
    assert [e.id for e in examples] == ["x", "y"]
    # save_to_disk embeds the file's bytes, so both rows are served from the cache copy
    assert examples[0].duration_s == pytest.approx(0.5)
    assert examples[1].target == "bytes row" and examples[1].duration_s == pytest.approx(0.75)
    assert examples[1].audio_path.startswith(str(tmp_path / "cache"))
    assert report.skipped[0][0] == "z"
    with pytest.raises(DataError, match="pick a split"):
        load_examples(f"hf:{tmp_path / 'hfds'}:train")


def test_parse_hf_spec():
    assert parse_hf_spec("openslr/librispeech_asr:test.clean") == (
        "openslr/librispeech_asr",
        "test.clean",
    )
    assert parse_hf_spec("/data/my_ds") == ("/data/my_ds", None)
    assert parse_hf_spec("user/ds:validation[:10]") == ("user/ds", "validation[:10]")


def test_a_split_logs_one_summary_line_per_manifest(tmp_path, caplog):
    from synth_fixtures import write_suite

    from steermoe.config import load_config
    from steermoe.data.batches import load_split

    root = write_suite(tmp_path / "data", n_train=5, n_val=2)
    config = load_config(None, [f"data.root={root}", "data.train=[asr/train.jsonl]"])
    with caplog.at_level("INFO", logger="steermoe.data"):
        assert len(load_split(config, "train")) == 5
    assert [r.getMessage() for r in caplog.records] == ["asr/train.jsonl: 5 loaded, 0 skipped"]

"""Named held-out sets: real speech from pocketsphinx-testdata and FSDD, synthetic tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from steermoe import env
from steermoe.data import heldout
from steermoe.data.audio import load_audio
from steermoe.data.examples import Example, write_manifest
from steermoe.data.heldout import DatasetUnavailable, fsdd_accuracy, load_named, named_dataset

HAS_SPHINX = (heldout.POCKETSPHINX_DATA / "librivox").is_dir()
HAS_FSDD = (env.shared_data_dir() / "fsdd" / "recordings").is_dir()


@pytest.mark.skipif(not HAS_SPHINX, reason="pocketsphinx-testdata not installed")
def test_librivox_and_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERMOE_CACHE", str(tmp_path))
    rows = named_dataset("librivox")
    assert len(rows) == 5
    assert rows[1].target == "he was not an ill disposed young man"
    assert all(r.task == "asr" and 1.0 < r.duration_s < 15 for r in rows)
    commands = named_dataset("pocketsphinx-commands")
    targets = {r.id: r.target for r in commands}
    assert targets["cards-001"] == "ten of clubs"
    assert targets["goforward"] == "go forward ten meters"
    audio = load_audio(
        next(r for r in commands if r.id == "goforward").audio_path, example_id="goforward"
    )
    assert 2.0 < len(audio) / 16000 < 4.0


@pytest.mark.skipif(not HAS_FSDD, reason="shared FSDD data absent")
def test_fsdd_test_takes():
    rows = named_dataset("fsdd")
    speakers = {r.meta["speaker"] for r in rows}
    assert len(rows) == len(speakers) * 10 * 5  # takes 0-4 of every speaker and digit
    assert all(int(r.id.rsplit("_", 1)[1]) < 5 for r in rows)
    seven = next(r for r in rows if r.id.startswith("fsdd-7_"))
    assert seven.target == "seven" and seven.instruction == "Transcribe the audio."
    audio = load_audio(seven.audio_path, example_id=seven.id)  # real 8 kHz, resampled
    assert abs(len(audio) / 16000 - seven.duration_s) < 0.01


def test_missing_sources_say_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERMOE_SHARED_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(heldout, "POCKETSPHINX_DATA", tmp_path / "nope")
    with pytest.raises(DatasetUnavailable, match="STEERMOE_SHARED_DATA"):
        named_dataset("fsdd")
    with pytest.raises(DatasetUnavailable, match="apt-get install pocketsphinx-testdata"):
        named_dataset("librivox")
    with pytest.raises(DatasetUnavailable, match=r"jobs\.build_data"):
        named_dataset("synthetic-fc", root=tmp_path)
    with pytest.warns(UserWarning) as caught:
        loaded = load_named(["fsdd", "librivox"], root=tmp_path)
    assert loaded == {}
    assert ["fsdd" in str(w.message) for w in caught] == [True, False]
    with pytest.raises(KeyError, match="unknown dataset"):
        named_dataset("timit")


def test_synthetic_names_resolve_to_test_manifests(tmp_path):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "aqa" / "audio" / "a.wav"
    wav.parent.mkdir(parents=True)
    sf.write(wav, np.zeros(8000, dtype=np.float32), 16000)
    write_manifest(
        tmp_path / "aqa" / "test.jsonl",
        [Example("a", str(wav), 0.5, "aqa", "Q?", "yes", kind="yes_no")],
    )
    rows = named_dataset("synthetic-aqa", root=tmp_path)
    assert [r.id for r in rows] == ["a"] and Path(rows[0].audio_path) == wav


@pytest.mark.parametrize(
    ("pred", "ok"),
    [
        ("seven", True),
        ("Seven.", True),
        ("7", True),
        ("It is 7.", True),
        ("eleven", False),
        ("seven eight", False),
        ("", False),
        ("seventy", False),
    ],
)
def test_fsdd_accuracy(pred, ok):
    assert fsdd_accuracy([pred], ["seven"]) == float(ok)

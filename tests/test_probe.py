"""jobs.probe: teacher-forced loss and audio gain of checkpoints, clean and through a channel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jobs import probe as job
from steermoe.config import load_config
from steermoe.model import build_model, save_checkpoint
from steermoe.probe import CONDITIONS, check_conditions, probe_checkpoint

TINY = ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"]
WORDS = ["turn left", "hello world", "seven", "open the door", "blue sky"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Five ASR validation clips (chirps with harmonics up to 7 kHz) and a tiny checkpoint
    whose projector is scaled up, so that what the clips carry reaches the LLM."""
    root = tmp_path_factory.mktemp("data")
    rows = []
    for i, text in enumerate(WORDS):
        t = np.arange(int(16000 * (0.6 + 0.2 * i))) / 16000
        audio = sum(np.sin(2 * np.pi * (300 + 150 * i) * k * t) / k for k in range(1, 24))
        sf.write(root / f"v{i}.wav", (0.1 * audio).astype(np.float32), 16000)
        rows.append(
            {
                "id": f"v{i}",
                "audio_path": f"v{i}.wav",
                "duration_s": len(t) / 16000,
                "task": "asr",
                "instruction": "",
                "target": text,
            }
        )
    (root / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(
        None,
        [*TINY, f"data.root={root}", "data.validation=[validation.jsonl]", "train.batch_size=3"],
    )
    model = build_model(config.model, cache_dir=tmp_path_factory.mktemp("cache"), seed=1)
    with torch.no_grad():
        model.trainable.projector.net.weight.mul_(50)
    path = save_checkpoint(model, config.model, tmp_path_factory.mktemp("ckpt") / "ckpt")
    return config, path


def test_probe_scores_each_condition_and_channels_change_what_the_model_hears(setup):
    config, path = setup
    lines = []
    rows = probe_checkpoint(path, config, ["clean", "band-4k", "clean"], progress=lines.append)
    by = {(r.condition, r.task): r for r in rows}
    assert [(r.condition, r.task) for r in rows] == [
        ("clean", "asr"),
        ("clean", "all"),
        ("band-4k", "asr"),
        ("band-4k", "all"),
    ]  # a condition named twice is scored once
    # One line per batch of 3 (all conditions scored), then one per condition.
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines[:2]] == [
        "3/5 clips",
        "5/5 clips",
    ]
    assert len(lines) == 4 and "band-4k: loss" in lines[3]
    clean, band = by["clean", "all"], by["band-4k", "all"]
    again = probe_checkpoint(path, config, ["clean"])[-1]
    assert clean.tokens == band.tokens > 0
    assert again.loss == pytest.approx(clean.loss, abs=1e-5)  # deterministic
    assert band.loss != pytest.approx(clean.loss, abs=1e-4)  # the band limit reached the LLM
    assert clean.gain != 0.0 and np.isfinite(clean.gain)


def test_the_job_prints_a_table_and_names_bad_conditions(setup, capsys):
    config, path = setup
    where = [f"data.root={config.data.root}", "data.validation=[validation.jsonl]"]
    argv = ["jobs/configs/train_tiny.yaml", *where, "--checkpoint", str(path)]
    assert job.main([*argv, "--conditions", "clean,noise-10db"]) == 0
    out = capsys.readouterr().out
    assert "| noise-10db |" in out and "asr loss/gain" in out
    assert job.main([*argv, "--conditions", "clean,underwater"]) == 2
    assert "underwater" in capsys.readouterr().err
    assert job.main(["jobs/configs/train_tiny.yaml", "--conditions", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in CONDITIONS)
    with pytest.raises(ValueError, match="known: clean"):
        check_conditions(["clean", "space"])


def test_the_job_needs_a_checkpoint(capsys):
    assert job.main([str(Path("jobs/configs/train_tiny.yaml"))]) == 2
    assert "--checkpoint" in capsys.readouterr().err

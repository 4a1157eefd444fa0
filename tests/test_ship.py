"""Shipping a run's checkpoint: the newest or a chosen step, trainable tensors and run state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobs import ship_checkpoint
from steermoe.config import load_config
from steermoe.train.loop import DEEPSPEED_DIR, METRICS_FILE, RESUME_DIR, STATE_FILE
from steermoe.train.run import ship

TINY = ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"]


@pytest.fixture
def run(tmp_path):
    """A run folder as Ray Train leaves it, with checkpoints at steps 200 and 400."""
    config = load_config(None, [*TINY, f"train.storage_path={tmp_path}", "train.name=r"])
    for step in (200, 400):
        folder = tmp_path / "r" / f"checkpoint_step{step:07d}"
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "steermoe.json").write_text(json.dumps({"step": step}))
        states = folder / DEEPSPEED_DIR / f"step{step:07d}"
        states.mkdir(parents=True)
        module = {"trainable.w": torch.ones(2), "llm.big": torch.zeros(1000)}
        torch.save({"module": module}, states / "mp_rank_00_model_states.pt")
        (folder / DEEPSPEED_DIR / "zero_to_fp32.py").write_text("# DeepSpeed's script")
        (folder / STATE_FILE).write_text(json.dumps({"step": step}))
        (folder / METRICS_FILE).write_text(json.dumps({"step": step, "val_loss": 2.0 - step / 1e3}))
    return config


def test_ship_takes_the_newest_checkpoint_or_the_step_asked(run, tmp_path):
    source, metrics = ship(run, tmp_path / "out")
    assert source.name == "checkpoint_step0000400" and metrics["step"] == 400
    source, metrics = ship(run, tmp_path / "out", step=200)
    assert metrics["step"] == 200
    out = tmp_path / "out"
    assert json.loads((out / "steermoe.json").read_text()) == {"step": 200}
    assert json.loads((out / RESUME_DIR / STATE_FILE).read_text()) == {"step": 200}
    assert not list((out / RESUME_DIR).rglob("zero_to_*.py"))
    (states,) = (out / RESUME_DIR / DEEPSPEED_DIR).glob("*/*model_states.pt")
    assert set(torch.load(states, weights_only=False)["module"]) == {"trainable.w"}


def test_a_step_not_kept_is_a_clear_error_listing_the_kept_ones(run, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 300 .*kept: \[200, 400\]"):
        ship(run, tmp_path / "out", step=300)
    config = str(Path(__file__).parents[1] / "jobs" / "configs" / "train_tiny.yaml")
    cli = [config, f"train.storage_path={run.train.storage_path}", "train.name=r"]
    assert ship_checkpoint.main([*cli, "--to", str(tmp_path / "o"), "--step", "200"]) == 0
    assert "shipped checkpoint_step0000200 (step 200)" in capsys.readouterr().out

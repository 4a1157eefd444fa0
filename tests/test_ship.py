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


def test_best_ships_the_kept_checkpoint_with_the_best_metric(run, tmp_path, capsys):
    # The fixture's val_loss falls with the step; the newest step has the worst gain.
    folder = Path(run.train.storage_path) / "r"
    for step, gain in ((200, 1.4), (400, 1.2)):
        metrics = folder / f"checkpoint_step{step:07d}" / METRICS_FILE
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "val_audio_gain": gain}))
    _, metrics = ship(run, tmp_path / "out", best=True)
    assert metrics["step"] == 400  # lowest val_loss (the default metric)

    def keeping(*overrides):
        where = [f"train.storage_path={run.train.storage_path}", "train.name=r"]
        return load_config(None, [*TINY, *where, *overrides])

    _, metrics = ship(keeping("train.keep_metric=val_audio_gain"), tmp_path / "out", best=True)
    assert metrics["step"] == 400  # keep_mode min: the lower gain
    highest = keeping("train.keep_metric=val_audio_gain", "train.keep_mode=max")
    _, metrics = ship(highest, tmp_path / "out", best=True)
    assert metrics["step"] == 200
    with pytest.raises(ValueError, match="not both"):
        ship(run, tmp_path / "out", step=200, best=True)
    with pytest.raises(FileNotFoundError, match="reported val_x"):
        ship(keeping("train.keep_metric=val_x"), tmp_path / "out", best=True)
    config = str(Path(__file__).parents[1] / "jobs" / "configs" / "train_tiny.yaml")
    cli = [config, f"train.storage_path={run.train.storage_path}", "train.name=r"]
    assert ship_checkpoint.main([*cli, "--to", str(tmp_path / "o"), "--best"]) == 0
    assert "shipped checkpoint_step0000400 (step 400)" in capsys.readouterr().out
    assert ship_checkpoint.main([*cli, "--to", str(tmp_path / "o"), "--best", "--step", "2"]) == 2


def test_keep_metric_ranks_the_checkpoints_ray_keeps():
    from steermoe.train.run import build_trainer

    config = load_config(None, [*TINY, "train.keep_metric=val_wer", "train.keep_checkpoints=4"])
    kept = build_trainer(config).run_config.checkpoint_config
    assert (kept.num_to_keep, kept.checkpoint_score_attribute) == (4, "val_wer")
    assert kept.checkpoint_score_order == "min"
    with pytest.raises(ValueError, match="keep_metric"):
        load_config(None, [*TINY, "train.keep_metric=loss"])


def test_training_workers_keep_the_plain_print():
    """Ray Train would send a worker's ``print`` both to its logger and to the wrapped
    stdout, so every ``[train] step`` line reached the console twice; its workers keep the
    plain ``print``."""
    from steermoe.train.run import build_trainer

    worker_env = build_trainer(load_config(None, TINY)).run_config.worker_runtime_env
    assert worker_env["env_vars"]["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"

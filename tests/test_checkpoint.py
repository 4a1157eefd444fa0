"""Trainable-only checkpoints: round trip, integrity and backbone checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from steermoe import env
from steermoe.config import ConfigError, load_config
from steermoe.model import CheckpointError, build_model, load_checkpoint, save_checkpoint
from steermoe.model.checkpoint import (
    HEADER,
    MODEL_DIR,
    TENSORS,
    checkpoint_config,
    inference_config,
    local_checkpoint,
    read_header,
    warm_start,
)

TINY = ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def trained(cache, tmp_path):
    cfg = load_config(None, [*TINY, "model.steering.num_experts=3", "model.steering.top_k=2"])
    model = build_model(cfg.model, cache_dir=cache, seed=1)
    with torch.no_grad():
        for _, p in model.trainable_parameters():
            p.add_(torch.randn_like(p))
    path = save_checkpoint(model, cfg.model, tmp_path / "ckpt")
    return cfg, model, path


def test_round_trip_restores_exactly_the_trainable_tensors(cache, trained):
    cfg, model, path = trained
    fresh = build_model(checkpoint_config(path), cache_dir=cache, seed=2)
    assert checkpoint_config(path) == cfg.model
    header = load_checkpoint(fresh, path)
    for (n, p), (n2, q) in zip(model.trainable_parameters(), fresh.trainable_parameters()):
        assert n == n2 and torch.equal(p, q)
    assert header["steermoe_version"] == "0.1.0"
    assert "\x00AUDIO\x00" in header["prompt_template"]
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(16000)).astype(np.float32)]
    a = model.generate(model.collate(audio, ["x"]), max_new_tokens=5)
    b = fresh.generate(fresh.collate(audio, ["x"]), max_new_tokens=5)
    assert a.token_ids == b.token_ids


def test_checkpoint_holds_only_trainable_tensors(trained):
    _, model, path = trained
    state = load_file(str(path / TENSORS))
    assert set(state) == {n for n, _ in model.trainable_parameters()}
    n_frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
    n_saved = sum(t.numel() for t in state.values())
    assert n_saved < n_frozen
    header = read_header(path)
    assert set(header["backbones"]) == {"encoder", "llm"}
    assert header["backbones"]["llm"]["sha256"], "LLM file hashes missing from header"
    assert all(len(h) == 64 for h in header["backbones"]["encoder"]["sha256"].values())


def test_truncated_tensor_file_is_a_clear_error(cache, trained):
    _, model, path = trained
    data = (path / TENSORS).read_bytes()
    (path / TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(model, path)


def test_corrupt_header_is_a_clear_error(trained):
    _, model, path = trained
    (path / HEADER).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt header"):
        load_checkpoint(model, path)


def test_not_a_checkpoint(tmp_path, trained):
    _, model, _ = trained
    with pytest.raises(CheckpointError, match="not a SteerMoE checkpoint"):
        load_checkpoint(model, tmp_path)


def test_other_backbone_is_a_clear_error(cache, trained, tmp_path):
    cfg, _, path = trained
    other = build_model(cfg.model, cache_dir=cache)
    header = json.loads((path / HEADER).read_text())
    header["backbones"]["llm"]["sha256"] = {"model.safetensors": "0" * 64}
    (path / HEADER).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="trained against llm"):
        load_checkpoint(other, path)


def test_shape_mismatch_is_a_clear_error(cache, trained):
    _, _, path = trained
    cfg = load_config(None, [*TINY, "model.steering.num_experts=5"])
    other = build_model(cfg.model, cache_dir=cache)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(other, path)


def test_warm_start_copies_the_tensors_that_fit(cache, trained):
    _, source, path = trained  # 3 experts
    cfg = load_config(None, [*TINY, "model.steering.num_experts=5"])
    target = build_model(cfg.model, cache_dir=cache, seed=3)
    before = {n: p.detach().clone() for n, p in target.trainable_parameters()}
    loaded, skipped = warm_start(target, path)
    src = dict(source.trainable_parameters())
    assert any(n.startswith("projector") for n in loaded)
    assert skipped, "expert tensors of another count must keep their fresh initialisation"
    for name, param in target.trainable_parameters():
        if name in loaded:
            assert torch.equal(param, src[name]), name
        else:
            assert name in skipped and torch.equal(param, before[name]), name
            assert tuple(src[name].shape) != tuple(param.shape), name


def test_warm_start_same_shapes_loads_everything(cache, trained):
    cfg, source, path = trained
    target = build_model(cfg.model, cache_dir=cache, seed=4)
    loaded, skipped = warm_start(target, path)
    assert skipped == [] and set(loaded) == {n for n, _ in source.trainable_parameters()}


def test_a_linear_checkpoint_warm_starts_the_linear_mlp_projector_exactly(cache, trained):
    """The `linear_mlp` projector shares the linear map's tensors by name and its MLP branch
    starts at zero: warm-started from a `linear` checkpoint it computes what that checkpoint
    computes, and the branch then trains."""
    _, source, path = trained
    overrides = [*TINY, "model.steering.num_experts=3", "model.steering.top_k=2"]
    target_cfg = load_config(None, [*overrides, "model.projector.kind=linear_mlp"])
    target = build_model(target_cfg.model, cache_dir=cache, seed=5)
    loaded, skipped = warm_start(target, path)
    assert set(loaded) == {n for n, _ in source.trainable_parameters()}
    assert skipped and all(n.startswith("projector.branch.") for n in skipped)
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(2)]
    batch = source.collate(audio, ["x", "y"], ["hello", "world"])
    with torch.no_grad():
        want = source(batch)["loss"]
    got = target(target.collate(audio, ["x", "y"], ["hello", "world"]))["loss"]
    torch.testing.assert_close(got.detach(), want)
    got.backward()
    out_layer = target.trainable.projector.branch[-1].weight
    assert out_layer.grad is not None and out_layer.grad.abs().sum() > 0


def test_warm_start_checks_backbones(cache, trained):
    cfg, _, path = trained
    header = json.loads((path / HEADER).read_text())
    header["backbones"]["encoder"]["sha256"] = {"model.safetensors": "0" * 64}
    (path / HEADER).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="trained against encoder"):
        warm_start(build_model(cfg.model, cache_dir=cache), path)


def test_local_checkpoint_resolves_folders_and_embedded_names(trained, tmp_path):
    _, _, path = trained
    assert local_checkpoint(str(path)) == path
    run_checkpoint = tmp_path / "checkpoint_step0000200"  # as a training run writes it
    shutil.copytree(path, run_checkpoint / MODEL_DIR)
    (run_checkpoint / "train_state.json").write_text("{}")
    assert local_checkpoint(run_checkpoint) == run_checkpoint / MODEL_DIR
    with pytest.raises(CheckpointError, match="not a SteerMoE checkpoint"):
        read_header(local_checkpoint(tmp_path))  # a folder with neither
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        local_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"embedded:nope: no such embedded checkpoint"):
        local_checkpoint("embedded:nope")
    for name in env.embedded_checkpoints():
        assert read_header(local_checkpoint(f"embedded:{name}"))["format"]


def test_a_bf16_checkpoint_runs_in_fp32_only_on_a_cpu_without_native_bf16(monkeypatch):
    from steermoe.model import build as model_build

    shipped = local_checkpoint("embedded:reference-b")
    assert checkpoint_config(shipped).dtype == "bfloat16"  # as it was trained
    monkeypatch.setattr(model_build, "cpu_has_bf16", lambda: False)
    assert inference_config(shipped, "cpu").dtype == "float32"
    assert inference_config(shipped, "cuda").dtype == "bfloat16"
    monkeypatch.setattr(model_build, "cpu_has_bf16", lambda: True)
    assert inference_config(shipped, "cpu").dtype == "bfloat16"


def test_unknown_embedded_init_from_fails_at_config_time():
    with pytest.raises(ConfigError, match=r"train\.init_from: no embedded checkpoint 'nope'"):
        load_config(None, ["train.init_from=embedded:nope"])


def test_warm_start_refuses_a_truncated_tensor_file(cache, trained):
    cfg, _, path = trained
    data = (path / TENSORS).read_bytes()
    (path / TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        warm_start(build_model(cfg.model, cache_dir=cache), path)


def test_a_torn_ray_train_record_is_set_aside_and_the_newest_complete_checkpoint_continues(
    tmp_path,
):
    """A controller killed while writing ``checkpoint_manager_snapshot.json`` (its node was
    lost) leaves it empty; Ray would refuse the run forever. The run continues from its
    newest checkpoint that was written in full."""
    from steermoe.train.run import SNAPSHOT, recover_torn_snapshot

    cfg = load_config(None, [f"train.storage_path={tmp_path}", "train.name=torn"])
    run = tmp_path / "torn"
    assert recover_torn_snapshot(cfg) is cfg  # a new run: nothing to recover
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = run / f"checkpoint_step{step:07d}"
        (folder / "deepspeed" / f"step{step:07d}").mkdir(parents=True)
        if complete:  # the state file is written last
            (folder / "train_state.json").write_text(json.dumps({"tag": f"step{step:07d}"}))
    (run / SNAPSHOT).write_text(json.dumps({"checkpoints": []}))
    assert recover_torn_snapshot(cfg) is cfg  # a sound record is Ray's to use

    (run / SNAPSHOT).write_text("")
    resumed = recover_torn_snapshot(cfg)
    assert resumed.train.resume_from == str(run / "checkpoint_step0000004")
    assert not (run / SNAPSHOT).exists() and (run / f"{SNAPSHOT}.torn").exists()

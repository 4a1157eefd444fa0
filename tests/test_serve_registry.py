"""Serving resolves MLflow registry references and checkpoint folders to one checkpoint."""

from __future__ import annotations

import pytest

from steermoe.model.checkpoint import HEADER, CheckpointError
from steermoe.serve.loading import find_checkpoint, pin_version, resolve_checkpoint


def fake_checkpoint(root, name="checkpoint"):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / HEADER).write_text('{"format": "steermoe-checkpoint/1"}')
    (folder / "trainable.safetensors").write_bytes(b"x")
    return folder


def test_find_checkpoint_in_folder_tree(tmp_path):
    folder = fake_checkpoint(tmp_path / "artifacts")
    (tmp_path / "artifacts" / "config.yaml").write_text("model: {}\n")
    assert find_checkpoint(tmp_path) == folder
    assert find_checkpoint(folder) == folder
    assert resolve_checkpoint(str(tmp_path)) == folder
    fake_checkpoint(tmp_path / "artifacts", "other")
    with pytest.raises(CheckpointError, match="several"):
        find_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no SteerMoE checkpoint"):
        find_checkpoint(empty)


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serve-test")
    art = tmp_path / "art"
    fake_checkpoint(art)
    (art / "config.yaml").write_text("model: {}\n")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("tiny")
    for _ in range(2):
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(art), artifact_path="model")
            source = mlflow.get_artifact_uri("model")
        client.create_model_version("tiny", source=source, run_id=run.info.run_id)
    client.set_registered_model_alias("tiny", "champion", "1")
    yield uri
    mlflow.set_tracking_uri(None)


def test_registry_alias_is_pinned_and_downloaded(registry, tmp_path):
    assert pin_version("models:/tiny@champion", registry) == "models:/tiny/1"
    assert pin_version("models:/tiny/2", registry) == "models:/tiny/2"
    assert pin_version("/some/folder", registry) == "/some/folder"
    folder = resolve_checkpoint("models:/tiny@champion", tracking_uri=registry, dst=tmp_path / "dl")
    assert folder.name == "checkpoint" and (folder / HEADER).is_file()
    assert folder.is_relative_to(tmp_path / "dl")


@pytest.mark.parametrize(
    "ref", ["models:/tiny@nope", "models:/tiny/9", "models:/ghost@champion", "models:/a/b/c"]
)
def test_registry_errors_are_clear(registry, ref):
    with pytest.raises(CheckpointError, match=r"not found|expected models"):
        pin_version(ref, registry)

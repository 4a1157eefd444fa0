"""The registered champion is an MLflow pyfunc model: loadable, predictable, servable.

Tiny random backbones; the answers are compared with the model's own ``generate()`` on the same
checkpoint (what evaluation measured and Ray Serve serves).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import soundfile as sf
from mlflow import MlflowClient

from steermoe import env, registry
from steermoe.config import ModelConfig, load_config, to_dict
from steermoe.env import free_port
from steermoe.model import build_model, save_checkpoint
from steermoe.model.checkpoint import checkpoint_config, local_checkpoint, read_header
from steermoe.pyfunc import PredictError, answer
from steermoe.serve.loading import load_model, resolve_checkpoint

pytestmark = pytest.mark.slow
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
NAME = "steermoe-pyfunc-test"
REAL_CACHE = env.cache_dir()  # the prepared backbones, before the tiny store points elsewhere


# mlflow.set_tracking_uri/set_registry_uri also export MLFLOW_*_URI: restored after each use,
# or later tests (and the jobs they start) would track to this module's stores.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "STEERMOE_CACHE")


@contextlib.contextmanager
def isolated(uri: str | None = None, cache: Path | None = None):
    """Point MLflow (and the backbone cache) somewhere, then put everything back."""
    saved = {k: os.environ.get(k) for k in MLFLOW_ENV}
    if uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    if cache:
        os.environ["STEERMOE_CACHE"] = str(cache)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_clip(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tracking store with two registered pyfunc versions (the first holds @champion)."""
    root = tmp_path_factory.mktemp("pyfunc")
    cache = root / "cache"
    guard = isolated(cache=cache)  # load_context finds the tiny backbones in this cache
    guard.__enter__()
    config = load_config(None, ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"])
    clips = [write_clip(root / f"clip{i}.wav", 0.6 + 0.4 * i, seed=i) for i in range(3)]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("pyfunc", artifact_location=str(root / "artifacts"))
    regs = []
    for seed in (0, 1):
        model = build_model(config.model, cache_dir=cache, seed=seed)
        ckpt = save_checkpoint(model, config.model, root / f"ckpt{seed}")
        run = client.create_run(experiment)
        regs.append(
            registry.register(
                client,
                name=NAME,
                run_id=run.info.run_id,
                checkpoint=ckpt,
                config=to_dict(config),
                example_audio=clips[0],
                metric="val_loss",
                value=[1.0, 2.0][seed],  # the second is worse
                mode="min",
            )
        )
    yield {"uri": uri, "clips": clips, "cache": cache, "regs": regs, "root": root}
    guard.__exit__(None, None, None)


def expected(store, version: str, clips, instructions=None) -> list[str]:
    """The same checkpoint's answers through the model's own generate()."""
    model, _, folder = load_model(f"models:/{NAME}/{version}", tracking_uri=store["uri"])
    rows = [
        {"audio": str(c), "instruction": (instructions or [""] * len(clips))[i]}
        for i, c in enumerate(clips)
    ]
    return answer(model, checkpoint_config(folder), rows)


def load_registered(ref: str, uri: str):
    with isolated(uri):
        return mlflow.pyfunc.load_model(ref)


def test_champion_loads_as_pyfunc_and_transcribes(store):
    assert [r.promoted for r in store["regs"]] == [True, False]
    loaded = load_registered(f"models:/{NAME}@champion", store["uri"])
    schema = loaded.metadata.get_input_schema()
    assert schema.input_names() == ["audio", "instruction", "tools"]
    assert loaded.metadata.get_output_schema().input_names() == ["text"]
    clips = store["clips"]
    frame = pd.DataFrame(
        {
            "audio": [str(clips[0]), clips[1].read_bytes(), str(clips[2])],
            "instruction": ["", None, "What is said?"],
        }
    )
    out = loaded.predict(frame)
    assert list(out.columns) == ["text"] and len(out) == 3
    want = expected(store, "1", clips, ["", "", "What is said?"])
    assert list(out["text"]) == want
    # The second (worse) version is another model: its answers come from its own weights.
    other = load_registered(f"models:/{NAME}/2", store["uri"]).predict(frame.iloc[:1])
    assert list(other["text"]) == expected(store, "2", clips[:1])


def test_bad_rows_name_the_row_and_column(store):
    loaded = load_registered(f"models:/{NAME}@champion", store["uri"])
    clip = str(store["clips"][0])
    with pytest.raises(PredictError, match=r"row 1: 'audio' is neither an existing file"):
        loaded.predict(pd.DataFrame({"audio": [clip, "/no/such/clip.wav"]}))
    with pytest.raises(PredictError, match=r"row 0: 'tools' is not JSON"):
        loaded.predict(pd.DataFrame({"audio": [clip], "tools": ["[{"]}))
    nameless = json.dumps([{"type": "function", "function": {"parameters": {}}}])
    with pytest.raises(PredictError, match=r"row 0: 'tools': .*without a function name"):
        loaded.predict(pd.DataFrame({"audio": [clip], "tools": [nameless]}))
    with pytest.raises(PredictError, match=r"row 0: audio could not be decoded"):
        loaded.predict(pd.DataFrame({"audio": [base64.b64encode(b"not audio").decode()]}))


def test_ray_serve_finds_the_checkpoint_inside_the_pyfunc_version(store, tmp_path):
    folder = resolve_checkpoint(
        f"models:/{NAME}@champion", tracking_uri=store["uri"], dst=tmp_path / "dl"
    )
    assert (folder / "trainable.safetensors").is_file() and folder.is_relative_to(tmp_path)


@contextlib.contextmanager
def mlflow_serve(ref: str, uri: str, cache: Path):
    """``mlflow models serve`` of ``ref`` on a free loopback port; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "STEERMOE_CACHE": str(cache),
        # mlflow starts `uvicorn` from PATH: the environment's own (an activated venv).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", ref, "--env-manager"]
    cmd += ["local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                lines = proc.stdout.read().decode().splitlines()
                pytest.fail("\n".join(x for x in lines if "Downloading" not in x)[-3000:])
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not come up in 300 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def invoke(url: str, clips: list[Path]) -> list[str]:
    payload = {
        "dataframe_split": {
            "columns": ["audio", "instruction"],
            "data": [[base64.b64encode(c.read_bytes()).decode(), ""] for c in clips],
        }
    }
    reply = requests.post(f"{url}/invocations", json=payload, timeout=300)
    assert reply.status_code == 200, reply.text
    return [row["text"] for row in reply.json()["predictions"]]


def test_mlflow_models_serve_answers_invocations(store):
    clips = store["clips"]
    with mlflow_serve(f"models:/{NAME}@champion", store["uri"], store["cache"]) as url:
        assert invoke(url, clips[:2]) == expected(store, "1", clips[:2])
        bad = requests.post(f"{url}/invocations", json={"dataframe_split": {}}, timeout=30)
        assert bad.status_code == 400
        missing = {"dataframe_split": {"columns": ["audio"], "data": [["/no/such.wav"]]}}
        refused = requests.post(f"{url}/invocations", json=missing, timeout=30)
        assert refused.status_code == 400 and "row 0" in refused.text
        assert requests.get(f"{url}/ping", timeout=10).status_code == 200  # still up


@pytest.mark.backbones
def test_embedded_default_registers_loads_and_serves(tmp_path, monkeypatch):
    """The shipped reference on the real backbones, through the registry, pyfunc and HTTP."""
    monkeypatch.setenv("STEERMOE_CACHE", str(REAL_CACHE))
    clip = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"
    if not clip.is_file():
        pytest.skip("Debian package pocketsphinx-testdata (real LibriVox clips) is not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("ref", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    folder = local_checkpoint("embedded:reference")
    with isolated(uri):  # registering points MLflow at this store: put it back after
        reg = registry.register(
            client,
            name="steermoe-ref",
            run_id=run.info.run_id,
            checkpoint=folder,
            config={"model": read_header(folder)["model_config"]},
            example_audio=clip,
            metric="val_loss",
            value=2.5,
            mode="min",
        )
        assert reg.promoted and reg.version == "1"
        model, _, _ = load_model("embedded:reference")
        want = answer(model, checkpoint_config(folder), [{"audio": str(clip)}])
        assert want[0].strip()  # the real model writes words
        loaded = load_registered("models:/steermoe-ref@champion", uri)
        assert list(loaded.predict(pd.DataFrame({"audio": [str(clip)]}))["text"]) == want
        with mlflow_serve("models:/steermoe-ref@champion", uri, REAL_CACHE) as url:
            assert invoke(url, [clip]) == want


def test_version_registered_as_a_bare_folder_still_serves(store, tmp_path):
    """Versions registered before the pyfunc format keep loading through Ray Serve's path."""
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    config = ModelConfig(encoder="tiny-random-whisper", llm="tiny-random-llm")
    ckpt = save_checkpoint(build_model(config, cache_dir=store["cache"]), config, tmp_path / "ck")
    run = client.create_run(client.get_experiment_by_name("pyfunc").experiment_id)
    client.log_artifacts(run.info.run_id, str(ckpt), artifact_path="final/checkpoint")
    source = f"{client.get_run(run.info.run_id).info.artifact_uri}/final/checkpoint"
    version = client.create_model_version(NAME, source=source, run_id=run.info.run_id)
    folder = resolve_checkpoint(
        f"models:/{NAME}/{version.version}", tracking_uri=store["uri"], dst=tmp_path / "dl"
    )
    assert (folder / "steermoe.json").is_file()

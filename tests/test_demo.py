"""`make demo`'s pipeline on the tiny twin config, end to end, as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_demo_pipeline_on_the_tiny_twin_with_an_empty_home(tmp_path):
    """As on a fresh machine: HOME is an empty folder (no ~/.ray token, no ~/.cache, no
    ~/.config); only the converted backbones are shared through STEERMOE_CACHE."""
    import mlflow

    from steermoe import env as steermoe_env
    from steermoe.demo import stop_cluster
    from steermoe.env import free_port

    db = tmp_path / "mlflow.db"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
        "HOME": str(home),
        "STEERMOE_CACHE": str(steermoe_env.cache_dir()),
    }
    for key in (
        "DEMO_KEEP_SERVING",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "MLFLOW_TRACKING_URI",
        "RAY_ADDRESS",
        "PIP_CONFIG_FILE",
    ):
        env.pop(key, None)
    # A bystander: another Ray cluster of the user, on Ray's default ports where they are free.
    # The demo must work around it and leave it running.
    other_gcs, other_dashboard = free_port(6379), free_port(8265)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={other_gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={other_dashboard}",
            "--num-cpus=0",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
    )
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "jobs.demo",
                "jobs/configs/demo_tiny.yaml",
                f"mlflow.tracking_uri=sqlite:///{db}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        urllib.request.urlopen(f"http://127.0.0.1:{other_dashboard}", timeout=5)  # still up
    finally:
        stopped = stop_cluster(other_gcs)
    assert stopped > 0
    # The token Ray's CLI reads was created for the cluster, private, and never printed.
    token = home / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert f"created a new token in {token}" in out
    assert token.read_text().strip() not in out
    for n in range(1, 7):
        assert "=== [" in out and f"{n}/6" in out
    assert "[transcription]" in out and "prediction:" in out
    assert "[synthetic-fc]" in out
    assert "demo-tiny-000" in out and "demo-tiny-001" in out  # the summary table
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    version = client.get_model_version_by_alias("steermoe-demo-tiny", "champion")
    assert str(version.version) == "1"
    exp = client.get_experiment_by_name("steermoe-demo-tiny")
    assert exp.artifact_location == (tmp_path / "mlartifacts" / "steermoe-demo-tiny").as_uri()
    # The demo's own cluster was stopped at the end: nothing answers on its dashboard any more.
    dashboard = re.search(r"Ray dashboard: (http://127\.0\.0\.1:\d+)", out).group(1)
    assert dashboard != f"http://127.0.0.1:{other_dashboard}"
    # The jobs' Ray helpers were told which cluster is theirs instead of guessing.
    assert "Found multiple active Ray instances" not in out
    with pytest.raises(OSError):
        urllib.request.urlopen(dashboard, timeout=2)

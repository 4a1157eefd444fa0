"""The whole workflow on one machine: data -> Ray cluster -> sweep job -> registry -> Serve.

``make demo`` runs this after preparing the offline backbones::

    python -m jobs.demo [jobs/configs/demo.yaml] [key=value ...]

Stages (each prints progress; a failure names the stage and where its logs are):
build the tiny synthetic suites; start a local Ray head on 127.0.0.1 (token auth on);
``ray job submit`` the sweep (num_experts x top_k on Whisper base + SmolLM2), which evaluates
and registers the champion in MLflow (SQLite); ``ray job submit`` the Serve deployment of
``models:/steermoe-demo@champion``; send real requests through the official ``openai``
client; print a summary table; stop the cluster (``DEMO_KEEP_SERVING=1`` leaves it serving).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobs._cli import parse
from jobs.demo_requests import ask_all, summary
from steermoe.env import ensure_ray_token

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DASHBOARD = "http://127.0.0.1:8265"
EXCLUDES = [".venv/**", ".git/**", "mlflow.db", "mlruns/**", "outputs/**", "reports/**"]


class StageError(RuntimeError):
    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"stage '{stage}' failed: {detail}")
        self.stage = stage


def stage(name: str) -> None:
    print(f"\n=== [{time.strftime('%H:%M:%S')}] {name} ===", flush=True)


def run(name: str, cmd: list[str], env: dict[str, str], logs: str, **kwargs) -> None:
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, check=False, **kwargs)
    if proc.returncode:
        raise StageError(name, f"exit code {proc.returncode}; logs: {logs}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        argv.insert(0, str(ROOT / "jobs" / "configs" / "demo.yaml"))
    config, args = parse(__doc__, argv)
    overrides = args.overrides
    db = ROOT / "mlflow.db"
    uri = config.mlflow.tracking_uri or f"sqlite:///{db}"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",  # Ray's token authentication: CLI calls carry the token
        "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
    }
    keep = os.environ.get("DEMO_KEEP_SERVING") == "1"
    started = time.time()
    memory = MemoryWatch()
    cluster_started = False
    try:
        stage("1/6 build the tiny synthetic suites (incremental)")
        run(
            "data",
            [sys.executable, "-m", "jobs.build_data", "jobs/configs/data_tiny.yaml"],
            env,
            "output above",
        )

        stage("2/6 start a local Ray cluster on 127.0.0.1 (token auth on)")
        if _dashboard_up():
            raise StageError(
                "cluster",
                f"something already answers at {DASHBOARD}; stop that Ray cluster first "
                "(ray stop) or free port 8265",
            )
        ensure_ray_token()  # `ray start` does not create a missing token
        run(
            "cluster",
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                "--dashboard-port=8265",
                "--num-cpus=2",
                "--disable-usage-stats",
            ],
            env,
            "/tmp/ray/session_latest/logs",
        )
        cluster_started = True

        runtime_env = json.dumps({"excludes": EXCLUDES, "env_vars": {"PYTHONPATH": "platform:."}})
        submit = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            DASHBOARD,
            "--working-dir",
            ".",
            "--runtime-env-json",
            runtime_env,
            "--",
            sys.executable,  # the venv's Python; on a cluster plain `python` (see README)
            "-m",
        ]
        common = [args.config, f"mlflow.tracking_uri={uri}", *overrides]

        stage("3/6 ray job submit: the sweep (train, ASHA, evaluate, register)")
        run(
            "sweep",
            [*submit, "jobs.sweep", *common, "--fresh"],
            env,
            f"ray job logs --address {DASHBOARD}",
        )

        stage("4/6 ray job submit: deploy the champion with Ray Serve")
        run(
            "serve",
            [*submit, "jobs.serve", *common, "--no-block"],
            env,
            f"ray job logs --address {DASHBOARD}; /tmp/ray/session_latest/logs/serve",
        )

        stage("5/6 real requests through the official openai client")
        try:
            ask_all(f"http://{config.serve.host}:{config.serve.port}/v1", config)
        except Exception as exc:
            raise StageError(
                "requests", f"{exc!r}; logs: /tmp/ray/session_latest/logs/serve"
            ) from None

        stage("6/6 summary")
        report = summary(uri, config)
        print(
            f"\nMLflow UI:     {BIN / 'mlflow'} ui --backend-store-uri {uri} --host 127.0.0.1"
            "\n               then open http://127.0.0.1:5000"
            f"\nSweep report:  {report or 'not found (see the sweep job log)'}"
            f"\nRay dashboard: {DASHBOARD}"
        )
    except StageError as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster_started and not keep:
            stage("shutting down (set DEMO_KEEP_SERVING=1 to leave Serve running)")
            subprocess.run([str(BIN / "ray"), "stop"], env=env, cwd=ROOT, check=False)
        elif cluster_started:
            print(
                f"\nServe keeps running at http://{config.serve.host}:{config.serve.port}/v1 "
                f"(stop it with: {BIN / 'ray'} stop)"
            )
    print(
        f"\ndemo finished in {(time.time() - started) / 60:.1f} min; peak memory in use on "
        f"this machine during the demo: {memory.stop():.1f} GiB"
    )
    return 0


class MemoryWatch:
    """Samples the machine's memory in use every second (the cluster runs in other processes)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.peak = psutil.virtual_memory().used
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(1.0):
            self.peak = max(self.peak, psutil.virtual_memory().used)

    def stop(self) -> float:
        self._stop.set()
        return self.peak / 2**30


def _dashboard_up() -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(DASHBOARD, timeout=2)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    if shutil.which("apt-get") is None and not Path("/usr/bin/espeak-ng").exists():
        print("warning: espeak-ng not found; the data build will use fewer voices")
    sys.exit(main())

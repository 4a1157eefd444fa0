"""The whole workflow on one machine, behind ``python -m jobs.demo`` (``make demo``).

:func:`run_demo` builds the tiny synthetic suites, starts a local Ray head on 127.0.0.1
(token auth on), ``ray job submit``\\ s the sweep (which evaluates and registers the champion
in MLflow) and the Serve deployment, sends real requests through the official ``openai``
client (:func:`ask_all`), prints the sweep's trials (:func:`summary`) and stops the cluster
(``DEMO_KEEP_SERVING=1`` leaves it serving). Each stage prints progress; a failure names the
stage and where its logs are.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from evaluators import asr
from evaluators.tasks import TASKS
from steermoe import tracking
from steermoe.config import Config
from steermoe.data.batches import data_root
from steermoe.data.heldout import DatasetUnavailable, librivox, named_dataset
from steermoe.env import ensure_ray_token, free_port, ray_temp_dir
from steermoe.evaluate import score_row
from steermoe.serve import client as api
from steermoe.sweep import latest_parent, summary_rows

BIN = Path(sys.executable).parent
# Ray's default ports for a head node; free ones are used where another cluster holds them.
RAY_PORTS = {
    "port": 6379,  # the GCS
    "dashboard-port": 8265,
    "dashboard-agent-listen-port": 52365,  # the job agent `ray job submit` reaches
    "ray-client-server-port": 10001,
}
EXCLUDES = [".venv/**", ".git/**", "mlflow.db", "mlruns/**", "outputs/**", "reports/**"]


class StageError(RuntimeError):
    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"stage '{stage}' failed: {detail}")
        self.stage = stage


def stage(name: str) -> None:
    print(f"\n=== [{time.strftime('%H:%M:%S')}] {name} ===", flush=True)


def run(name: str, cmd: list[str], env: dict[str, str], logs: str, *, cwd: Path) -> None:
    """Run one stage's command in ``cwd``; a non-zero exit is a :class:`StageError`."""
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=cwd, check=False)
    if proc.returncode:
        raise StageError(name, f"exit code {proc.returncode}; logs: {logs}")


def run_demo(config: Config, config_path: str, overrides: list[str], *, root: Path) -> int:
    """Run the six stages from the repository ``root`` (the jobs and configs live there).

    Args:
        config: the validated demo config.
        config_path: its YAML file, passed on to the submitted jobs with ``overrides``.
        overrides: ``key=value`` overrides of the command line.
        root: the repository (working directory of every stage; holds ``mlflow.db``).

    Returns:
        The exit status: 0, or 1 when a stage failed (the cluster is stopped either way,
        unless ``DEMO_KEEP_SERVING=1``).
    """
    uri = config.mlflow.tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",  # Ray's token authentication: CLI calls carry the token
        "PYTHONPATH": f"{root / 'platform'}:{root}",
    }
    keep = os.environ.get("DEMO_KEEP_SERVING") == "1"
    ray_logs = ray_temp_dir() / "session_latest" / "logs"
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
            cwd=root,
        )

        stage("2/6 start a local Ray cluster on 127.0.0.1 (token auth on)")
        ports = {flag: free_port(default) for flag, default in RAY_PORTS.items()}
        gcs_port = ports["port"]
        dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
        moved = [f"{flag} {ports[flag]}" for flag in RAY_PORTS if ports[flag] != RAY_PORTS[flag]]
        if moved:
            print(
                f"Ray's default ports are taken (another Ray cluster?); this demo's cluster "
                f"uses {', '.join(moved)}",
                flush=True,
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
                *(f"--{flag}={port}" for flag, port in ports.items()),
                "--num-cpus=2",
                "--disable-usage-stats",
            ],
            env,
            str(ray_logs),
            cwd=root,
        )
        cluster_started = True

        # Ray Train's helpers find the state API through RAY_API_SERVER_ADDRESS; without it
        # they guess "the" local cluster, and with several on the machine they may guess wrong.
        job_env = {"PYTHONPATH": "platform:.", "RAY_API_SERVER_ADDRESS": dashboard}
        runtime_env = json.dumps({"excludes": EXCLUDES, "env_vars": job_env})
        submit = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            dashboard,
            "--working-dir",
            ".",
            "--runtime-env-json",
            runtime_env,
            "--",
            sys.executable,  # the venv's Python; on a cluster plain `python` (see README)
            "-m",
        ]
        common = [config_path, f"mlflow.tracking_uri={uri}", *overrides]

        stage("3/6 ray job submit: the sweep (train, ASHA, evaluate, register)")
        run(
            "sweep",
            [*submit, "jobs.sweep", *common, "--fresh"],
            env,
            f"ray job logs --address {dashboard}",
            cwd=root,
        )

        stage("4/6 ray job submit: deploy the champion with Ray Serve")
        run(
            "serve",
            [*submit, "jobs.serve", *common, "--no-block"],
            env,
            f"ray job logs --address {dashboard}; {ray_logs / 'serve'}",
            cwd=root,
        )

        stage("5/6 real requests through the official openai client")
        try:
            ask_all(f"http://{config.serve.host}:{config.serve.port}/v1", config)
        except Exception as exc:
            raise StageError("requests", f"{exc!r}; logs: {ray_logs / 'serve'}") from None

        stage("6/6 summary")
        report = summary(uri, config)
        print(
            f"\nMLflow UI:     {BIN / 'mlflow'} ui --backend-store-uri {uri} --host 127.0.0.1"
            "\n               then open http://127.0.0.1:5000"
            f"\nSweep report:  {report or 'not found (see the sweep job log)'}"
            f"\nRay dashboard: {dashboard}"
        )
    except StageError as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster_started and not keep:
            stage("shutting down (set DEMO_KEEP_SERVING=1 to leave Serve running)")
            stopped = stop_cluster(gcs_port)
            print(f"stopped this demo's Ray cluster ({stopped} processes)", flush=True)
        elif cluster_started:
            print(
                f"\nServe keeps running at http://{config.serve.host}:{config.serve.port}/v1 "
                f"(stop it with: {BIN / 'ray'} stop, which stops every Ray cluster on this "
                "machine)"
            )
    print(
        f"\ndemo finished in {(time.time() - started) / 60:.1f} min; peak memory in use on "
        f"this machine during the demo: {memory.stop():.1f} GiB"
    )
    return 0


class MemoryWatch:
    """Samples the machine's memory in use every second (the cluster runs in other processes)."""

    def __init__(self) -> None:
        self.peak = psutil.virtual_memory().used
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, psutil.virtual_memory().used)

    def stop(self) -> float:
        self._stop.set()
        return self.peak / 2**30


def stop_cluster(gcs_port: int, *, grace_s: float = 10.0) -> int:
    """Stop the local Ray cluster whose GCS listens on ``gcs_port``, and nothing else.

    ``ray stop`` ends every Ray process of the user on the machine (a training run's cluster
    too). This finds the cluster's session from its GCS server, ends the processes started
    for that session (GCS, raylet, dashboard, monitors) with all their children (workers,
    Serve replicas, agents): SIGTERM, then SIGKILL after ``grace_s``. Returns how many.
    """
    session = None
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "gcs_server" and f"--gcs_server_port={gcs_port}" in cmd:
            session = next(
                (a.split("=", 1)[1] for a in cmd if a.startswith("--session-name=")), None
            )
            break
    if session is None:
        return 0
    address = f"127.0.0.1:{gcs_port}"  # e.g. the Ray Client server names only the GCS
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(session in arg or arg.endswith(address) for arg in proc.info["cmdline"] or []):
            try:
                for p in [proc, *proc.children(recursive=True)]:
                    found[p.pid] = p
            except psutil.NoSuchProcess:
                continue
    for p in found.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(list(found.values()), timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    # `ray start` recorded the cluster for `ray.init(address="auto")`; forget it if it is ours.
    current = ray_temp_dir() / "ray_current_cluster"
    if current.exists() and current.read_text().strip().endswith(f":{gcs_port}"):
        current.unlink(missing_ok=True)
    return len(found)


# ----------------------------------------------------------------------------- requests


def ask_all(base_url: str, config: Config) -> None:
    """A real held-out clip, a spoken question and a spoken tool request."""
    c = api.client(base_url, config.serve.api_key_env)
    name = config.serve.served_name
    clip = librivox()[0]
    text = api.transcribe(c, clip.audio_path, name)
    wer = asr.score([text], [clip.target])["wer"]
    print(f"[transcription] {clip.audio_path}\n  expected:   {clip.target}")
    print(f"  prediction: {text!r}\n  {mark(wer <= 50)} WER {wer:.0f} % (a mark at <= 50 %)")
    root = data_root(config.data)
    for suite in ("synthetic-aqa", "synthetic-fc"):
        try:
            ex = named_dataset(suite, root=root)[0]
        except (DatasetUnavailable, IndexError) as exc:
            print(f"[{suite}] skipped: {exc}")
            continue
        text = ex.instruction if suite == "synthetic-aqa" else "Call the right tool."
        message = api.chat_with_audio(
            c, ex.audio_path, text, tools=ex.tools, model=name, max_tokens=config.serve.max_tokens
        )
        calls = [f"{t.function.name}({t.function.arguments})" for t in message.tool_calls or []]
        right = is_right(ex, message)
        print(f"[{suite}] {ex.audio_path}\n  instruction: {text[:120]}")
        print(f"  expected:    {ex.target}")
        print(f"  answer:      {message.content!r}" + (f"  tool_calls: {calls}" if calls else ""))
        print(f"  {mark(right)} {'right' if right else 'wrong'}")


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def is_right(ex, message) -> bool:
    """The leaderboard rule for the example (its task's scorer): MMAU/exact match for AQA,
    BFCL AST for calls."""
    calls = [
        {"name": t.function.name, "arguments": json.loads(t.function.arguments or "{}")}
        for t in message.tool_calls or []
    ]
    answer = json.dumps(calls) if calls and ex.task == "fc" else (message.content or "")
    task = TASKS[ex.task]
    return task.score([score_row(ex, answer)])[task.scorer.PRIMARY] == 1.0


def summary(uri: str, config: Config) -> str | None:
    """Print the sweep's trials as a table; return where its HTML report is."""
    rows = summary_rows(uri, config.mlflow.experiment, config.sweep.name)

    def fmt(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    print(
        f"{'trial':<12}{'experts':>8}{'top_k':>7}{'WER %':>8}{'AQA acc':>9}{'FC acc':>8}"
        f"{'min':>7}  status"
    )
    for r in rows:
        print(
            f"{r['trial']:<12}{r['num_experts']:>8}{r['top_k']:>7}{fmt(r['wer']):>8}"
            f"{fmt(r['aqa_accuracy'], '.2f'):>9}{fmt(r['fc_accuracy'], '.2f'):>8}"
            f"{r['minutes']:>7.1f}  {r['status']}"
        )
    return report_location(uri, config)


def report_location(uri: str, config: Config) -> str | None:
    """The sweep report logged under the latest parent run's artifacts."""
    parent = latest_parent(tracking.client(uri), config.mlflow.experiment, config.sweep.name)
    return f"{parent.info.artifact_uri}/report/report.html" if parent else None

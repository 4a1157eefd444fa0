"""Scale-out on one machine, with the real components: a head plus worker nodes on loopback
(``ray.cluster_utils.Cluster``), a node removed mid-run and a fresh one added, and tracking
through an ``mlflow server`` process (SQLite backend, proxied artifact root) that is restarted
mid-sweep, as ``ray_cluster.yaml`` runs it.

Training workers need the custom resource ``trainer_slot``, which only the worker nodes
advertise (one slot each), so two workers always sit on two different nodes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow_poll import reported_steps
from synth_fixtures import write_suite

from steermoe import tiny
from steermoe import tracking as trk
from steermoe.config import load_config
from steermoe.env import free_port, ray_temp_dir
from steermoe.model import build_model, load_checkpoint
from steermoe.model.checkpoint import checkpoint_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SLOT = "trainer_slot"


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and a proxied artifact root."""

    def __init__(self, root: Path):
        self.db = root / "mlflow.db"
        self.artifacts = root / "artifacts"
        self.log = root / "server.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(self.artifacts),
            "--workers",
            "1",
        ]
        # No job runner (its ten worker processes serve MLflow's GenAI jobs, unused here).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("a") as log:
            # Its own session: stop() ends the server with its uvicorn children.
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mlflow server exited: {self.log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server not up in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head (no trainer slot) plus two worker nodes with one CPU and one slot each."""
    import ray
    from ray.cluster_utils import Cluster

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:  # later modules find the real backbones again
        mp.setenv("STEERMOE_CACHE", str(cache))
        for name in ("tiny-random-whisper", "tiny-random-llm"):  # as `make backbones` would
            tiny.ensure(name, cache)
        c = Cluster(
            initialize_head=True,
            connect=True,
            head_node_args={
                "num_cpus": 1,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                # Free ports: another local cluster may hold Ray's defaults.
                "gcs_server_port": free_port(),
                "dashboard_port": free_port(),
                # A lost node is declared dead after 3 failed health checks 1 s apart (Ray's
                # defaults: 5 checks 3 s apart, ~15 s of the recovery these tests wait for).
                "_system_config": {
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        for _ in range(2):
            c.add_node(num_cpus=1, resources={SLOT: 1})
        c.wait_for_nodes()
        yield c
        ray.shutdown()
        c.shutdown()
    # The head recorded its address where a bare ray.init() looks for a running cluster:
    # later tests must start their own, not join a dead one.
    current = ray_temp_dir() / "ray_current_cluster"
    if current.exists() and current.read_text().strip() == c.address:
        current.unlink()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_suite(tmp_path_factory.mktemp("data"))


def tiny_config(tmp: Path, data_root: Path, uri: str, *extra: str):
    return load_config(
        None,
        [
            "model.encoder=tiny-random-whisper",
            "model.llm=tiny-random-llm",
            "model.steering.num_experts=2",
            f"data.root={data_root}",
            "data.max_validation_examples=4",
            "train.batch_size=4",
            "train.cpus_per_worker=0.9",
            f"train.worker_resources={{{SLOT}: 1}}",
            "train.log_every=1",
            "train.optim.warmup_steps=1",
            "train.max_failures=3",
            f"train.storage_path={tmp / 'shared-storage'}",
            f"mlflow.tracking_uri={uri}",
            "mlflow.retry_s=180",
            "eval.max_new_tokens=4",
            *extra,
        ],
    )


def _slot_nodes(cluster) -> list:
    """The worker nodes (every one advertises a trainer slot; the head none)."""
    return list(cluster.worker_nodes)


def _worker_nodes() -> dict[str, str]:
    """Alive Ray Train worker actors -> their node ids."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return {a.actor_id: a.node_id for a in actors}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def _replace_a_node(cluster, victim_node_id: str) -> dict:
    """Remove the worker node ``victim_node_id`` (its raylet and workers are killed) and add
    a fresh node with the same resources. Main thread only: Ray's node start-up installs
    signal handlers, so the job under test runs in a thread (:func:`_in_background`)."""
    victim = next(n for n in _slot_nodes(cluster) if n.node_id == victim_node_id)
    cluster.remove_node(victim, allow_graceful=False)
    removed_at = time.monotonic()
    cluster.add_node(num_cpus=1, resources={SLOT: 1})
    return {"removed": victim_node_id, "removed_at": removed_at}


def _in_background(fn, *args) -> tuple[threading.Thread, dict]:
    """Run ``fn(*args)`` in a thread; its result or exception lands in the returned dict."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # re-raised by _finish in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _finish(thread: threading.Thread, box: dict, timeout: float):
    thread.join(timeout)
    assert not thread.is_alive(), f"the job did not finish within {timeout:.0f} s"
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_two_workers_on_two_nodes_survive_losing_a_node(
    cluster, data_root, tmp_path, mlflow_server
):
    """A 2-worker DeepSpeed ZeRO-2 run, one worker per node; once the first checkpoint is
    reported, the node of one worker is removed and a fresh node joins. The run resumes from
    its checkpoint (curriculum stage and schedule included) on the new node and finishes; the
    MLflow server holds every step exactly once, and the exported trainable-only checkpoint
    (an artifact, through HTTP) loads into a fresh model."""
    from steermoe.train.run import run

    cfg = tiny_config(
        tmp_path,
        data_root,
        mlflow_server.uri,
        "train.name=multinode",
        "train.num_workers=2",
        "train.placement_strategy=STRICT_SPREAD",
        "train.max_steps=9",
        "train.eval_every=3",
        "train.optim.warmup_steps=2",
        "model.steering.num_experts=4",
        "model.steering.top_k=2",
        "model.ctc.weight=0.3",
        "model.system_prompt=null",
        "train.curriculum=[{steps: 4, tasks: [asr]}, {tasks: [asr, aqa, fc]}]",
    )
    job, box = _in_background(run, cfg)
    _wait(lambda: reported_steps(mlflow_server.db, "multinode"), 300, "the first report")
    placed = _worker_nodes()
    slot_ids = {n.node_id for n in _slot_nodes(cluster)}
    events = _replace_a_node(cluster, next(iter(sorted(set(placed.values()) & slot_ids))))
    _wait(lambda: len(reported_steps(mlflow_server.db, "multinode")) > 1, 300, "a report")
    events["next_report_s"] = round(time.monotonic() - events.pop("removed_at"), 1)
    result = _finish(job, box, 600)
    print(f"[scale-out] node loss during training: {events}, placed on {sorted(placed.values())}")
    # The two workers sat on two different worker nodes, and one of those nodes was removed.
    assert len(set(placed.values())) == 2
    assert events["removed"] in placed.values()
    assert cluster.head_node.node_id not in placed.values()

    c = trk.client(mlflow_server.uri)
    r = c.get_run(result.run_id)
    assert r.info.status == "FINISHED"
    steps = sorted(m.step for m in c.get_metric_history(result.run_id, "val_loss"))
    assert steps == [3, 6, 9]
    history = sorted(m.step for m in c.get_metric_history(result.run_id, "history.train_loss"))
    assert history == list(range(1, 10))
    restarts = c.get_metric_history(result.run_id, "restarts")
    assert restarts[0].value == 0 and restarts[-1].value >= 1
    assert r.info.run_name == "multinode"
    assert r.data.params["train.placement_strategy"] == "STRICT_SPREAD"
    assert r.data.params["model.steering.top_k"] == "2"
    assert r.data.params["train.num_workers"] == "2"
    assert {"val_wer", "val_audio_gain", "val_audio_norm", "history.train_ctc_loss"} <= set(
        r.data.metrics
    )
    assert "routing.usage.l0.e0" in r.data.metrics
    # The curriculum moved from ASR alone to every task after step 4, across the restart.
    stages = sorted(c.get_metric_history(result.run_id, "curriculum_stage"), key=lambda m: m.step)
    assert [int(m.value) for m in stages] == [0, 1, 1]
    # Warmup then cosine: the steering lr ramps to its base value, then decays.
    lrs = [
        m.value
        for m in sorted(c.get_metric_history(result.run_id, "history.lr"), key=lambda m: m.step)
    ]
    assert lrs[0] == pytest.approx(0.005) and lrs[1] == pytest.approx(0.01)
    assert lrs[-1] < lrs[1]
    # Artifacts went through the server into its artifact root, not into a local folder.
    assert {a.path for a in c.list_artifacts(result.run_id, "final")} >= {
        "final/checkpoint",
        "final/config.yaml",
    }
    assert list(mlflow_server.artifacts.rglob("trainable.safetensors"))

    # The exported artefact is trainable-only and loads into a fresh model.
    files = sorted(p.name for p in result.checkpoint.iterdir())
    assert files == ["steermoe.json", "trainable.safetensors"]
    assert checkpoint_config(result.checkpoint) == cfg.model
    model = build_model(cfg.model)
    before = [p.clone() for _, p in model.trainable_parameters()]
    header = load_checkpoint(model, result.checkpoint)
    assert header["step"] == 9
    assert header["languages"] == ["en"]  # what Serve accepts in transcriptions
    assert any(not torch.equal(a, p) for a, (_, p) in zip(before, model.trainable_parameters()))


def test_sweep_over_nodes_survives_a_node_loss_and_a_tracking_server_restart(
    cluster, data_root, tmp_path, mlflow_server
):
    """Two concurrent one-worker trials, one per worker node. When both have reported, the
    node of one trial's worker is removed (a fresh node joins) and the MLflow server is
    stopped and started again. Both trials finish with every step logged once; the champion
    and its alias land in the server's registry."""
    from steermoe.sweep import finalize, run_sweep

    cfg = tiny_config(
        tmp_path,
        data_root,
        mlflow_server.uri,
        "train.num_workers=1",
        "train.max_steps=6",
        "train.eval_every=2",
        "sweep.name=spread",
        "sweep.search=grid",
        "sweep.space={'model.steering.num_experts': [2, 4]}",
        "sweep.max_concurrent_trials=2",
        "sweep.trial_cpus=0.05",
        "sweep.asha.enabled=false",
        "sweep.evaluate_best=false",
        "mlflow.registered_model=steermoe-spread",
    )
    trials = ["spread-000", "spread-001"]
    job, box = _in_background(run_sweep, cfg)
    both = lambda: all(reported_steps(mlflow_server.db, t) for t in trials)  # noqa: E731
    _wait(both, 400, "a report from both trials")
    placed = _worker_nodes()
    slot_ids = {n.node_id for n in _slot_nodes(cluster)}
    events = _replace_a_node(cluster, next(iter(sorted(set(placed.values()) & slot_ids))))
    down = time.monotonic()
    mlflow_server.stop()
    time.sleep(3)  # reports sent now must wait for the server
    mlflow_server.start()
    events["server_down_s"] = round(time.monotonic() - down, 1)
    result = _finish(job, box, 900)
    events["sweep_done_after_removal_s"] = round(time.monotonic() - events.pop("removed_at"), 1)
    print(f"[scale-out] node loss + server restart during a sweep: {events}")
    assert len(set(placed.values())) == 2  # the two trials' workers on two nodes

    c = trk.client(mlflow_server.uri)
    assert sorted(o.name for o in result.trials) == trials
    for o in result.trials:
        assert o.run_id, o
        steps = [m.step for m in c.get_metric_history(o.run_id, trk.REPORT_MARKER)]
        assert sorted(steps) == [2, 4, 6], (o.name, steps)  # each report exactly once
        history = sorted(m.step for m in c.get_metric_history(o.run_id, "history.train_loss"))
        assert history == list(range(1, 7)), (o.name, history)
    promoted = finalize(result, cfg)
    reg = promoted["registration"]
    version = c.get_model_version_by_alias("steermoe-spread", cfg.mlflow.alias)
    assert version.version == reg.version
    assert list(mlflow_server.artifacts.rglob("trainable.safetensors"))


def test_reports_wait_for_the_tracking_server_then_fail_with_a_clear_message(tmp_path):
    """A report sent while the server is down is retried with backoff; once the budget is
    spent the job fails naming the server and the setting."""
    from mlflow.exceptions import MlflowException

    port = free_port()  # nothing listens here
    uri = f"http://127.0.0.1:{port}"
    slept: list[float] = []
    with pytest.raises(trk.TrackingUnavailable, match=rf"127\.0\.0\.1:{port}.*mlflow\.retry_s"):
        trk.with_retries(
            lambda: trk.client(uri).get_experiment_by_name("x"),
            uri=uri,
            budget_s=20,
            what="logging the report of step 3",
            sleep=slept.append,
        )
    assert slept == [1, 2, 4, 8]  # 1 + 2 + 4 + 8 = 15; the next wait (16) would pass 20 s

    # A call that reached the server and was refused is not retried.
    def refused():
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run 'x' not found")

    slept.clear()
    with pytest.raises(MlflowException, match="not found"):
        trk.with_retries(refused, uri=uri, budget_s=20, what="x", sleep=slept.append)
    assert slept == []

    # The server comes back within the budget: the report lands.
    calls = iter([MlflowException("Max retries exceeded ... Connection refused"), "logged"])

    def flaky():
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert trk.with_retries(flaky, uri=uri, budget_s=20, what="x", sleep=slept.append) == "logged"
    assert slept == [1]

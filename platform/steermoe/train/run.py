"""``run(config)``: one training run on Ray Train, tracked in MLflow.

Builds the ``TorchTrainer`` (scaling, storage, failure and checkpoint settings from the config),
fits it, then copies the final trainable-only checkpoint and the resolved config to the run's
output folder and logs both as MLflow artifacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from steermoe import env
from steermoe import tracking as trk
from steermoe.config import Config, apply_overrides, to_dict, validate
from steermoe.model.checkpoint import MODEL_DIR, local_checkpoint, read_header
from steermoe.train.loop import (
    DEEPSPEED_DIR,
    METRICS_FILE,
    RESUME_DIR,
    STATE_FILE,
    check_resumable,
    resume_folder,
    train_fn_per_worker,
)


@dataclass
class TrainResult:
    """Where a finished run left its results."""

    run_id: str
    checkpoint: Path
    config_path: Path
    metrics: dict
    seconds: float


def storage_path(config: Config) -> Path:
    return Path(config.train.storage_path or env.cache_dir() / "runs").expanduser().resolve()


def check_init_from(config: Config) -> None:
    """Fail before any cluster work when ``train.init_from`` names no readable checkpoint or
    ``train.resume_from`` no saved run state."""
    if config.train.init_from:
        read_header(local_checkpoint(config.train.init_from))
    if config.train.resume_from:
        state = json.loads((resume_folder(config.train.resume_from) / STATE_FILE).read_text())
        if "config" in state:
            check_resumable(state["config"], config)


# Ray Train's record of a run's checkpoints, in the run's storage folder.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def recover_torn_snapshot(config: Config) -> Config:
    """A run whose controller died while writing Ray Train's checkpoint record (its node was
    lost) leaves that file empty or cut short, and Ray then refuses to start the run again.
    Set the torn record aside and continue from the newest complete checkpoint in the run's
    storage (``train.resume_from``); anything else is returned unchanged."""
    folder = storage_path(config) / config.train.name
    snapshot = folder / SNAPSHOT
    try:
        json.loads(snapshot.read_text())
        return config
    except FileNotFoundError:
        return config
    except ValueError:
        pass
    torn = snapshot.with_name(f"{SNAPSHOT}.torn")
    snapshot.replace(torn)
    complete = []
    for _, candidate in sorted(kept_checkpoints(config).items()):
        try:
            state = json.loads((candidate / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue  # written only in part when the node went
        if (candidate / DEEPSPEED_DIR / state.get("tag", "")).is_dir():
            complete.append(candidate)
    print(
        f"[train] {snapshot} was torn (moved to {torn.name}); continuing from "
        f"{complete[-1].name if complete else 'step 0 (no complete checkpoint)'}",
        flush=True,
    )
    if not complete:
        return config
    return validate(apply_overrides(to_dict(config), [f"train.resume_from={complete[-1]}"]))


def build_trainer(config: Config, *, callbacks: list | None = None):
    """The ``TorchTrainer`` for ``config``; every worker gets the config as a plain dict.

    Ray Train's workers send ``print`` to its logger and, since a Ray worker's stdout is a
    wrapper, to stdout as well: every progress line would reach the console twice. The
    workers keep the plain ``print``; their output is still in the session's worker logs.
    """
    # heavy: Ray is imported only when a trainer is actually built
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = config.train
    resources = {"CPU": t.cpus_per_worker, **t.worker_resources}
    if t.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"config": to_dict(config)},
        scaling_config=ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker=resources,
            placement_strategy=t.placement_strategy,
        ),
        run_config=RunConfig(
            name=t.name,
            storage_path=str(storage_path(config)),
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=t.keep_checkpoints,
                checkpoint_score_attribute=t.keep_metric,
                checkpoint_score_order=t.keep_mode,
            ),
            callbacks=callbacks or [],
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
    )


def run(config: Config, *, output_dir: str | Path | None = None) -> TrainResult:
    """Train, track in MLflow, and export the trainable-only checkpoint + resolved config."""
    import ray  # heavy: config checks and ship() import this module without starting Ray

    env.apply_defaults()
    check_init_from(config)
    uri = trk.tracking_uri(config)
    c = trk.client(uri)
    exp = trk.experiment_id(c, config.mlflow.experiment)
    run_id = trk.find_or_create_run(c, exp, config.train.name, tags={"steermoe.kind": "train"})
    changed = trk.log_config(c, run_id, config)
    print(f"[train] MLflow run {run_id} in {uri}", flush=True)
    if changed:
        print(
            "[train] continuing it with settings changed since its first start "
            "(tags continued.<key>): "
            + ", ".join(f"{k} {first} -> {now}" for k, (first, now) in changed.items()),
            flush=True,
        )

    if not ray.is_initialized():
        start_local_ray()
    config = recover_torn_snapshot(config)
    start = time.perf_counter()
    report = trk.make_report_callback(uri, run_id, retry_s=config.mlflow.retry_s)
    trainer = build_trainer(config, callbacks=[report])
    try:
        result = trainer.fit()
    except Exception:
        c.set_terminated(run_id, status="FAILED")
        raise
    seconds = time.perf_counter() - start

    out = Path(output_dir or storage_path(config) / config.train.name / "final").resolve()
    checkpoint, config_path = export(result.checkpoint, config, out)
    c.log_artifacts(run_id, str(out), artifact_path="final")
    c.log_metric(run_id, "train_seconds", seconds)
    c.set_terminated(run_id, status="FINISHED")
    print(f"[train] done in {seconds:.0f} s; checkpoint {checkpoint}", flush=True)
    return TrainResult(run_id, checkpoint, config_path, dict(result.metrics or {}), seconds)


def export(checkpoint, config: Config, out: Path) -> tuple[Path, Path]:
    """Copy the trainable-only checkpoint (not DeepSpeed's shards) and the resolved config."""
    if checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    target = out / "checkpoint"
    with checkpoint.as_directory() as folder:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(folder) / MODEL_DIR, target)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return target, config_path


def local_ray_kwargs() -> dict:
    """A local single-node Ray on 127.0.0.1 (used when no cluster address is given).

    Its dashboard takes 8265 where free, another port otherwise. The dashboard also serves
    the state API that Ray Train's helpers poll (its controller, its placement-group
    cleaner); they are told its address, since with several local clusters on the machine
    they would otherwise fail to find "the" cluster and take a live run for dead.

    Without ``$RAY_ADDRESS`` the cluster is always a new one of this job's own: a bare
    ``ray.init()`` would join whatever ``ray start`` last recorded on the machine (another
    user's cluster, or ``make demo``'s, which ends it when the demo stops).
    """
    if os.environ.get("RAY_ADDRESS"):
        return {"address": os.environ["RAY_ADDRESS"]}
    env.ensure_ray_token()
    port = env.free_port(8265)
    return {
        "address": "local",
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": port,
        "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
    }


# Ray gives a new local node a fixed 30 s to register (ray/_private/node.py); on a machine
# busy with a training run that can pass, and a second try usually succeeds.
_STARTUP_TIMEOUT = "timed out during startup"


def start_local_ray(attempts: int = 3) -> None:
    """``ray.init`` with :func:`local_ray_kwargs`, retried when the local node times out.

    A try that timed out leaves the processes it spawned running (Ray keeps no handle on
    them); those started by this process since the try began are ended before the next.
    Any other error, or the last timeout, is raised as is.
    """
    import psutil
    import ray

    me = psutil.Process()
    for attempt in range(1, attempts + 1):
        began = time.time()
        try:
            ray.init(**local_ray_kwargs())
            return
        except Exception as exc:
            if _STARTUP_TIMEOUT not in str(exc) or attempt == attempts:
                raise
            print(
                f"[ray] the local cluster did not start in time ({exc}); "
                f"trying again ({attempt + 1}/{attempts})",
                flush=True,
            )
            ray.shutdown()
            spawned = [p for p in me.children(recursive=True) if p.create_time() >= began - 1]
            for p in spawned:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            psutil.wait_procs(spawned, timeout=10)


def kept_checkpoints(config: Config) -> dict[int, Path]:
    """``{step: folder}`` of the checkpoints run ``train.name`` keeps in its storage."""
    folder = storage_path(config) / config.train.name
    steps = {p.name.removeprefix("checkpoint_step"): p for p in folder.glob("checkpoint_step*")}
    return {int(step): p for step, p in steps.items() if step.isdigit()}


def latest_checkpoint(config: Config) -> Path:
    """The newest checkpoint folder of run ``train.name`` in its storage.

    Raises:
        FileNotFoundError: the run has reported no checkpoint yet.
    """
    kept = kept_checkpoints(config)
    if not kept:
        folder = storage_path(config) / config.train.name
        raise FileNotFoundError(f"run {config.train.name!r} has no checkpoint in {folder}")
    return kept[max(kept)]


def step_checkpoint(config: Config, step: int) -> Path:
    """The checkpoint folder of run ``train.name`` at optimizer step ``step``.

    Raises:
        FileNotFoundError: no such checkpoint is kept (the message lists the steps that are).
    """
    kept = kept_checkpoints(config)
    if step not in kept:
        folder = storage_path(config) / config.train.name
        raise FileNotFoundError(
            f"run {config.train.name!r} keeps no checkpoint of step {step} in {folder} "
            f"(kept: {sorted(kept) or 'none'}; train.keep_checkpoints keeps the newest, or the best by train.keep_metric)"
        )
    return kept[step]


def best_checkpoint(config: Config) -> Path:
    """The kept checkpoint of run ``train.name`` with the best ``train.keep_metric``
    (``val_loss`` when unset) under ``train.keep_mode``; ties go to the newest.

    Raises:
        FileNotFoundError: the run keeps no checkpoint that reported the metric.
    """
    metric = config.train.keep_metric or "val_loss"
    sign = 1.0 if config.train.keep_mode == "min" else -1.0
    scored = []
    for step, folder in kept_checkpoints(config).items():
        metrics_file = folder / METRICS_FILE
        if metrics_file.is_file():
            value = json.loads(metrics_file.read_text()).get(metric)
            if isinstance(value, (int, float)) and value == value:  # not NaN
                scored.append((sign * value, -step, folder))
    if not scored:
        folder = storage_path(config) / config.train.name
        raise FileNotFoundError(
            f"run {config.train.name!r} keeps no checkpoint that reported {metric} in {folder}"
        )
    return min(scored)[2]


def ship(
    config: Config, dest: str | Path, step: int | None = None, *, best: bool = False
) -> tuple[Path, dict]:
    """Copy a run's newest checkpoint (that of ``step``, or with ``best`` the best kept one on
    validation: :func:`best_checkpoint`) to ``dest``: the trainable-only checkpoint at the top
    (loadable as a checkpoint folder or ``embedded:<name>``) and the full run state (DeepSpeed
    optimizer shards, scheduler, sampler and curriculum position) in ``dest/resume``, so
    ``train.resume_from`` continues it exactly on another machine.

    Returns:
        (the source checkpoint folder, the metrics reported with it).
    """
    if best and step is not None:
        raise ValueError("ship: give a step or best, not both")
    if best:
        source = best_checkpoint(config)
    else:
        source = latest_checkpoint(config) if step is None else step_checkpoint(config, step)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in (source / MODEL_DIR).iterdir():
        shutil.copy2(f, dest / f.name)
    resume = dest / RESUME_DIR
    if resume.exists():
        shutil.rmtree(resume)
    resume.mkdir()
    # DeepSpeed drops its zero_to_*.py conversion scripts beside every checkpoint: not needed.
    scripts = shutil.ignore_patterns("zero_to_*.py")
    shutil.copytree(source / DEEPSPEED_DIR, resume / DEEPSPEED_DIR, ignore=scripts)
    for name in (STATE_FILE, METRICS_FILE):
        shutil.copy2(source / name, resume / name)
    for states in (resume / DEEPSPEED_DIR).glob("*/*model_states.pt"):
        _keep_trainable(states)
    return source, json.loads((source / METRICS_FILE).read_text())


def _keep_trainable(path: Path) -> None:
    """Drop frozen tensors from a DeepSpeed model-states file (a weight tied to a frozen one,
    such as SmolLM2's output head, escapes ``exclude_frozen_parameters``: 57 MB of 60)."""
    states = torch.load(path, map_location="cpu", weights_only=False)
    states["module"] = {k: v for k, v in states["module"].items() if k.startswith("trainable.")}
    torch.save(states, path)

"""Registry promotion after a sweep: evaluate the best trial in full, then register it in
MLflow's model registry, moving the alias only when it beats the current holder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steermoe import tracking as trk
from steermoe.config import Config, set_path, to_dict
from steermoe.data.batches import data_root
from steermoe.data.examples import read_manifest
from steermoe.evaluate import evaluate_checkpoint
from steermoe.model.checkpoint import MODEL_DIR
from steermoe.sweep.bookkeeping import SweepResult
from steermoe.sweep.tuner import storage_path


def finalize(result: SweepResult, config: Config) -> dict[str, Any]:
    """Evaluate the best trial in full, then register it (alias only if it is better).

    Returns:
        ``{"best": name, "eval": {dataset: metrics}, "registration": Registration | None}``.
    """
    from steermoe import registry  # heavy: imports mlflow, which only promotion needs

    best = result.best
    if best is None or best.run_id is None:
        print("[sweep] no trial reported the sweep metric; nothing to register", flush=True)
        trk.client(result.tracking_uri).set_terminated(result.parent_run_id, status="FAILED")
        return {"best": None, "eval": {}, "registration": None}
    c = trk.client(result.tracking_uri)
    checkpoint = Path(best.checkpoint) / MODEL_DIR
    evaluation: dict[str, Any] = {}
    if config.sweep.evaluate_best:
        print(f"[sweep] evaluating best trial {best.name} on {list(config.eval.datasets)}")
        evaluation = evaluate_checkpoint(
            checkpoint,
            config,
            output_dir=storage_path(config) / config.sweep.name / "eval",
            run_id=best.run_id,
            tracking_uri=result.tracking_uri,
        )
    metric, mode = config.sweep.metric, config.sweep.mode
    value = best.metrics[metric]
    if config.sweep.promote_metric:
        dataset, _, name = config.sweep.promote_metric.partition(".")
        found = evaluation.get(dataset, {}).get(name)
        if not isinstance(found, int | float):
            c.set_terminated(result.parent_run_id, status="FAILED")
            produced = sorted(f"{d}.{m}" for d, ms in evaluation.items() for m in ms)
            raise RuntimeError(
                f"sweep.promote_metric {config.sweep.promote_metric} was not produced by the "
                f"evaluation of {best.name} (it produced {produced}); nothing was registered"
            )
        metric, mode, value = config.sweep.promote_metric, config.sweep.promote_mode, found
    resolved = to_dict(config)
    for key, override in best.overrides.items():
        set_path(resolved, key.split("."), override)
    reg = registry.register(
        c,
        name=config.mlflow.registered_model,
        run_id=best.run_id,
        checkpoint=checkpoint,
        config=resolved,
        example_audio=_example_clip(config),
        metric=metric,
        value=float(value),
        mode=mode,
        alias=config.mlflow.alias,
        tags={"steermoe.sweep": config.sweep.name, "steermoe.trial": best.name},
    )
    c.set_tag(result.parent_run_id, "registered_version", reg.version)
    c.set_terminated(result.parent_run_id, status="FINISHED")
    c.set_tag(result.parent_run_id, "promoted", str(reg.promoted).lower())
    verdict = "promoted to" if reg.promoted else "kept; the previous version holds"
    print(
        f"[sweep] registered {reg.name} v{reg.version} ({metric}={value:.4g}); {verdict} "
        f"@{config.mlflow.alias}",
        flush=True,
    )
    return {"best": best.name, "eval": evaluation, "registration": reg}


def _example_clip(config: Config) -> str | None:
    """The first validation clip (the registered model's input example), if there is one."""
    for spec in config.data.validation:
        path = data_root(config.data) / spec
        if path.is_file():
            examples = read_manifest(path)
            if examples:
                return examples[0].audio_path
    return None

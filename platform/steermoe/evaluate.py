"""Evaluate a checkpoint: batched greedy inference writes manifests, scoring reads them.

``evaluate_checkpoint`` runs, for each dataset of ``eval.datasets`` (a name known to
:mod:`steermoe.data.heldout` or a manifest/source path):

1. **Select**: every example of the set, ordered by id; ``eval.max_examples`` keeps the first
   N by id (deterministic, never a random slice).
2. **Infer**: examples sorted by (duration, id) so a batch holds clips of similar length,
   batches of ``eval.batch_size``, greedy decoding with ``SteerMoEModel.generate`` (the same
   call Serve makes). A clip that cannot be decoded is skipped with a warning naming it and
   counted under ``"skipped"``.
3. **Write** ``<output_dir>/<dataset>.jsonl`` (rows ordered by id): ``id, task, duration_s,
   latency_s, reference, prediction, language, audio_path`` plus the task's verdict fields
   (asr: ``wer``; aqa: ``kind, choices, correct``; fc: ``expected_calls, tools, category,
   valid, error_type, error``).
4. **Score** the manifest with :func:`evaluators.manifest.score_manifest`, per task present.
   ``score_only(output_dir)`` does exactly this step again, without a model.

Latency: the wall time of one batch (feature extraction, prompt tokenisation and
``generate``; not reading the audio files) is split evenly over its examples, so summed
latencies equal the measured inference time and RTFx = total audio seconds / that time.

The result maps each dataset label to its metrics (a single-task set: the scorer's flat
metrics; a mixed set: ``{task: metrics}``), plus three reserved keys: ``"unavailable"``
(label -> why it is missing), ``"skipped"`` (label -> {example id: reason}) and ``"failed"``
(label -> scoring error). With ``run_id`` the metrics go to MLflow as
``eval.<dataset>.<metric>`` (nested dicts flattened), the manifests and ``summary.json`` as
artifacts under ``eval/`` and the first rows of every set as the table ``eval/samples.json``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evaluators import asr as asr_eval
from evaluators.manifest import read_manifest, score_manifest, write_manifest
from evaluators.tasks import TASKS
from steermoe import env
from steermoe import tracking as trk
from steermoe.config import Config, DataConfig, EvalConfig, flatten
from steermoe.data.audio import SAMPLE_RATE
from steermoe.data.batches import data_root, decoding, instruction, load_batch
from steermoe.data.examples import Example
from steermoe.data.heldout import NAMES, DatasetUnavailable, fsdd_accuracy, named_dataset
from steermoe.data.sources import load_examples

log = logging.getLogger(__name__)

RESERVED = ("unavailable", "skipped", "failed")
SUMMARY = "summary.json"
SAMPLE_ROWS = 10
PROGRESS_EVERY_S = 10.0
_GENERIC_STEMS = {"test", "validation", "train", "manifest", "data"}


# --------------------------------------------------------------------------- datasets


def dataset_label(spec: str) -> str:
    """Name a dataset's manifest and metrics: a known name as is, a path by its file name.

    ``"librivox"`` -> ``"librivox"``; ``"data/asr/test.jsonl"`` -> ``"asr-test"``;
    ``"/x/mix.jsonl"`` -> ``"mix"``.
    """
    if spec in NAMES:
        return spec
    path = Path(spec.removeprefix("hf:").rstrip("/"))
    stem = path.stem if path.suffix == ".jsonl" else path.name
    if stem in _GENERIC_STEMS and path.parent.name:
        stem = f"{path.parent.name}-{stem}"
    label = re.sub(r"[^\w.-]+", "-", stem).strip("-.") or "dataset"
    return f"{label}-data" if label in RESERVED else label


def load_dataset(spec: str, config: Config) -> tuple[list[Example], dict[str, str]]:
    """Examples of a named set or source path, and the bad rows dropped while reading it.

    Raises:
        DatasetUnavailable: the set's files are not on this machine.
    """
    d = config.data
    root = data_root(d)
    if spec in NAMES:
        return named_dataset(spec, root=root, max_s=d.max_audio_s), {}
    try:
        examples, report = load_examples(
            spec, root=root, strict=d.strict, min_s=d.min_audio_s, max_s=d.max_audio_s
        )
    except FileNotFoundError as exc:
        raise DatasetUnavailable(
            f"{spec}: neither a named dataset ({', '.join(NAMES)}) nor an existing source ({exc})"
        ) from None
    return examples, dict(report.skipped)


def select(examples: Iterable[Example], max_examples: int | None) -> list[Example]:
    """Every example ordered by id; with ``max_examples`` the first N of that order."""
    ordered = sorted(examples, key=lambda ex: ex.id)
    return ordered[:max_examples] if max_examples is not None else ordered


# ---------------------------------------------------------------------------- records


def reference(ex: Example) -> str | list[str]:
    """What a prediction is scored against: the target, or every annotator's answer (aqa)."""
    answers = (ex.meta or {}).get("answers")
    if ex.task == "aqa" and isinstance(answers, list) and answers:
        return [str(a) for a in answers]
    return ex.target


def score_row(ex: Example, prediction: str) -> dict[str, Any]:
    """What the task's scorer reads of one example (:data:`evaluators.tasks.TASKS`): the
    prediction, the reference, the language and the task's own fields."""
    fields = {f: getattr(ex, f) for f in TASKS[ex.task].fields()}
    return {"reference": reference(ex), "prediction": prediction, "language": ex.language, **fields}


def verdict(ex: Example, prediction: str) -> dict[str, Any]:
    """Per-example verdict fields of the manifest (see the module docstring)."""
    return TASKS[ex.task].verdict({"id": ex.id, **score_row(ex, prediction)})


def make_record(ex: Example, prediction: str, latency_s: float) -> dict[str, Any]:
    """One manifest row: the required fields plus the task's fields and verdict."""
    row = {
        "id": ex.id,
        "task": ex.task,
        "duration_s": ex.duration_s,
        "latency_s": latency_s,
        **score_row(ex, prediction),
        "audio_path": ex.audio_path,
    }
    return {**row, **TASKS[ex.task].verdict(row)}


# -------------------------------------------------------------------------- inference


def _sync(device: Any) -> None:
    import torch  # heavy: rescoring and the demo import this module without a model

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def audio_limits(data: DataConfig, model: Any) -> DataConfig:
    """``data`` with ``max_audio_s`` lowered to the encoder's window (30 s for Whisper, 3 s
    for the tiny random one), so a longer clip is skipped and reported, not cut."""
    window = model.encoder.max_frames * model.feature_extractor.hop_length / SAMPLE_RATE
    if window >= data.max_audio_s:
        return data
    return data.model_copy(update={"max_audio_s": window})


def infer(
    model: Any, examples: Sequence[Example], config: Config, *, label: str, default_instruction: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Greedy-decode every example in duration-sorted batches (clips that cannot be read,
    break ``data``'s limits or exceed the encoder window are skipped).

    Returns:
        Manifest records ordered by id, and ``{example id: reason}`` for clips skipped as bad.
    """
    ev = config.eval
    data = audio_limits(config.data, model)
    todo = sorted(examples, key=lambda ex: (ex.duration_s, ex.id))
    records: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    start = last = time.perf_counter()
    for i in range(0, len(todo), ev.batch_size):
        loaded = load_batch(todo[i : i + ev.batch_size], data)
        skipped.update(loaded.skipped)
        if loaded.examples:
            records += _run_batch(model, loaded, ev, default_instruction)
        now = time.perf_counter()
        done = min(i + ev.batch_size, len(todo))
        if now - last >= PROGRESS_EVERY_S or done == len(todo):
            print(f"[eval] {label}: {done}/{len(todo)} examples, {now - start:.1f} s", flush=True)
            last = now
    return sorted(records, key=lambda r: r["id"]), skipped


def _run_batch(
    model: Any, loaded: Any, ev: EvalConfig, default_instruction: str
) -> list[dict[str, Any]]:
    """Collate, generate and time one batch; the latency is split evenly over its examples."""
    exs = loaded.examples
    prompts = [instruction(ex, default_instruction, model.tool_prompt) for ex in exs]
    _sync(model.device)
    tic = time.perf_counter()
    batch = model.collate(loaded.audios, prompts, ids=[ex.id for ex in exs]).to(model.device)
    generation = model.generate(
        batch,
        max_new_tokens=ev.max_new_tokens,
        decoding=[decoding(ex, ev.tool_grammar) for ex in exs],
    )
    _sync(model.device)
    latency = (time.perf_counter() - tic) / len(exs)
    records = []
    for i, (ex, text) in enumerate(zip(exs, generation.texts)):
        record = make_record(ex, text, latency)
        # How the answer ended: "stop" (by itself), "repeat" (the repetition guard cut a
        # loop) or "length" (the budget ran out); whether the tool grammar closed it.
        record["finish"] = "repeat" if generation.looped[i] else generation.finish_reasons[i]
        record["grammar_completed"] = generation.completed[i]
        records.append(record)
    return records


# ---------------------------------------------------------------------------- scoring


def _score_task(records: list[dict[str, Any]], task: str, label: str) -> dict[str, Any]:
    metrics = score_manifest(records, task)
    latencies = [r["latency_s"] for r in records]
    if "rtfx" not in metrics and sum(latencies) > 0:
        metrics["rtfx"] = asr_eval.rtfx([r["duration_s"] for r in records], latencies)
    finishes = [r["finish"] for r in records if "finish" in r]
    if finishes:  # answers that did not end by themselves: loops and budget cuts
        metrics["unfinished"] = sum(f != "stop" for f in finishes) / len(finishes)
    if primary_metric(label, task)[0] == "digit_accuracy":
        preds = [r["prediction"] for r in records]
        metrics["digit_accuracy"] = fsdd_accuracy(preds, [r["reference"] for r in records])
    return metrics


def primary_metric(label: str, task: str, language: str = "en") -> tuple[str, bool]:
    """The metric a dataset's task ranks by, and whether higher is better: the task
    scorer's (CER for ASR in languages written without spaces), except FSDD's single spoken
    digits, which rank by digit accuracy."""
    if label == "fsdd" and task == "asr":
        return "digit_accuracy", True
    scorer = TASKS[task].scorer
    metric = asr_eval.primary_metric(language) if task == "asr" else scorer.PRIMARY
    return metric, scorer.HIGHER_IS_BETTER


def manifest_paths(folder: Path) -> list[Path]:
    """The dataset manifests an evaluation wrote to ``folder`` (hidden files left out)."""
    return sorted(p for p in folder.glob("*.jsonl") if not p.name.startswith("."))


def score_records(records: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
    """Metrics of one manifest: flat for one task, ``{task: metrics}`` for a mixed set.

    Raises:
        ValueError: the evaluator cannot score the records (e.g. every reference empty).
    """
    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_task.setdefault(record.get("task", "asr"), []).append(record)
    if not by_task:
        return {"num_samples": 0}
    scored = {task: _score_task(rows, task, label) for task, rows in sorted(by_task.items())}
    return next(iter(scored.values())) if len(scored) == 1 else scored


def _score_into(results: dict[str, Any], label: str, records: Sequence[dict[str, Any]]) -> None:
    try:
        results[label] = score_records(records, label)
    except ValueError as exc:
        warnings.warn(f"eval: cannot score {label}: {exc}", stacklevel=3)
        results["failed"][label] = str(exc)


def _empty_results() -> dict[str, dict]:
    return {key: {} for key in RESERVED}


def score_only(
    output_dir: str | Path, *, run_id: str | None = None, tracking_uri: str | None = None
) -> dict[str, dict]:
    """Rescore every ``<output_dir>/*.jsonl`` manifest; never builds or runs a model.

    Args:
        output_dir: folder an evaluation wrote its manifests to.
        run_id: MLflow run to log the metrics to (``None`` = no logging).
        tracking_uri: MLflow URI for ``run_id`` (default ``$MLFLOW_TRACKING_URI`` or the
            local SQLite store).

    Returns:
        Metrics per dataset (the file stem) plus the reserved keys (``skipped`` and
        ``unavailable`` stay empty: only inference knows them).

    Raises:
        FileNotFoundError: no manifest in ``output_dir``.
    """
    folder = Path(output_dir)
    manifests = manifest_paths(folder)
    if not manifests:
        raise FileNotFoundError(f"no *.jsonl manifests in {folder}")
    results = _empty_results()
    for path in manifests:
        _score_into(results, path.stem, read_manifest(path))
    if run_id is not None:
        uri = tracking_uri or trk.default_tracking_uri()
        log_results(results, {p.stem: p for p in manifests}, run_id=run_id, tracking_uri=uri)
    return results


# ----------------------------------------------------------------------------- mlflow


def metric_dict(results: dict[str, Any]) -> dict[str, float]:
    """``eval.<dataset>.<metric>`` -> value for every finite number in ``results`` (nested
    dicts flattened, e.g. ``eval.synthetic-fc.error_types.<type>``), plus
    ``eval.<dataset>.num_skipped``; names keep only MLflow-safe characters."""
    data = {k: v for k, v in results.items() if k not in RESERVED}
    for label, skipped in results.get("skipped", {}).items():
        if isinstance(data.get(label), dict):
            data[label] = {**data[label], "num_skipped": len(skipped)}
    out = {}
    for key, value in flatten(data, "eval.").items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[re.sub(r"[^\w.\-/ ]", "_", key)] = float(value)
    return out


def sample_table(manifests: dict[str, Path], rows: int = SAMPLE_ROWS) -> dict[str, list]:
    """The first ``rows`` records of every manifest as columns (dataset, id, reference,
    prediction)."""
    table: dict[str, list] = {"dataset": [], "id": [], "reference": [], "prediction": []}
    for label, path in manifests.items():
        for record in read_manifest(path)[:rows]:
            ref = record["reference"]
            table["dataset"].append(label)
            table["id"].append(record["id"])
            table["reference"].append(" | ".join(ref) if isinstance(ref, list) else str(ref))
            table["prediction"].append(record["prediction"])
    return table


def log_results(
    results: dict[str, Any],
    manifests: dict[str, Path],
    *,
    run_id: str,
    tracking_uri: str,
    summary: Path | None = None,
) -> None:
    """Log metrics, manifests (+ summary) under ``eval/`` and the sample table to a run."""
    from mlflow.entities import Metric  # heavy: training workers import this module

    c = trk.client(tracking_uri)
    now = int(time.time() * 1000)
    rows = [Metric(k, v, now, 0) for k, v in metric_dict(results).items()]
    for i in range(0, len(rows), 500):
        c.log_batch(run_id, metrics=rows[i : i + 500])
    for path in [*manifests.values(), *([summary] if summary else [])]:
        c.log_artifact(run_id, str(path), artifact_path="eval")
    table = sample_table(manifests)
    if table["id"]:
        c.log_table(run_id, data=table, artifact_file="eval/samples.json")


# ------------------------------------------------------------------------------- main


def resolve_output_dir(config: Config, output_dir: str | Path | None = None) -> Path:
    """Manifest folder: ``output_dir``, else ``eval.output_dir``, else ``<cache>/eval``."""
    if output_dir is not None:
        return Path(output_dir).expanduser()
    if config.eval.output_dir:
        return Path(config.eval.output_dir).expanduser()
    return env.cache_dir() / "eval"


def load_for_inference(checkpoint: str | Path, model: Any = None) -> tuple[Any, str]:
    """The model with the checkpoint loaded (built from its own config when not given), and
    the checkpoint's default instruction (the one Serve uses)."""
    # Heavy (torch, transformers): rescoring and the demo import this module without a model.
    import torch

    from steermoe.model import build_model, load_checkpoint
    from steermoe.model.checkpoint import inference_config, local_checkpoint

    checkpoint = local_checkpoint(checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_config = inference_config(checkpoint, device)
    if model is None:
        model = build_model(model_config, device=device)
    load_checkpoint(model, checkpoint)
    model.eval()
    return model, model_config.default_instruction


def evaluate_checkpoint(
    checkpoint: str | Path,
    config: Config,
    *,
    datasets: Sequence[str] | None = None,
    output_dir: str | Path | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    model: Any = None,
) -> dict[str, dict]:
    """Run batched inference of a checkpoint on datasets, write manifests and score them.

    Args:
        checkpoint: trainable-only checkpoint folder.
        config: supplies ``eval`` (batch size, token budget, cap, output folder), ``data``
            (data root, audio limits, ``strict``) and ``mlflow``.
        datasets: names or source paths (default ``config.eval.datasets``).
        output_dir: manifest folder (default ``eval.output_dir`` or ``<cache>/eval``).
        run_id: MLflow run to log metrics, manifests and samples to (``None`` = no logging).
        tracking_uri: MLflow URI (default from ``config``).
        model: an already built model with the checkpoint's backbones (the checkpoint is
            loaded into it); ``None`` builds one from the checkpoint's own model config.

    Returns:
        Metrics per dataset label plus ``unavailable``, ``skipped`` and ``failed`` (see the
        module docstring).

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        DataError: a bad example while ``data.strict`` is set.
    """
    out = resolve_output_dir(config, output_dir)
    model, default_instruction = load_for_inference(checkpoint, model)
    results = _empty_results()
    manifests: dict[str, Path] = {}
    for spec in dict.fromkeys(datasets if datasets is not None else config.eval.datasets):
        path = _evaluate_dataset(model, spec, config, out, default_instruction, results)
        if path is not None:
            manifests[path.stem] = path
    summary = _write_summary(out, checkpoint, results)
    print(f"[eval] manifests in {out}", flush=True)
    if run_id is not None:
        uri = tracking_uri or trk.tracking_uri(config)
        log_results(results, manifests, run_id=run_id, tracking_uri=uri, summary=summary)
    return results


def _evaluate_dataset(
    model: Any,
    spec: str,
    config: Config,
    out: Path,
    default_instruction: str,
    results: dict[str, Any],
) -> Path | None:
    """Infer, write and score one dataset into ``results``; its manifest, or ``None`` when
    the dataset is unavailable."""
    label = dataset_label(spec)
    try:
        examples, bad = load_dataset(spec, config)
    except DatasetUnavailable as exc:
        warnings.warn(f"eval: skipping unavailable dataset {spec}: {exc}", stacklevel=3)
        results["unavailable"][label] = str(exc)
        return None
    chosen = select(examples, config.eval.max_examples)
    records, skipped = infer(
        model, chosen, config, label=label, default_instruction=default_instruction
    )
    bad.update(skipped)
    if bad:
        warnings.warn(f"eval: {label}: skipped {_ids(bad)}", stacklevel=3)
    results["skipped"][label] = bad
    path = write_manifest(out / f"{label}.jsonl", records)
    _score_into(results, label, records)
    return path


def _write_summary(out: Path, checkpoint: str | Path, results: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / SUMMARY
    path.write_text(json.dumps({"checkpoint": str(checkpoint), "results": results}, indent=2))
    return path


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table: one line per dataset (and task) with its main numbers."""
    keys = (
        "num_samples",
        "wer",
        "cer",
        "wer_raw",
        "accuracy",
        "digit_accuracy",
        "unfinished",
        "rtfx",
    )
    lines = [f"{'dataset':<28} " + " ".join(f"{k:>14}" for k in keys)]
    for label, metrics in results.items():
        if label in RESERVED:
            continue
        tasks = metrics if all(isinstance(v, dict) for v in metrics.values()) else {"": metrics}
        for task, m in tasks.items():
            name = f"{label}/{task}" if task else label
            cells = [_cell(m.get(k)) for k in keys]
            lines.append(f"{name:<28} " + " ".join(f"{c:>14}" for c in cells))
    for label, reason in results.get("unavailable", {}).items():
        lines.append(f"{label:<28} unavailable: {reason.splitlines()[0][:100]}")
    for label, reason in results.get("failed", {}).items():
        lines.append(f"{label:<28} not scored: {reason[:100]}")
    for label, bad in results.get("skipped", {}).items():
        if bad:
            lines.append(f"{label:<28} skipped {_ids(bad)}")
    return "\n".join(lines)


def _ids(skipped: dict[str, str], shown: int = 5) -> str:
    """``"3 example(s): a (reason), b (reason), ..."`` for warnings and the table."""
    items = [f"{i} ({skipped[i]})" for i in sorted(skipped)[:shown]]
    more = ", ..." if len(skipped) > shown else ""
    return f"{len(skipped)} example(s): {', '.join(items)}{more}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

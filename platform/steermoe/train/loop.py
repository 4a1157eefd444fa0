"""``train_fn_per_worker``: the whole training loop of one Ray Train worker, top to bottom.

forward -> loss -> backward -> step, every ``train.eval_every`` steps: validation loss, a
quick validation WER, routing statistics, then every rank saves its DeepSpeed shard,
barrier, and ``ray.train.report(metrics, checkpoint)``. A restarted worker resumes from the
last reported checkpoint with step, optimizer, scheduler and data order restored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluators.tasks import TASKS
from steermoe import env
from steermoe.config import Config, flatten, to_dict, validate
from steermoe.data.batches import (
    Loaded,
    TrainStream,
    build_stream,
    decoding,
    load_batch,
    load_split,
    prepare_ctc,
    teacher_forced_batch,
)
from steermoe.data.examples import Example
from steermoe.evaluate import score_row
from steermoe.model import build_model, save_checkpoint
from steermoe.model.checkpoint import MODEL_DIR, local_checkpoint, warm_start
from steermoe.optim import build_optimizer, build_scheduler
from steermoe.tracking import fmt_seconds
from steermoe.train import distributed

log = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
METRICS_FILE = "metrics.json"
DEEPSPEED_DIR = "deepspeed"


def train_fn_per_worker(train_config: dict) -> None:
    """One worker. ``train_config = {"config": <Config as a plain dict>}``, nothing captured."""
    import ray.train  # heavy: the benchmarks and tests import this module without Ray

    env.apply_defaults()
    config = validate(train_config["config"])
    t = config.train
    if config.model.num_threads:
        torch.set_num_threads(config.model.num_threads)
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = _device(t.use_gpu, ctx.get_local_rank())

    model = build_model(config.model, device=device, seed=t.seed)
    if t.init_from and not (t.resume_from or ray.train.get_checkpoint()):
        loaded, skipped = warm_start(model, local_checkpoint(t.init_from))
        if rank == 0:
            print(
                f"[train] warm start from {t.init_from}: {len(loaded)} tensors loaded"
                + (f", {len(skipped)} kept fresh ({', '.join(skipped)})" if skipped else "")
            )
    window = model.max_audio_s  # clips longer than the encoder window are skipped, counted
    train_examples = load_split(config, "train", max_s=window)
    val_examples = validation_slice(
        load_split(config, "validation", max_s=window), config.data.max_validation_examples
    )
    stream = build_stream(config, train_examples, model, rank=rank, world_size=world_size)
    languages = sorted({ex.language.split("-")[0].lower() for ex in train_examples})
    prepare_ctc(model, config, train_examples)
    ctc = model.trainable.ctc
    optimizer = build_optimizer(model, t.optim)
    scheduler = build_scheduler(optimizer, t.optim, t.max_steps)
    engine, optimizer, scheduler = distributed.init(config, model, optimizer, scheduler, device)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and t.resume_from:
        checkpoint = ray.train.Checkpoint.from_directory(str(resume_folder(t.resume_from)))
        if rank == 0:
            print(f"[train] no checkpoint in this run's storage: continuing {t.resume_from}")
    step, restarts, last_report = _resume(engine, stream, checkpoint, config)
    # The restored checkpoint's report goes out again with the next one: if the previous
    # driver died between persisting it and logging it, MLflow still gets it (exactly once).
    backfill = [last_report] if last_report else []
    if step >= t.max_steps and last_report:
        # Finished before a restart (e.g. the sweep driver died after the last checkpoint):
        # report the final result again so Tune and MLflow see it; nothing is retrained.
        ray.train.report({**last_report, "backfill": "[]"})
        return
    if rank == 0:
        print(
            f"[train] rank 0/{world_size}: {len(train_examples)} train / {len(val_examples)} "
            f"validation examples, {sum(p.numel() for _, p in model.trainable_parameters()):,} "
            f"trainable parameters, starting at step {step}/{t.max_steps}",
            flush=True,
        )

    batches = iter(stream)
    history: list[dict] = []
    window_loss, window_tokens, window_samples = 0.0, 0, 0
    window_ctc, window_batches = 0.0, 0
    window_start = time.perf_counter()
    train_time = 0.0
    pace = Pace(step, t.max_steps)
    model.train()
    while step < t.max_steps:
        step_start = time.perf_counter()
        lr = scheduler.get_last_lr()[0]  # the steering-group lr this step uses
        for _ in range(t.grad_accum):
            loaded = next(batches)
            batch = teacher_forced_batch(model, loaded, config.model.default_instruction, device)
            out = engine(batch)
            engine.backward(out["loss"])
            engine.step()
            n_tokens = int(out["num_tokens"])
            window_loss += float(out["lm_loss"]) * n_tokens
            window_tokens += n_tokens
            window_ctc += float(out["ctc_loss"])
            window_batches += 1
            window_samples += len(loaded.examples)
        step += 1
        train_time += time.perf_counter() - step_start

        if step % t.log_every == 0 or step % t.eval_every == 0 or step == t.max_steps:
            (loss,) = distributed.all_mean([window_loss / max(window_tokens, 1)], window_tokens)
            (ctc_loss,) = distributed.all_mean([window_ctc / max(window_batches, 1)], 1.0)
            entry = {"step": step, "train_loss": loss, "lr": lr, "grad_norm": _grad_norm(engine)}
            if ctc is not None:
                entry["train_ctc_loss"] = ctc_loss
            entry["stage"] = stream.stage.index
            history.append(entry)
            if rank == 0:
                shown = f" ctc {ctc_loss:.4f}" if ctc is not None else ""
                print(
                    f"[train] step {step}/{t.max_steps} loss {loss:.4f}{shown} "
                    f"stage {stream.stage.index} | {pace.report(step)}",
                    flush=True,
                )
            window_loss, window_tokens, window_ctc, window_batches = 0.0, 0, 0.0, 0

        if step % t.eval_every == 0 or step == t.max_steps:
            model.eval()
            metrics = validate_quick(model, val_examples, config, rank, world_size, device)
            model.train()
            (samples,) = distributed.all_mean([window_samples], 1.0)
            elapsed = time.perf_counter() - window_start
            metrics.update(
                {
                    "step": step,
                    "epoch": stream.sampler.epoch,
                    "train_loss": history[-1]["train_loss"],
                    "curriculum_stage": stream.stage.index,
                    "samples_per_s": samples * world_size / max(train_time, 1e-9),
                    "samples_per_s_wall": samples * world_size / max(elapsed, 1e-9),
                    "skipped_examples": stream.skipped,
                    "restarts": restarts,
                    "train_history": json.dumps(history),
                    "backfill": json.dumps(backfill),
                }
            )
            if model.steering is not None:
                metrics.update(_routing(model, val_examples, config, device))
            _save_and_report(engine, model, config, stream, step, restarts, metrics, languages)
            history, backfill = [], []
            window_samples, train_time = 0, 0.0
            window_start = time.perf_counter()
            if rank == 0:
                shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}
                print(f"[train] step {step}: {shown}", flush=True)


RESUME_DIR = "resume"


class Pace:
    """Seconds per step and the time left, from the wall clock since this process started
    training (validation and checkpoints included, so the estimate holds for the whole run)."""

    def __init__(self, first_step: int, max_steps: int, clock=time.monotonic):
        self.first_step, self.max_steps, self.clock = first_step, max_steps, clock
        self.start = clock()

    def report(self, step: int) -> str:
        done = step - self.first_step
        if done <= 0:
            return "eta unknown"
        per_step = (self.clock() - self.start) / done
        return f"{per_step:.2f} s/step, eta {fmt_seconds(per_step * (self.max_steps - step))}"


def resume_folder(ref: str) -> Path:
    """Folder of a saved run state: ``embedded:<name>`` -> its shipped ``resume/`` folder.

    Raises:
        FileNotFoundError: no ``train_state.json`` there.
    """
    if ref.startswith(env.EMBEDDED_PREFIX):
        folder = local_checkpoint(ref) / RESUME_DIR
    else:
        folder = Path(ref).expanduser()
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"train.resume_from: no saved run state ({STATE_FILE}) in {folder}")
    return folder


def validation_slice(examples: list[Example], n: int) -> list[Example]:
    """Deterministic slice of ``n`` examples taking the tasks in turn (sorted by id within
    each task), so the quick metrics cover every task in the validation sources."""
    by_task: dict[str, list[Example]] = {}
    for ex in sorted(examples, key=lambda e: e.id):
        by_task.setdefault(ex.task, []).append(ex)
    queues = [by_task[t] for t in sorted(by_task)]
    out: list[Example] = []
    i = 0
    while len(out) < n and any(i < len(q) for q in queues):
        out.extend(q[i] for q in queues if i < len(q))
        i += 1
    return out[:n]


def _device(use_gpu: bool, local_rank: int) -> torch.device:
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("train.use_gpu is true but CUDA is not available on this worker")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else float("nan")


@torch.no_grad()
def validate_quick(
    model, examples: list[Example], config: Config, rank: int, world_size: int, device
) -> dict[str, float]:
    """Validation loss over the slice plus greedy-decoded scores per task.

    ``val_wer`` (ASR), ``val_aqa_accuracy`` and ``val_fc_accuracy`` are computed with the
    same evaluators as the full evaluation. ``val_audio_gain`` is the validation loss with
    each clip's audio swapped for another clip's of its batch, minus ``val_loss`` (nats per
    token): near 0 the LLM only learns the text prior, it grows as the model listens.
    ``val_audio_norm`` is the mean L2 norm of the audio tokens (the LLM's text embeddings have
    ``text_embedding_norm``). Each rank takes a disjoint shard; losses are token-weighted
    across ranks and predictions gathered so every rank gets the same scores.
    """
    shard = examples[rank::world_size]
    bs = config.train.batch_size
    loss_sum, tokens = 0.0, 0
    swapped_sum, swapped_tokens, norm_sum, norm_count = 0.0, 0, 0.0, 0
    rows: list[tuple[Example, str]] = []
    for i in range(0, len(shard), bs):
        loaded = load_batch(shard[i : i + bs], config.data, model.max_audio_s)
        if not loaded.examples:
            continue
        batch, scores = scored_batch(model, loaded, config.model.default_instruction, device)
        loss_sum += scores.loss * scores.tokens
        tokens += scores.tokens
        if scores.gain is not None:
            swapped_sum += scores.gain * scores.tokens
            swapped_tokens += scores.tokens
        audio, mask = model.project(batch.features, batch.feature_lengths)
        norms = audio.float().norm(dim=-1)[mask]
        norm_sum += float(norms.sum())
        norm_count += int(norms.numel())
        gen = model.generate(
            batch,
            max_new_tokens=config.eval.max_new_tokens,
            decoding=[decoding(ex, config.eval.tool_grammar) for ex in loaded.examples],
        )
        rows += list(zip(loaded.examples, gen.texts))
    (val_loss,) = distributed.all_mean([loss_sum / max(tokens, 1)], tokens)
    (gain,) = distributed.all_mean([swapped_sum / max(swapped_tokens, 1)], swapped_tokens)
    (norm,) = distributed.all_mean([norm_sum / max(norm_count, 1)], norm_count)
    table = model.llm.get_input_embeddings().weight
    metrics = {
        "val_loss": val_loss,
        "val_audio_gain": gain,
        "val_audio_norm": norm,
        "text_embedding_norm": float(table.detach().float().norm(dim=-1).mean()),
    }
    every = [r for part in distributed.all_gather(rows) for r in part]
    metrics.update(task_scores(every))
    return metrics


@dataclass(frozen=True)
class BatchScores:
    """Teacher-forced scores of one batch: LM loss (nats per target token), the number of
    target tokens, and the audio gain (the loss with each clip's audio swapped for the next
    clip's, minus ``loss``; None for a batch of one)."""

    loss: float
    tokens: int
    gain: float | None


def scored_batch(model, loaded, default_instruction: str, device):
    """``(the teacher-forced batch, its BatchScores)`` for a loaded batch."""
    batch = teacher_forced_batch(model, loaded, default_instruction, device)
    out = model(batch)
    loss, tokens, gain = float(out["lm_loss"]), int(out["num_tokens"]), None
    if len(loaded.examples) > 1:
        swapped = model(swapped_audio_batch(model, loaded, default_instruction, device))
        gain = float(swapped["lm_loss"]) - loss  # same targets, same token count
    return batch, BatchScores(loss, tokens, gain)


def swapped_audio_batch(model, loaded, default_instruction: str, device):
    """The same batch with each example's audio replaced by the next example's (rotated)."""
    audios = loaded.audios[1:] + loaded.audios[:1]
    return teacher_forced_batch(
        model, Loaded(loaded.examples, audios, []), default_instruction, device
    )


def task_scores(rows: list[tuple[Example, str]]) -> dict[str, float]:
    """Each task's primary metric of (example, prediction) pairs, under its validation name
    (``val_wer``, ``val_aqa_accuracy``, ``val_fc_accuracy``: :data:`evaluators.tasks.TASKS`)."""
    by_task: dict[str, list[dict]] = {}
    for ex, pred in rows:
        by_task.setdefault(ex.task, []).append(score_row(ex, pred))
    out: dict[str, float] = {}
    for name, scored in by_task.items():
        task = TASKS[name]
        try:
            out[task.val_metric] = task.score(scored)[task.scorer.PRIMARY]
        except ValueError as exc:  # e.g. every reference empty after normalisation
            log.warning("no %s: %s", task.val_metric, exc)
    return out


@torch.no_grad()
def _routing(model, examples: list[Example], config: Config, device) -> dict[str, float]:
    """Expert usage per layer and aux losses on the first validation batch."""
    loaded = load_batch(examples[: config.train.batch_size], config.data, model.max_audio_s)
    if not loaded.examples:
        return {}
    batch = model.collate(loaded.audios, ["" for _ in loaded.examples]).to(device)
    model.encode(batch.features, batch.feature_lengths)
    return {f"routing/{k}": v for k, v in model.steering.routing_summary().items()}


def _save_and_report(
    engine,
    model,
    config: Config,
    stream,
    step: int,
    restarts: int,
    metrics: dict,
    languages: list[str],
) -> None:
    """Every rank saves its DeepSpeed shard; rank 0 adds the trainable-only checkpoint (its
    header names the ``languages`` trained on: Serve accepts those in transcriptions)."""
    import ray.train  # heavy: the benchmarks and tests import this module without Ray

    rank, _ = distributed.world()
    tag = f"step{step:07d}"
    with tempfile.TemporaryDirectory(prefix="steermoe-ckpt-") as tmp:
        root = Path(tmp)
        engine.save_checkpoint(
            str(root / DEEPSPEED_DIR),
            tag=tag,
            client_state={"step": step, "sampler": stream.state_dict(), "restarts": restarts},
            save_latest=False,
            exclude_frozen_parameters=True,
        )
        if rank == 0:
            with _gathered(model, config):
                save_checkpoint(
                    model,
                    config.model,
                    root / MODEL_DIR,
                    extra={"step": step, "languages": languages},
                )
            (root / STATE_FILE).write_text(
                json.dumps({"step": step, "tag": tag, "config": to_dict(config)})
            )
            (root / METRICS_FILE).write_text(json.dumps({**metrics, "backfill": "[]"}))
        distributed.barrier()
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_{tag}",
        )


def _gathered(model, config: Config):
    """Full trainable tensors on every rank (ZeRO-3 partitions them); a no-op below stage 3."""
    if config.train.zero_stage == 3:
        import deepspeed  # heavy, and needed for ZeRO-3 only

        params = [p for _, p in model.trainable_parameters()]
        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


# Settings a run may change when it is continued: how long, how often, where it reports.
RESUMABLE_CHANGES = (
    "train.name",  # a run continued elsewhere (train.resume_from) may take a new name
    "train.max_steps",
    "train.eval_every",
    "train.log_every",
    "train.keep_checkpoints",
    "train.keep_metric",
    "train.keep_mode",
    "train.max_failures",
    "train.storage_path",
    "train.resume_from",
    "train.init_from",
    "data.max_validation_examples",
    "model.num_threads",
    "eval.",
    "serve.",
    "sweep.",
    "mlflow.",
)


def check_resumable(saved: dict, config: Config) -> None:
    """Fail when a run is continued with settings that change what it trains.

    Raises:
        ValueError: naming every key whose value differs from the checkpoint's config.
    """
    before, now = flatten(saved), flatten(to_dict(config))
    # Keys the checkpoint does not know came with a newer version and keep their defaults.
    changed = sorted(
        key
        for key in set(before) & set(now)
        if before[key] != now[key] and not key.startswith(RESUMABLE_CHANGES)
    )
    if changed:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
        raise ValueError(
            f"cannot continue run {config.train.name!r}: its checkpoint was trained with other "
            f"settings ({shown}); continue with the same config, or start a new run with "
            f"another train.name (train.init_from=<checkpoint> warm-starts it)"
        )


def _resume(
    engine, stream: TrainStream, checkpoint, config: Config
) -> tuple[int, int, dict | None]:
    """Restore engine (trainable weights, optimizer, scheduler) and data order.

    Returns:
        (step to continue from, times this run has been restarted, the metrics reported with
        the restored checkpoint).
    """
    if checkpoint is None:
        return 0, 0, None
    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
        if "config" in state:
            check_resumable(state["config"], config)
        metrics_file = Path(folder) / METRICS_FILE
        last = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        path, client = engine.load_checkpoint(
            os.path.join(folder, DEEPSPEED_DIR),
            tag=state["tag"],
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
    if path is None:
        raise RuntimeError(f"could not restore the DeepSpeed checkpoint {state['tag']}")
    stream.load_state_dict(client["sampler"])
    print(f"[train] resumed from {state['tag']} (step {client['step']})", flush=True)
    return int(client["step"]), int(client.get("restarts", 0)) + 1, last

"""Helpers shared by the benchmarks (:mod:`steermoe.bench.model`, :mod:`steermoe.bench.train`).

Every benchmark compares two sides *in one run*: both are warmed up, then called alternately
(A B, B A, A B, ...) so that drift in machine load hits both alike, and medians are reported
together with their ratio and the device they ran on.

Also here: the trainable-parameter arithmetic of the method (README: SteerMoE Platform), a
context manager that stops greedy decoding from ending early (fixed-length generation), and
a plain single-process training step (AdamW groups, backward, clip, step; fp32 master
weights under bf16) used as the bare-PyTorch baseline of the platform's training path.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from steermoe.data.batches import build_stream, load_split, prepare_ctc, teacher_forced_batch
from steermoe.data.heldout import LIBRIVOX
from steermoe.model import build_model
from steermoe.optim import build_scheduler, param_groups

# ------------------------------------------------------------------------------ devices


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when present, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def device_label(device: torch.device) -> str:
    """Human description of where a benchmark ran (GPU name, or CPU model and threads)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"cpu ({cpu}; {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__})"
    )


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------- timing


@dataclass
class Comparison:
    """Interleaved timings (seconds per call) of two or more sides."""

    times: dict[str, list[float]]

    def median(self, side: str) -> float:
        return statistics.median(self.times[side])

    def ratio(self, numerator: str, denominator: str) -> float:
        """median(numerator) / median(denominator)."""
        return self.median(numerator) / self.median(denominator)

    def min_ratio(self, numerator: str, denominator: str) -> float:
        """min(numerator) / min(denominator): the least disturbed calls (busy machines)."""
        return min(self.times[numerator]) / min(self.times[denominator])

    def describe(self, side: str, unit: float = 1.0, per: str = "call") -> str:
        """``median 12.3 ms/call (min 11.9, max 13.0, n 5)`` for one side."""
        values = [v * 1000 / unit for v in self.times[side]]
        return (
            f"median {statistics.median(values):.1f} ms/{per} "
            f"(min {min(values):.1f}, max {max(values):.1f}, n {len(values)})"
        )


def interleave(
    sides: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    device: torch.device | None = None,
) -> Comparison:
    """Time each side ``repeats`` times, alternating their order every round (ABBA...).

    Args:
        sides: name -> zero-argument callable doing one unit of work.
        repeats: timed calls per side.
        warmup: untimed calls per side first (allocations, lazy init, caches).
        device: synchronised around every call when it is a GPU.
    """
    names = list(sides)
    dev = device or torch.device("cpu")
    for _ in range(warmup):
        for name in names:
            sides[name]()
    synchronize(dev)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            synchronize(dev)
            start = time.perf_counter()
            sides[name]()
            synchronize(dev)
            times[name].append(time.perf_counter() - start)
    return Comparison(times)


# ------------------------------------------------------------------------------- inputs


def speech_windows(seconds: float, count: int, folder: str | Path = LIBRIVOX) -> tuple[list, str]:
    """``count`` windows of ``seconds`` of real speech (LibriVox clips joined end to end).

    Falls back to low-level noise when ``pocketsphinx-testdata`` is not installed.

    Returns:
        (16 kHz float32 waves, a note saying where they came from).
    """
    paths = sorted(glob.glob(os.path.join(folder, "*.wav")))
    size = int(seconds * 16000)
    if not paths:
        rng = np.random.default_rng(0)
        waves = [(0.05 * rng.standard_normal(size)).astype(np.float32) for _ in range(count)]
        return waves, f"{count} x {seconds:g} s of noise (no LibriVox clips in {folder})"
    stream = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    while len(stream) < size * count:
        stream = np.concatenate([stream, stream])
    waves = [stream[i * size : (i + 1) * size].copy() for i in range(count)]
    return waves, f"{count} x {seconds:g} s windows of real LibriVox speech"


# --------------------------------------------------------------------------- parameters


def steering_param_count(*, dim: int, layers: int, experts: int, llm_dim: int) -> dict[str, int]:
    """Trainable parameters of SteerMoE with a linear projector (README: SteerMoE Platform).

    router Linear(D -> L*N) with bias: D*L*N + L*N; vectors E: L*N*D; scales a: L;
    projector Linear(D -> H): D*H + H.
    """
    counts = {
        "router": dim * layers * experts + layers * experts,
        "vectors": layers * experts * dim,
        "scales": layers,
        "projector": dim * llm_dim + llm_dim,
    }
    counts["total"] = sum(counts.values())
    return counts


def count_trainable(module: torch.nn.Module) -> int:
    """Parameters with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- decoding


@contextlib.contextmanager
def suppress_tokens(model, token_ids: Sequence[int]) -> Iterator[None]:
    """Give ``token_ids`` a huge negative logit while active (forced fixed-length decoding).

    An untrained model may emit its stop token at any step; with the stop tokens suppressed
    every example decodes exactly ``max_new_tokens`` tokens, so throughputs compare fairly.
    """
    ids = torch.tensor(list(token_ids), dtype=torch.long)

    def hook(_module, _inputs, logits: torch.Tensor) -> torch.Tensor:
        logits[..., ids.to(logits.device)] = torch.finfo(logits.dtype).min
        return logits

    handle = model.llm.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------- bare training


class BareStep:
    """One plain PyTorch optimisation step over a SteerMoE model, no framework around it.

    AdamW with the paper's three parameter groups (:func:`steermoe.optim.param_groups`), the
    warmup/decay schedule, ``loss.backward()``, gradient clipping before the step. When the
    backbones are bf16 the trainable part is cast to bf16 too and AdamW updates fp32 master
    copies (what DeepSpeed's bf16 mode does), so both sides do the same arithmetic.

    Args:
        model: a :class:`~steermoe.model.SteerMoEModel`.
        optim: the ``train.optim`` config.
        max_steps: length of the schedule.
    """

    def __init__(self, model, optim, *, max_steps: int) -> None:
        self.model = model
        self.grad_clip = optim.grad_clip
        dtype = model.llm.get_input_embeddings().weight.dtype
        self.params = [p for _, p in model.trainable_parameters()]
        self.masters: list[torch.Tensor] | None = None
        groups = param_groups(model, optim)
        if dtype != torch.float32:
            master_of = {
                id(p): p.detach().float().clone().requires_grad_(True) for p in self.params
            }
            self.masters = [master_of[id(p)] for p in self.params]
            model.trainable.to(dtype)  # .to() keeps Parameter identity: groups stay valid
            groups = [{**g, "params": [master_of[id(p)] for p in g["params"]]} for g in groups]
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(optim.betas))
        self.scheduler = build_scheduler(self.optimizer, optim, max_steps)

    def __call__(self, batch) -> dict[str, float]:
        """Forward, backward, clip, step; returns the LM loss and the target tokens."""
        out = self.model(batch)
        out["loss"].backward()
        updated = self.params
        if self.masters is not None:
            for p, m in zip(self.params, self.masters):
                m.grad = p.grad.float()
                p.grad = None
            updated = self.masters
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(updated, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.masters is not None:
            with torch.no_grad():
                for p, m in zip(self.params, self.masters):
                    p.copy_(m)
        return {"lm_loss": float(out["lm_loss"]), "num_tokens": int(out["num_tokens"])}


@dataclass
class LoopTiming:
    """Timed steady-state steps of a training loop."""

    steps: int
    samples: int
    seconds: float
    step_seconds: list[float]

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def step_s(self) -> float:
        return self.seconds / self.steps


def bare_train_loop(
    config, *, steps: int, warmup_steps: int, model=None, device: torch.device | None = None
) -> LoopTiming:
    """The bare-PyTorch baseline of the platform's training loop, one process.

    Same model config and seed, the same :func:`~steermoe.data.batches.build_stream` batches
    (same manifest, sampler and seed as rank 0 of a 1-worker run), collated per step exactly
    as ``train_fn_per_worker`` does; only the ``steps`` after ``warmup_steps`` are timed,
    data loading and collation included (as in the platform's ``samples_per_s``).

    Args:
        config: a full :class:`~steermoe.config.Config`.
        steps: timed steps.
        warmup_steps: untimed steps first.
        model: an already built model to reuse (its trainable part is trained further).
        device: defaults to the CPU.
    """
    t = config.train
    if t.grad_accum != 1:
        raise ValueError(
            "bare_train_loop compares single micro-batch steps: set train.grad_accum=1"
        )
    device = device or torch.device("cpu")
    if model is None:
        model = build_model(config.model, device=device, seed=t.seed)
    examples = load_split(config, "train", max_s=model.max_audio_s)
    stream = build_stream(config, examples, model, rank=0, world_size=1)
    prepare_ctc(model, config, examples)
    step_fn = BareStep(model, t.optim, max_steps=steps + warmup_steps)
    batches = iter(stream)
    model.train()
    timing = LoopTiming(steps=steps, samples=0, seconds=0.0, step_seconds=[])
    for i in range(warmup_steps + steps):
        synchronize(device)
        start = time.perf_counter()
        loaded = next(batches)
        batch = teacher_forced_batch(model, loaded, config.model.default_instruction, device)
        step_fn(batch)
        synchronize(device)
        if i >= warmup_steps:
            elapsed = time.perf_counter() - start
            timing.step_seconds.append(elapsed)
            timing.seconds += elapsed
            timing.samples += len(loaded.examples)
    model.eval()
    return timing

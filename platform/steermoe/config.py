"""One typed, strict, frozen configuration tree for every job.

YAML files hold values only (a file may build on another with ``base: other.yaml``);
``load_config(path, overrides)`` reads one, applies ``key.sub=value`` overrides and validates
the whole tree before any work starts. Unknown keys, wrong types and impossible values raise
:class:`ConfigError` naming the key path, e.g. ``model.steering.top_k: must be <= num_experts
(4), got 8``. Values are never silently repaired.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evaluators.tasks import mode_for
from steermoe import env


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every offending key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _bad(key: str, message: str) -> ValueError:
    # Model-level checks report the field they are about, so the final path is complete.
    return ValueError(f"@{key}@ {message}")


# ----------------------------------------------------------------------------- model


class SteeringConfig(_Strict):
    """The mixture of steering experts inside the frozen encoder (README: SteerMoE Platform)."""

    # Steer the encoder at all; False gives the projector-only baselines (`linear`, `mlp`).
    enabled: bool = True
    # Experts per layer (N). N=1 is the "static adapter" baseline.
    num_experts: int = Field(default=4, ge=1, le=256)
    # Keep the K largest router logits per layer (softmax over them); null = dense (paper).
    top_k: int | None = Field(default=None, ge=1)
    # Encoder layers to steer (0-based); null = every layer.
    layers: tuple[int, ...] | None = None
    # Standard deviation of the initial steering vectors E (L, N, D).
    init_std: float = Field(default=0.01, gt=0)
    # Initial value of the per-layer scales a (L,).
    init_scale: float = 0.1
    # Weight of the Switch-style load-balancing auxiliary loss (0 = off).
    load_balance_weight: float = Field(default=0.0, ge=0)
    # Weight of the router z-loss (0 = off).
    z_loss_weight: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SteeringConfig:
        if self.top_k is not None and self.top_k > self.num_experts:
            raise _bad("top_k", f"must be <= num_experts ({self.num_experts}), got {self.top_k}")
        if self.layers is not None:
            if len(set(self.layers)) != len(self.layers):
                raise _bad("layers", f"has duplicates: {list(self.layers)}")
            if any(i < 0 for i in self.layers):
                raise _bad("layers", f"indices must be >= 0, got {list(self.layers)}")
        return self


class ProjectorConfig(_Strict):
    """Temporal pooling plus projection from encoder width D to LLM width H."""

    # `linear`: Linear(D -> H) (paper); `mlp`: Linear -> GELU -> Linear (Ultravox-style);
    # `linear_mlp`: the linear map plus an MLP branch whose output layer starts at zero, so a
    # `linear` checkpoint warm-starts it exactly and the branch adds capacity as it trains.
    kind: Literal["linear", "mlp", "linear_mlp"] = "linear"
    # Pooling over time before projection.
    pool: Literal["avg", "max"] = "avg"
    # Pooling stride S (4 turns Whisper's 50 Hz into 12.5 Hz).
    stride: int = Field(default=4, ge=1, le=64)
    # Hidden width of the `mlp` projector and the `linear_mlp` branch; null = the LLM width.
    hidden_size: int | None = Field(default=None, ge=1)
    # Output norm: `rms` = RMSNorm with a learned gain initialised to the RMS of the LLM's
    # text embeddings, so audio tokens enter the LLM at its own scale from step 0; `none`.
    norm: Literal["none", "rms"] = "rms"


class CtcConfig(_Strict):
    """Auxiliary CTC alignment loss on the projected audio tokens.

    Logits are a learned scale times the dot product of each audio token with the LLM's own
    (frozen) input embeddings of a vocabulary, plus a learned blank. It pulls each audio token
    toward the embedding of the word spoken, the regime in which the LLM already copies.
    Applied to every projector kind alike.
    """

    # Weight of the CTC loss beside the LM loss (0 = off: the paper's recipe).
    weight: float = Field(default=0.0, ge=0)
    # `targets`: the tokens of the training targets and transcripts (collected at start);
    # `all`: every token. The loss scores the words spoken (an ASR target, `meta.spoken` of
    # AQA/FC clips); clips whose words are unknown add no CTC term.
    vocabulary: Literal["targets", "all"] = "targets"
    # Initial logit scale (learned, kept positive).
    scale_init: float = Field(default=1.0, gt=0)


class ModelConfig(_Strict):
    """Backbones (hub id, local path or embedded name) and the trainable parts."""

    # Whisper-family encoder: embedded name (`whisper-base`, `whisper-tiny.en`,
    # `tiny-random-whisper`), a local Hugging Face folder or a hub id.
    encoder: str = "whisper-base"
    # Causal LM: embedded name (`smollm2-135m-instruct`, `tiny-random-llm`), folder or hub id.
    llm: str = "smollm2-135m-instruct"
    steering: SteeringConfig = SteeringConfig()
    projector: ProjectorConfig = ProjectorConfig()
    ctc: CtcConfig = CtcConfig()
    # System turn of the chat prompt; null or "" = no system turn at all (a default system
    # turn that the LLM's chat template would insert is removed too).
    system_prompt: str | None = "You are a helpful assistant that listens to audio."
    # How tool lists are written into fc prompts: `full` (signatures, descriptions and a
    # long request) or `compact` (signatures and a short request; about a third the tokens).
    tool_prompt: Literal["full", "compact"] = "full"
    # Default instruction when an example has none (ASR).
    default_instruction: str = "Transcribe the audio."
    # Compute dtype of the frozen backbones: `auto` = bf16 on GPU, fp32 on CPU. `bfloat16` on
    # a CPU pays only where it has AVX512-BF16 or AMX (~15 % faster than fp32); without them
    # bf16 matrix products run ~80x slower (a warning says so).
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Compute dtype of the frozen encoder: `same` as `dtype`, or `float32` so the steering
    # offsets (~1e-2 on states of RMS 1-3) are not rounded away in a bf16 residual stream.
    encoder_dtype: Literal["same", "float32"] = "same"
    # Recompute backbone activations in the backward pass to save memory.
    activation_checkpointing: bool = False
    # Intra-op CPU threads per process (0 = leave torch's default).
    num_threads: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not self.encoder.strip():
            raise _bad("encoder", "must not be empty")
        if not self.llm.strip():
            raise _bad("llm", "must not be empty")
        return self


# ------------------------------------------------------------------------------ data


class AugmentConfig(_Strict):
    """Training-time augmentation (data.augment): each batch redraws, per clip, a speed
    factor, room reverberation, a level change, background noise and a band limit. Off by
    default (the paper's recipe); validation and evaluation never augment."""

    # Speed perturbation range [low, high] (tempo and pitch together); null = off.
    speed: tuple[float, float] | None = None
    # Level change range in dB [low, high]; null = off.
    gain_db: tuple[float, float] | None = None
    # Share of clips given white or brown-ish background noise (0 = off).
    noise_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    # Signal-to-noise ratio range of that noise in dB [low, high].
    snr_db: tuple[float, float] = (10.0, 30.0)
    # Share of clips played in a simulated room (reverberation; 0 = off).
    reverb_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    # Reverberation time range of that room in seconds (60 dB decay) [low, high].
    rt60_s: tuple[float, float] = (0.2, 0.8)
    # Share of clips band-limited like a telephone or 8 kHz recording (0 = off).
    lowpass_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    # Cut-off frequency range of that band limit in Hz [low, high].
    lowpass_hz: tuple[float, float] = (3400.0, 7000.0)

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        for key in ("speed", "gain_db", "snr_db", "rt60_s", "lowpass_hz"):
            span = getattr(self, key)
            if span is not None and span[0] > span[1]:
                raise _bad(key, f"low {span[0]} is above high {span[1]}")
        if self.speed is not None and not (self.speed[0] >= 0.5 and self.speed[1] <= 2.0):
            raise _bad("speed", f"must lie within [0.5, 2.0], got {list(self.speed)}")
        if self.gain_db is not None and max(abs(g) for g in self.gain_db) > 40:
            raise _bad("gain_db", f"must lie within [-40, 40] dB, got {list(self.gain_db)}")
        if not (self.rt60_s[0] >= 0.05 and self.rt60_s[1] <= 3.0):
            raise _bad("rt60_s", f"must lie within [0.05, 3.0] s, got {list(self.rt60_s)}")
        if not (self.lowpass_hz[0] >= 1000.0 and self.lowpass_hz[1] <= 8000.0):
            raise _bad(
                "lowpass_hz", f"must lie within [1000, 8000] Hz, got {list(self.lowpass_hz)}"
            )
        return self

    @property
    def enabled(self) -> bool:
        return (
            self.speed is not None
            or self.gain_db is not None
            or max(self.noise_prob, self.reverb_prob, self.lowpass_prob) > 0
        )


class DataConfig(_Strict):
    """Where examples come from and how bad audio is treated."""

    # Folder the sources are relative to: a build name (`tiny`, `default`: the suites that
    # `python -m jobs.build_data` writes to `<cache>/data/<name>`) or a folder path.
    root: str = Field(default="tiny", min_length=1)
    # Training sources: manifest paths (relative to `root`), folders or `hf:<name>` ids.
    train: tuple[str, ...] = ("asr/train.jsonl",)
    # Validation sources used for validation loss and the quick metric.
    validation: tuple[str, ...] = ("asr/validation.jsonl",)
    # Tasks kept from the sources (others are dropped).
    tasks: tuple[Literal["asr", "aqa", "fc"], ...] = ("asr", "aqa", "fc")
    # Clips longer than this are rejected (seconds).
    max_audio_s: float = Field(default=30.0, gt=0, le=30.0)
    # Clips shorter than this are rejected (seconds).
    min_audio_s: float = Field(default=0.1, ge=0)
    # Fail the job on the first bad example instead of skipping (and counting) it.
    strict: bool = False
    # Cap on training examples (null = all); useful for smoke runs.
    max_train_examples: int | None = Field(default=None, ge=1)
    # Examples in the validation slice for the quick metric.
    max_validation_examples: int = Field(default=64, ge=1)
    # Training-time augmentation (speed, level, noise); off by default.
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.min_audio_s >= self.max_audio_s:
            raise _bad("min_audio_s", f"must be < max_audio_s ({self.max_audio_s})")
        if not self.train:
            raise _bad("train", "needs at least one source")
        return self


# ----------------------------------------------------------------------------- train


class OptimConfig(_Strict):
    """AdamW with the paper's three parameter groups, warmup and decay."""

    # Learning rate of the steering vectors and layer scales.
    lr_steering: float = Field(default=1e-2, gt=0)
    # Learning rate of the router.
    lr_router: float = Field(default=1e-3, gt=0)
    # Learning rate of the projector.
    lr_projector: float = Field(default=1e-4, gt=0)
    # Learning rate of the auxiliary CTC head's blank and logit scale (model.ctc); at the
    # projector's rate the scale hardly moves (log-scale +0.02 in 400 steps).
    lr_ctc: float = Field(default=1e-2, gt=0)
    # AdamW decoupled weight decay (all groups).
    weight_decay: float = Field(default=0.0, ge=0)
    # AdamW moment coefficients (beta1, beta2), each in [0, 1).
    betas: tuple[float, float] = (0.9, 0.999)
    # Linear warmup steps.
    warmup_steps: int = Field(default=10, ge=0)
    # Decay after warmup.
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    # Gradient norm clipping applied before each step (null = off).
    grad_clip: float | None = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise _bad("betas", f"must lie in [0, 1), got {list(self.betas)}")
        return self


class CurriculumStage(_Strict):
    """One stage of the training curriculum: which tasks and clip lengths it trains on."""

    # Optimizer steps in this stage; null = until train.max_steps (last stage only).
    steps: int | None = Field(default=None, ge=1)
    # Tasks trained in this stage.
    tasks: tuple[Literal["asr", "aqa", "fc"], ...] = ("asr", "aqa", "fc")
    # Longest training clip in this stage (seconds); null = data.max_audio_s.
    max_audio_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> CurriculumStage:
        if not self.tasks:
            raise _bad("tasks", "needs at least one task")
        return self


class TrainConfig(_Strict):
    """Ray Train + DeepSpeed settings of one training run."""

    # Run name; restarts find their run by it, so keep it stable (no timestamps).
    name: str = Field(default="steermoe", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # Seed of the trainable part's initialisation and of the data order.
    seed: int = 0
    # Optimizer steps to run.
    max_steps: int = Field(default=200, ge=1)
    # Examples per worker per micro-batch.
    batch_size: int = Field(default=8, ge=1)
    # Micro-batches accumulated per optimizer step.
    grad_accum: int = Field(default=1, ge=1)
    # Validate, checkpoint and report every this many steps.
    eval_every: int = Field(default=50, ge=1)
    # Log the training loss every this many steps.
    log_every: int = Field(default=10, ge=1)
    # Ray Train workers (0 = run the loop in-process, no cluster).
    num_workers: int = Field(default=1, ge=0)
    # One GPU per worker (bf16 backbones, NCCL); false = CPU workers (fp32/bf16, gloo).
    use_gpu: bool = False
    # CPUs per worker; < 1 lets two workers and a Tune trial share a 2-core machine.
    cpus_per_worker: float = Field(default=1.0, gt=0)
    # Custom Ray resources each worker needs besides CPU/GPU, e.g. {trainer_slot: 1} to keep
    # workers on the nodes that advertise that resource.
    worker_resources: dict[str, float] = {}
    # How the workers' bundles are placed: PACK (fewest nodes), SPREAD, or STRICT_SPREAD
    # (one worker per node).
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "PACK"
    # DeepSpeed ZeRO stage (3 shards the frozen backbones across GPUs).
    zero_stage: Literal[0, 1, 2, 3] = 2
    # Restarts of a failed worker group before the run fails.
    max_failures: int = Field(default=2, ge=0)
    # Where Ray Train keeps checkpoints; null = `<cache>/runs`.
    storage_path: str | None = None
    # Checkpoints kept per run: the newest ones, or with keep_metric the best ones by that
    # validation metric (the newest is always kept too, to continue from).
    keep_checkpoints: int = Field(default=2, ge=1)
    # Metric reported at each validation that ranks the kept checkpoints (`val_loss`,
    # `val_wer`, `val_audio_gain`, ...); null = keep the newest.
    keep_metric: str | None = Field(default=None, pattern=r"^val_\w+$")
    # Whether a lower (`min`) or higher (`max`) keep_metric is better.
    keep_mode: Literal["min", "max"] = "min"
    # Warm start: copy the trainable tensors that fit (same name and shape) from this
    # checkpoint (`embedded:reference` or a folder) before step 0; null = fresh initialisation.
    init_from: str | None = Field(default=None, min_length=1)
    # Continue from a saved run state (a folder with train_state.json and DeepSpeed's
    # optimizer shards: `embedded:<name>` = the `resume/` folder shipped beside an embedded
    # checkpoint) when the run's own storage has no checkpoint yet; null = start at step 0.
    resume_from: str | None = Field(default=None, min_length=1)
    optim: OptimConfig = OptimConfig()
    # Keep each batch within one task (a mixed batch is padded to its longest prompt).
    task_batches: bool = True
    # What batches are bucketed by: estimated sequence `tokens` (audio + prompt + target),
    # or audio `seconds`.
    bucket_by: Literal["tokens", "seconds"] = "tokens"
    # Stages run in order (short ASR clips first, then longer clips and more tasks); empty =
    # one stage over all training data.
    curriculum: tuple[CurriculumStage, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for key, amount in self.worker_resources.items():
            if key.upper() in ("CPU", "GPU"):
                raise _bad(f"worker_resources.{key}", "use cpus_per_worker / use_gpu")
            if not amount > 0:
                raise _bad(f"worker_resources.{key}", f"must be > 0, got {amount}")
        for i, stage in enumerate(self.curriculum[:-1]):
            if stage.steps is None:
                raise _bad(f"curriculum.{i}.steps", "only the last stage may run open-ended")
        ref = self.init_from or ""
        if ref.startswith(env.EMBEDDED_PREFIX):
            name = ref[len(env.EMBEDDED_PREFIX) :]
            if name not in env.embedded_checkpoints():
                raise _bad(
                    "init_from",
                    f"no embedded checkpoint {name!r} (shipped: {env.embedded_checkpoints()})",
                )
        return self


# ----------------------------------------------------------------------------- sweep


class AshaConfig(_Strict):
    """ASHA early stopping on the validation metric."""

    # Stop poorly performing trials early (ASHA); false = every trial runs to the end.
    enabled: bool = True
    # Reports a trial gets before it can be stopped.
    grace_period: int = Field(default=2, ge=1)
    # Keep 1 / reduction_factor of the trials at each rung.
    reduction_factor: float = Field(default=2.0, gt=1)


# Search-space domains beside a plain list of values: form -> its arguments. Each is the Ray
# Tune domain of the same name (`randint`'s b is excluded, as in Tune).
SEARCH_DOMAINS = {
    "choice": "[v1, v2, ...]",
    "uniform": "[a, b]",
    "quniform": "[a, b, q]",
    "loguniform": "[a, b]",
    "qloguniform": "[a, b, q]",
    "randint": "[a, b]",
}


def _number(value: Any) -> float | None:
    """A domain bound as a number (YAML reads ``1e-5`` as a string), None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _search_entry(key: str, spec: Any) -> tuple[Any, ...] | dict[str, tuple[Any, ...]]:
    """One ``sweep.space`` entry checked: a list of values, or ``{form: [arguments]}``."""
    if isinstance(spec, list | tuple):
        if not spec:
            raise _bad(key, "needs at least one value")
        return tuple(spec)
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise _bad(
            key,
            "expected a list of values or one domain such as "
            f"{{loguniform: [1.0e-5, 1.0e-3]}}, got {spec!r}",
        )
    ((form, args),) = spec.items()
    if form not in SEARCH_DOMAINS:
        raise _bad(key, f"unknown search domain {form!r}; expected one of {list(SEARCH_DOMAINS)}")
    shape = SEARCH_DOMAINS[form]
    if not isinstance(args, list | tuple) or not args:
        raise _bad(key, f"{form} takes {shape}, got {args!r}")
    if form == "choice":
        return {form: tuple(args)}
    numbers = [_number(v) for v in args]
    arity = shape.count(",") + 1
    if len(args) != arity or None in numbers:
        raise _bad(key, f"{form} takes {arity} numbers {shape}, got {list(args)}")
    a, b, *q = numbers
    if form == "randint":
        if not all(float(v).is_integer() for v in (a, b)):
            raise _bad(key, f"randint takes integers [a, b], got {numbers}")
        numbers = [int(a), int(b)]
    if a >= b:
        raise _bad(key, f"{form} needs a < b, got {numbers}")
    if "log" in form and a <= 0:
        raise _bad(key, f"{form} needs a > 0, got {numbers}")
    if q and (q[0] <= 0 or not all(math.isclose(v / q[0], round(v / q[0])) for v in (a, b))):
        raise _bad(key, f"{form} needs q > 0 with a and b multiples of q, got {numbers}")
    return {form: tuple(numbers)}


class SweepConfig(_Strict):
    """Ray Tune search over model fields by dotted name."""

    # Sweep name: the MLflow parent run and the Tune experiment folder (keep it stable).
    name: str = Field(default="steermoe-sweep", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # Dotted config key -> a list of values (grid search runs each; random and Optuna draw
    # from it like `choice`) or one Ray Tune domain: {choice: [...]}, {uniform: [a, b]},
    # {quniform: [a, b, q]}, {loguniform: [a, b]}, {qloguniform: [a, b, q]} or {randint: [a, b]}
    # (b excluded). Grid search takes lists and `choice` only. top_k <= num_experts holds in
    # every search (random and Optuna draw top_k among the values that fit num_experts).
    space: dict[str, tuple[Any, ...] | dict[str, tuple[Any, ...]]] = Field(
        default_factory=lambda: {
            "model.steering.num_experts": (2, 4),
            "model.steering.top_k": (1, 2),
        }
    )
    # How points are drawn from the space: every combination, random, or Optuna (TPE).
    search: Literal["grid", "random", "optuna"] = "grid"
    # Trials drawn by random/optuna search (grid runs every combination once).
    num_samples: int = Field(default=4, ge=1)
    # Validation metric that ranks trials, and its direction.
    metric: str = "val_wer"
    # Whether a lower (`min`) or higher (`max`) sweep metric is better. Left out, it follows
    # the metric's scorer (evaluators/tasks.py: val_wer -> min, val_fc_accuracy -> max; min
    # for metrics no scorer ranks, such as val_loss); a mode contradicting the scorer fails.
    mode: Literal["min", "max"] = "min"
    # Trials running at once (on GPU clusters: cluster GPUs // GPUs per trial).
    max_concurrent_trials: int = Field(default=1, ge=1)
    # CPUs reserved by each trial driver (workers reserve their own).
    trial_cpus: float = Field(default=0.01, gt=0)
    asha: AshaConfig = AshaConfig()
    # Evaluate the best trial in full (eval.datasets) after the sweep.
    evaluate_best: bool = True
    # Metric that decides promotion to the registry alias: an eval metric such as
    # `librivox.wer` (dataset.metric) or null for the sweep metric itself.
    promote_metric: str | None = None
    # Whether a lower or higher promote_metric is better (derived like `mode`).
    promote_mode: Literal["min", "max"] = "min"

    @model_validator(mode="before")
    @classmethod
    def _derive_modes(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for metric_key, mode_key in (("metric", "mode"), ("promote_metric", "promote_mode")):
            metric = data.get(metric_key, "val_wer" if metric_key == "metric" else None)
            derived = mode_for(metric) if isinstance(metric, str) else None
            given = data.get(mode_key)
            if given is None and derived is not None:
                data[mode_key] = derived
            elif derived is not None and given != derived:
                better = "higher" if derived == "max" else "lower"
                raise ValueError(
                    f"@sweep.{mode_key}@ {given!r} contradicts {metric_key} {metric!r}, which "
                    f"is better when {better} ({derived!r}); leave {mode_key} out to derive it"
                )
        return data

    @field_validator("space", mode="before")
    @classmethod
    def _check_space(cls, space: Any) -> Any:
        if not isinstance(space, Mapping):
            return space  # the type check names it
        return {key: _search_entry(key, spec) for key, spec in space.items()}

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        for key, values in self.space.items():
            if not key.startswith(("model.", "train.optim.", "train.")):
                raise _bad(f"space.{key}", "must name a model.* or train.* field")
            if self.search == "grid" and isinstance(values, dict) and "choice" not in values:
                raise _bad(
                    f"space.{key}",
                    f"grid search runs lists (or choice), not {next(iter(values))}; "
                    "draw it with search: random or optuna",
                )
        return self


# ------------------------------------------------------------------------------ eval


class EvalConfig(_Strict):
    """Batched inference and scoring on named datasets."""

    # Named datasets (`synthetic-asr`, `synthetic-aqa`, `synthetic-fc`, `librivox`, `fsdd`)
    # or manifest paths.
    datasets: tuple[str, ...] = ("synthetic-asr", "synthetic-aqa", "synthetic-fc", "librivox")
    # Examples decoded together (greedy, left-padded).
    batch_size: int = Field(default=8, ge=1)
    # Decoding budget per example (also used by the quick validation metric).
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    # Examples that offer tools: an answer that opens a call list (`[`) is held to the tools'
    # grammar (names offered, keys declared, values of the schema's types), as Serve holds
    # `tool_choice: auto`; false = the model's raw answer. Also used by the quick validation.
    tool_grammar: bool = True
    # Cap on examples per dataset (null = all of them: never a random slice).
    max_examples: int | None = Field(default=None, ge=1)
    # Where manifests are written; null = `<cache>/eval`.
    output_dir: str | None = None


# ----------------------------------------------------------------------------- serve


class ServeConfig(_Strict):
    """Ray Serve deployment of one model behind the OpenAI-compatible API."""

    # `models:/<name>@champion`, `models:/<name>/<version>`, `embedded:reference` (the shipped
    # reference checkpoint) or a checkpoint folder.
    model: str = Field(default="models:/steermoe@champion", min_length=1)
    # Name clients pass as `model` (requests for any other name get 404).
    served_name: str = Field(default="steermoe", min_length=1)
    # Address the HTTP proxy binds (loopback unless you mean to expose it).
    host: str = "127.0.0.1"
    # HTTP port of the OpenAI-compatible API.
    port: int = Field(default=8000, ge=1, le=65535)
    # Autoscaling: fewest replicas kept running.
    min_replicas: int = Field(default=1, ge=0)
    # Autoscaling: most replicas started under load.
    max_replicas: int = Field(default=1, ge=1)
    # Autoscaling: ongoing requests per replica the autoscaler aims for.
    target_ongoing_requests: float = Field(default=4.0, gt=0)
    # HTTP ingress replicas in front of the model replicas (they validate requests and decode
    # audio; no model, no CPU or GPU reserved).
    ingress_replicas: int = Field(default=1, ge=1)
    # Longest a request waits for a model replica to take it (every replica lost and none
    # back yet, or every replica's queue full); then 503 `replica_unavailable`, Retry-After.
    replica_wait_s: float = Field(default=30.0, gt=0)
    # CPUs reserved by each replica.
    cpus_per_replica: float = Field(default=1.0, gt=0)
    # GPUs reserved by each replica (fractions share a GPU).
    gpus_per_replica: float = Field(default=0.0, ge=0)
    # Dynamic batching: most requests decoded together.
    max_batch_size: int = Field(default=8, ge=1)
    # Dynamic batching: longest wait for a batch to fill (seconds).
    batch_wait_timeout_s: float = Field(default=0.05, ge=0)
    # Environment variable holding the bearer API key (unset variable = no auth).
    api_key_env: str = "STEERMOE_API_KEY"
    # Largest request body accepted (413 above it).
    max_body_mb: float = Field(default=25.0, gt=0)
    # Longest audio accepted per request (400 above it).
    max_audio_s: float = Field(default=30.0, gt=0)
    # Cap on max_tokens a request may ask for (400 above it).
    max_tokens: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.min_replicas > self.max_replicas:
            raise _bad("min_replicas", f"must be <= max_replicas ({self.max_replicas})")
        return self


class MlflowConfig(_Strict):
    """Tracking store and registry."""

    # Any MLflow URI; null = `sqlite:///<cwd>/mlflow.db` (or $MLFLOW_TRACKING_URI).
    tracking_uri: str | None = None
    # Experiment that holds the runs.
    experiment: str = Field(default="steermoe", min_length=1)
    # Registered model name the sweep's winner is registered under.
    registered_model: str = Field(default="steermoe", min_length=1)
    # Alias moved to a newly registered version when it beats the current holder.
    alias: str = Field(default="champion", min_length=1)
    # Seconds a report waits for an unreachable tracking server (retried with backoff: 1, 2,
    # 4 ... 30 s) before the job fails; its checkpoints stay, and rerunning it continues.
    retry_s: float = Field(default=300.0, ge=0)


class Config(_Strict):
    """The whole tree; every job takes one."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepConfig = SweepConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    mlflow: MlflowConfig = MlflowConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        fields = self.model_dump()
        for key in self.sweep.space:
            node: Any = fields
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ValueError(f"@sweep.space.{key}@ no such config field")
                node = node[part]
        promote = self.sweep.promote_metric
        if promote:
            dataset = promote.partition(".")[0]
            if not self.sweep.evaluate_best:
                raise ValueError("@sweep.promote_metric@ needs sweep.evaluate_best: true")
            if "." not in promote or dataset not in self.eval.datasets:
                raise ValueError(
                    f"@sweep.promote_metric@ {promote!r} must be <dataset>.<metric> of a "
                    f"dataset in eval.datasets {list(self.eval.datasets)}"
                )
        for i, stage in enumerate(self.train.curriculum):
            unknown = [t for t in stage.tasks if t not in self.data.tasks]
            if unknown:
                raise ValueError(
                    f"@train.curriculum.{i}.tasks@ names {unknown}, not among data.tasks "
                    f"{list(self.data.tasks)}"
                )
        return self


# --------------------------------------------------------------------------- loading


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override {item!r}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``key.sub=value`` override set."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        parts, value = parse_override(item)
        set_path(out, parts, value)
    return out


def set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[p0][p1]... = value``, creating mappings along the way."""
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{where}: is a value, cannot set {'.'.join(parts)}")
        node = child
    node[parts[-1]] = value


def validate(data: Mapping[str, Any]) -> Config:
    """Validate a plain mapping into a :class:`Config`, naming every bad key path."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (or start from defaults), apply overrides and validate.

    A file may name another with a top-level ``base: other.yaml`` (relative to its own
    folder): it then holds only its differences. Mappings merge key by key over the base's;
    any other value (a list included) replaces the base's. Bases may chain.

    Args:
        path: YAML file; ``None`` starts from the built-in defaults.
        overrides: ``key.sub=value`` strings; values are parsed as YAML scalars/lists.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or impossible value, a base
            that is missing or names a file already in the chain.
    """
    data = read_layered_yaml(path) if path is not None else {}
    return validate(apply_overrides(data, overrides))


def read_layered_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping with its ``base:`` chain merged under it (see :func:`load_config`).

    Raises:
        ConfigError: missing file or base, invalid YAML, a top level that is not a mapping,
            a base that is not a file name or a chain that returns to a file already in it.
    """
    return _read_layers(Path(path), ())


def _read_layers(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """One YAML file with its ``base:`` chain merged under it."""
    if not path.is_file():
        if chain:
            raise ConfigError(f"{chain[-1]}: base: file not found: {path}")
        raise ConfigError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in {c.resolve() for c in chain}:
        cycle = " -> ".join(str(c) for c in (*chain, path))
        raise ConfigError(f"base: the chain returns to a file already in it: {cycle}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    if "base" not in loaded:
        return loaded
    base = loaded.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: must name a YAML file, got {base!r}")
    under = _read_layers(path.parent / base, (*chain, path))
    return _merge(under, loaded)


def _merge(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``under``: mappings merge recursively, anything else replaces."""
    out = copy.deepcopy(dict(under))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_dict(config: Config) -> dict[str, Any]:
    """Plain JSON-compatible dict (what travels to Ray workers and into MLflow)."""
    return config.model_dump(mode="json")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params, sweep tables)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            if msg.startswith("@"):
                field, _, msg = msg[1:].partition("@ ")
                loc = f"{loc}.{field}" if loc else field
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        if err["type"] not in ("extra_forbidden", "missing") and "input" in err:
            shown = repr(err["input"])
            if len(shown) <= 60 and err["type"] != "value_error":
                msg = f"{msg} (got {shown})"
        lines.append(f"{loc}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)

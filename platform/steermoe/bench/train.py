"""Training benchmarks of ``python -m jobs.bench_train``: (a) the platform's path (Ray Train,
DeepSpeed ZeRO-2) against a bare PyTorch loop on CPU, (b) GPU throughput and memory at
Whisper-large-v3 + Qwen2.5-7B shapes, (c) the old against the new reference recipe.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import ray
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from steermoe import env, tiny
from steermoe.bench.common import BareStep, bare_train_loop, device_label, synchronize
from steermoe.config import Config, ModelConfig, OptimConfig, load_config
from steermoe.model import Batch, SteerMoEModel, build_model
from steermoe.model.build import build_trainable, cpu_has_bf16
from steermoe.model.encoder import WhisperEncoderWrapper
from steermoe.model.prompt import build_template
from steermoe.train.run import build_trainer

# bf16 where the CPU multiplies it natively (~15 % faster), else fp32 (bf16 is ~80x slower).
REAL_DTYPE = "model.dtype=" + ("bfloat16" if cpu_has_bf16() else "float32")

BACKBONES = {
    # name: overrides of both sides (threads as measured fastest in REFERENCE.md)
    "tiny": [
        "model.encoder=tiny-random-whisper",
        "model.llm=tiny-random-llm",
        "model.num_threads=1",
        "train.batch_size=4",
    ],
    "real": [
        "model.encoder=whisper-base",
        "model.llm=smollm2-135m-instruct",
        REAL_DTYPE,
        "model.num_threads=2",
        "train.batch_size=8",
    ],
}


def bench_config(backbone: str, overrides: list[str], *, steps: int, storage: str) -> Config:
    """Config of both sides: 1 worker, ZeRO-2, one warm-up report window then a timed one."""
    return load_config(
        None,
        [
            *BACKBONES[backbone],
            "model.steering.num_experts=4",
            "data.root=tiny",
            "data.train=[asr/train.jsonl]",
            "data.validation=[asr/validation.jsonl]",
            "data.max_validation_examples=1",
            "eval.max_new_tokens=4",
            "train.name=bench-train",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.zero_stage=2",
            "train.max_failures=0",
            "train.keep_checkpoints=1",
            f"train.max_steps={2 * steps}",
            f"train.eval_every={steps}",
            f"train.log_every={steps}",
            f"train.storage_path={storage}",
            *overrides,
        ],
    )


def platform_samples_per_s(config: Config) -> float:
    """Fit ``build_trainer(config)``; samples/s of the last report window (train time only)."""
    result = build_trainer(config).fit()
    return float(result.metrics["samples_per_s"])


def compare_cpu(config: Config, *, rounds: int) -> dict[str, list[float]]:
    """(a) Alternate the bare loop and the Ray Train + DeepSpeed path, ``rounds`` times each.

    Returns:
        samples/s per round for ``bare`` and ``platform``.
    """
    steps = config.train.eval_every
    torch.set_num_threads(config.model.num_threads or torch.get_num_threads())
    model = build_model(config.model, seed=config.train.seed)
    initial = {k: v.clone() for k, v in model.trainable.state_dict().items()}
    out: dict[str, list[float]] = {"bare": [], "platform": []}
    env.ensure_ray_token()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,  # worker logs stay in the session folder; errors still raise
    )
    try:
        for r in range(rounds):
            for side in ("bare", "platform") if r % 2 == 0 else ("platform", "bare"):
                if side == "bare":
                    model.trainable.load_state_dict(initial)
                    model.trainable.float()
                    timing = bare_train_loop(config, steps=steps, warmup_steps=steps, model=model)
                    out["bare"].append(timing.samples_per_s)
                else:
                    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
                        fresh = config.model_copy(
                            update={"train": config.train.model_copy(update={"storage_path": tmp})}
                        )
                        out["platform"].append(platform_samples_per_s(fresh))
                print(f"[bench] round {r + 1}/{rounds} {side}: {out[side][-1]:.2f} samples/s")
    finally:
        ray.shutdown()
    return out


# ----------------------------------------------------------------------------- (b) GPU


def large_configs(shapes: str):
    """Whisper-large-v3 encoder and Qwen2.5-7B configs (``large``), or small CPU stand-ins."""
    if shapes == "large":
        enc = {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20}
        enc |= {"encoder_ffn_dim": 5120, "num_mel_bins": 128}
        llm = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28}
        llm |= {"num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064}
    else:  # a stand-in that runs anywhere, for smoke tests of this path
        enc = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2}
        enc |= {"encoder_ffn_dim": 128, "num_mel_bins": 128}
        llm = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
        llm |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024}
    whisper = WhisperConfig(
        **enc, max_source_positions=1500, decoder_layers=1, vocab_size=51866, decoder_ffn_dim=64
    )
    qwen = Qwen2Config(
        **llm,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return whisper, qwen


def random_model(shapes: str, device: torch.device, *, experts: int = 8, checkpointing=False):
    """A SteerMoE model over random-weight backbones of ``shapes``; nothing is downloaded."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    whisper_cfg, qwen_cfg = large_configs(shapes)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            encoder = WhisperEncoder(whisper_cfg)
            llm = Qwen2ForCausalLM(qwen_cfg)
    finally:
        torch.set_default_dtype(previous)
    cfg = ModelConfig(steering={"num_experts": experts}, activation_checkpointing=checkpointing)
    trainable, layers = build_trainable(
        cfg,
        encoder_dim=whisper_cfg.d_model,
        encoder_layers=whisper_cfg.encoder_layers,
        llm_dim=qwen_cfg.hidden_size,
    )
    wrapper = WhisperEncoderWrapper(encoder, steer_layers=layers)
    wrapper.activation_checkpointing = checkpointing
    if checkpointing:
        llm.activation_checkpointing_enable({"use_reentrant": False})
    tokenizer = tiny.build_tokenizer()  # any tokenizer: prompt and target ids are fixed below
    model = SteerMoEModel(
        encoder=wrapper,
        llm=llm,
        trainable=trainable,
        feature_extractor=WhisperFeatureExtractor(feature_size=whisper_cfg.num_mel_bins),
        tokenizer=tokenizer,
        template=build_template(tokenizer, cfg.system_prompt),
        identity={"encoder": {"name": f"random-{shapes}"}, "llm": {"name": f"random-{shapes}"}},
    )
    return model.to(device)


def gpu_throughput(
    model, *, batch_size: int, clip_s: float, target_tokens: int, steps: int, warmup: int
) -> dict[str, float]:
    """(b) Samples/s and peak memory of plain bf16 training steps on fixed random batches.

    Batches are collated before timing (log-mel of noise, ``clip_s`` seconds, a 10-token
    instruction and ``target_tokens`` target tokens); the collation cost per batch is reported
    separately since a data-loader has to hide it.
    """
    device = model.device
    rng = np.random.default_rng(0)
    vocab = len(model.tokenizer)
    waves = [(0.1 * rng.standard_normal(int(clip_s * 16000))).astype(np.float32)] * batch_size
    start = time.perf_counter()
    features, lengths = model.featurize(waves)
    collate_s = time.perf_counter() - start

    def ids(n: int) -> torch.Tensor:
        return torch.as_tensor(rng.integers(3, vocab, n), dtype=torch.long)

    batch = Batch(
        ids=[str(i) for i in range(batch_size)],
        features=features,
        feature_lengths=lengths,
        prompt_ids=[ids(10) for _ in range(batch_size)],
        target_ids=[ids(target_tokens) for _ in range(batch_size)],
    ).to(device)
    step = BareStep(model, OptimConfig(), max_steps=warmup + steps)
    model.train()
    for _ in range(warmup):
        step(batch)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        synchronize(device)
        t0 = time.perf_counter()
        step(batch)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    median = statistics.median(times)
    return {
        "samples_per_s": batch_size / median,
        "step_s": median,
        "peak_gib": peak,
        "collate_s": collate_s,
        "frames": int(lengths.max()),
    }


# The reference recipe before the module learned to listen (as shipped up to 0.1.0).
OLD_RECIPE = [
    "model.system_prompt=You are a helpful assistant that listens to audio.",
    "model.num_threads=1",
    "model.projector.norm=none",
    "model.ctc.weight=0",
    "model.encoder_dtype=same",
    "model.tool_prompt=full",
    "train.task_batches=false",
    "train.bucket_by=seconds",
]
MIXED = ["data.train=[asr/train.jsonl, aqa/train.jsonl, fc/train.jsonl]", "train.curriculum=[]"]
ASR_ONLY = ["data.train=[asr/train.jsonl]", "train.curriculum=[]"]


def compare_recipes(*, steps: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    """(c) clips/s of the old recipe (mixed suites), the new one (mixed) and the new one on
    ASR batches, one model per recipe, sides alternating within each round."""
    reference = "jobs/configs/reference.yaml"
    sides = {
        "old, mixed": load_config(reference, [*OLD_RECIPE, *MIXED, REAL_DTYPE]),
        "new, mixed": load_config(reference, [*MIXED, REAL_DTYPE]),
        "new, ASR": load_config(reference, [*ASR_ONLY, REAL_DTYPE]),
    }
    models = {}
    out: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, config in sides.items():
            torch.set_num_threads(config.model.num_threads)
            key = name.split(",")[0]
            if key not in models:
                models[key] = build_model(config.model, seed=config.train.seed)
            timing = bare_train_loop(config, steps=steps, warmup_steps=warmup, model=models[key])
            out[name].append(timing.samples / timing.seconds)
            print(
                f"    {name}: {out[name][-1]:.2f} clips/s ({timing.step_s:.2f} s/step, "
                f"{config.model.num_threads} thread(s))",
                flush=True,
            )
    return out


# ----------------------------------------------------------------------------- reports


def report_recipes(*, steps: int, rounds: int) -> None:
    """(c): measure and print the recipes' clips/s against their targets."""
    print(f"device: {device_label(torch.device('cpu'))}")
    print(f"(c) reference recipes, real backbones, batch 8; {steps} timed steps per side")
    cps = compare_recipes(steps=steps, warmup=2, rounds=rounds)
    med = {k: statistics.median(v) for k, v in cps.items()}
    print(
        f"\n(c) new / old recipe on the mixed suites: "
        f"{med['new, mixed'] / med['old, mixed']:.2f}x (target >= 3); "
        f"new recipe on ASR batches: {med['new, ASR']:.2f} clips/s (target >= 6)"
    )


def report_cpu(backbone: str, overrides: list[str], *, steps: int, rounds: int) -> None:
    """(a): measure and print platform / bare step time against its target."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as storage:
        config = bench_config(backbone, overrides, steps=steps, storage=storage)
        m = config.model
        print(f"device: {device_label(torch.device('cpu'))}")
        print(
            f"(a) {m.encoder} + {m.llm}, {m.dtype}, {m.num_threads} thread(s), batch "
            f"{config.train.batch_size}, N={m.steering.num_experts}; per round and side "
            f"{steps} warm-up + {steps} timed steps; {rounds} alternating rounds"
        )
        sps = compare_cpu(config, rounds=rounds)
    bare, plat = statistics.median(sps["bare"]), statistics.median(sps["platform"])
    per_round = [b / p for b, p in zip(sps["bare"], sps["platform"])]
    bs = config.train.batch_size
    print(
        f"\n(a) platform / bare step time: {bare / plat:.3f} (median of rounds; per round "
        f"{', '.join(f'{x:.3f}' for x in per_round)}; target <= 1.10)"
    )
    print(
        f"    platform (Ray Train + DeepSpeed ZeRO-2, 1 worker): {plat:.2f} samples/s, "
        f"{1000 * bs / plat:.1f} ms/step"
    )
    print(
        f"    bare PyTorch loop:                              {bare:.2f} samples/s, "
        f"{1000 * bs / bare:.1f} ms/step"
    )


def report_gpu(
    device: torch.device,
    *,
    shapes: str,
    batch_size: int,
    steps: int,
    clip_s: float,
    target_tokens: int,
    checkpointing: bool,
) -> None:
    """(b): measure and print training samples/s and peak memory against the target."""
    model = random_model(shapes, device, checkpointing=checkpointing)
    out = gpu_throughput(
        model,
        batch_size=batch_size,
        clip_s=clip_s,
        target_tokens=target_tokens,
        steps=steps,
        warmup=3,
    )
    print(f"\ndevice: {device_label(device)}")
    print(
        f"(b) {shapes} shapes (Whisper-large-v3 + Qwen2.5-7B when large), random weights, "
        f"{next(model.llm.parameters()).dtype}, dense 8-expert steering, {clip_s:g} s "
        f"clips ({out['frames']} mel frames), batch {batch_size}, {target_tokens} "
        f"target tokens, checkpointing {checkpointing}"
    )
    print(
        f"    {out['samples_per_s']:.1f} samples/s ({1000 * out['step_s']:.0f} ms/step, "
        f"median of {steps}); peak memory {out['peak_gib']:.1f} GiB; "
        f"anchor 57-59 samples/s on one H100, target >= 80"
    )
    print(
        f"    CPU collation (log-mel) of one batch: {1000 * out['collate_s']:.0f} ms "
        f"({100 * out['collate_s'] / out['step_s']:.0f} % of a step if not overlapped)"
    )


def run(
    *,
    overrides: Sequence[str] = (),
    backbone: str = "tiny",
    steps: int = 0,
    rounds: int = 3,
    cpu_compare: bool = False,
    gpu_batch: int = 16,
    gpu_steps: int = 10,
    gpu_shapes: str = "large",
    clip_s: float = 10.0,
    target_tokens: int = 32,
    checkpointing: bool = False,
    force_gpu_part: bool = False,
    recipes: bool = False,
) -> None:
    """The benchmarks of ``jobs/bench_train.py``: (c) alone with ``recipes``; else (a) on a
    machine without CUDA (or with ``cpu_compare``) and (b) with CUDA (or ``force_gpu_part``,
    on small stand-in shapes). ``steps`` 0 = each part's default."""
    if recipes:
        report_recipes(steps=steps or 12, rounds=rounds)
        return
    cuda = torch.cuda.is_available()
    if not cuda or cpu_compare:
        cpu_steps = steps or (50 if backbone == "tiny" else 4)
        report_cpu(backbone, list(overrides), steps=cpu_steps, rounds=rounds)
    if cuda or force_gpu_part:
        report_gpu(
            torch.device("cuda" if cuda else "cpu"),
            shapes=gpu_shapes if cuda else "small",
            batch_size=gpu_batch,
            steps=gpu_steps,
            clip_s=clip_s,
            target_tokens=target_tokens,
            checkpointing=checkpointing,
        )
    else:
        print("\n(b) needs a CUDA GPU: skipped (use --force-gpu-part for a small CPU stand-in)")

"""Benchmark training: the platform's path against a bare PyTorch loop, and GPU throughput.

(a) CPU: step time of the full platform path (Ray Train, 1 worker, DeepSpeed ZeRO-2 around the
real ``train_fn_per_worker``) over a bare single-process loop (same model config and seed,
same batches from the same manifest, AdamW groups, backward, clip, step), target <= 1.10.
Rounds alternate the two sides; each side warms up for ``--steps`` steps and times the next
``--steps`` (the platform's own ``samples_per_s`` report, train time only, no validation).

(b) GPU: samples/s and peak memory of a plain loop for Whisper-large-v3 + Qwen2.5-7B shapes
with random weights, bf16, 10 s clips, dense 8-expert steering with backprop through the
encoder (anchor 57-59 samples/s on one H100; target >= 80). Skipped on CPU.

Tiny backbones (default, about three minutes on 2 cores), or Whisper base + SmolLM2::

    python -m jobs.bench_train
    python -m jobs.bench_train --backbone real --steps 4 --rounds 2

(c) CPU, ``--recipes``: clips/s of the old and the new reference recipe side by side in one
run, on the real backbones and the reference suites, with the bare loop of (a) (one process;
rounds alternate). Old: 18-token system turn, 1 thread, batches bucketed by audio seconds with
tasks mixed, no CTC head or projector norm, bf16 encoder. New: ``jobs/configs/reference.yaml``
(no system turn, 2 threads, single-task batches bucketed by sequence tokens, compact tool
lists, CTC head, norm,
fp32 encoder). Measured on the mixed ASR+AQA+FC suites (target >= 3x) and, for the new
recipe, on ASR batches alone (target >= 6 clips/s with 2 threads)::

    python -m jobs.build_data jobs/configs/data_reference.yaml
    python -m jobs.bench_train --recipes --steps 12 --rounds 1

GPU node (runs (b) only unless ``--cpu-compare``)::

    python -m jobs.bench_train --gpu-batch 16 --gpu-steps 10

Any ``key=value`` config override is applied to both sides of (a).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from steermoe import env
from steermoe.bench import BareStep, bare_train_loop, device_label, synchronize
from steermoe.config import Config, OptimConfig, load_config

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
        "model.dtype=bfloat16",
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
    from steermoe.train.run import build_trainer

    result = build_trainer(config).fit()
    return float(result.metrics["samples_per_s"])


def compare_cpu(config: Config, *, rounds: int) -> dict[str, list[float]]:
    """(a) Alternate the bare loop and the Ray Train + DeepSpeed path, ``rounds`` times each.

    Returns:
        samples/s per round for ``bare`` and ``platform``.
    """
    import ray

    from steermoe.model import build_model

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
    from transformers import Qwen2Config, WhisperConfig

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
    from transformers import Qwen2ForCausalLM, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from steermoe import tiny
    from steermoe.config import ModelConfig
    from steermoe.model import SteerMoEModel
    from steermoe.model.build import build_trainable
    from steermoe.model.encoder import WhisperEncoderWrapper
    from steermoe.model.prompt import build_template

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
    from steermoe.model import Batch

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
    from steermoe.model import build_model

    reference = "jobs/configs/reference.yaml"
    sides = {
        "old, mixed": load_config(reference, [*OLD_RECIPE, *MIXED]),
        "new, mixed": load_config(reference, MIXED),
        "new, ASR": load_config(reference, ASR_ONLY),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides for (a)")
    parser.add_argument("--backbone", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-compare", action="store_true", help="run (a) on a GPU node too")
    parser.add_argument("--gpu-batch", type=int, default=16)
    parser.add_argument("--gpu-steps", type=int, default=10)
    parser.add_argument("--gpu-shapes", choices=["large", "small"], default="large")
    parser.add_argument("--clip-s", type=float, default=10.0)
    parser.add_argument("--target-tokens", type=int, default=32)
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument("--force-gpu-part", action="store_true", help="run (b) on CPU too")
    parser.add_argument("--recipes", action="store_true", help="run (c) only")
    args = parser.parse_args(argv)
    env.apply_defaults()
    cuda = torch.cuda.is_available()

    if args.recipes:
        steps = args.steps or 12
        print(f"device: {device_label(torch.device('cpu'))}")
        print(f"(c) reference recipes, real backbones, batch 8; {steps} timed steps per side")
        cps = compare_recipes(steps=steps, warmup=2, rounds=args.rounds)
        med = {k: statistics.median(v) for k, v in cps.items()}
        print(
            f"\n(c) new / old recipe on the mixed suites: "
            f"{med['new, mixed'] / med['old, mixed']:.2f}x (target >= 3); "
            f"new recipe on ASR batches: {med['new, ASR']:.2f} clips/s (target >= 6)"
        )
        return 0

    if not cuda or args.cpu_compare:
        steps = args.steps or (50 if args.backbone == "tiny" else 4)
        with tempfile.TemporaryDirectory(prefix="bench-train-") as storage:
            config = bench_config(args.backbone, args.overrides, steps=steps, storage=storage)
            m = config.model
            print(f"device: {device_label(torch.device('cpu'))}")
            print(
                f"(a) {m.encoder} + {m.llm}, {m.dtype}, {m.num_threads} thread(s), batch "
                f"{config.train.batch_size}, N={m.steering.num_experts}; per round and side "
                f"{steps} warm-up + {steps} timed steps; {args.rounds} alternating rounds"
            )
            sps = compare_cpu(config, rounds=args.rounds)
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

    if cuda or args.force_gpu_part:
        device = torch.device("cuda" if cuda else "cpu")
        shapes = args.gpu_shapes if cuda else "small"
        model = random_model(shapes, device, checkpointing=args.checkpointing)
        out = gpu_throughput(
            model,
            batch_size=args.gpu_batch,
            clip_s=args.clip_s,
            target_tokens=args.target_tokens,
            steps=args.gpu_steps,
            warmup=3,
        )
        print(f"\ndevice: {device_label(device)}")
        print(
            f"(b) {shapes} shapes (Whisper-large-v3 + Qwen2.5-7B when large), random weights, "
            f"{next(model.llm.parameters()).dtype}, dense 8-expert steering, {args.clip_s:g} s "
            f"clips ({out['frames']} mel frames), batch {args.gpu_batch}, {args.target_tokens} "
            f"target tokens, checkpointing {args.checkpointing}"
        )
        print(
            f"    {out['samples_per_s']:.1f} samples/s ({1000 * out['step_s']:.0f} ms/step, "
            f"median of {args.gpu_steps}); peak memory {out['peak_gib']:.1f} GiB; "
            f"anchor 57-59 samples/s on one H100, target >= 80"
        )
        print(
            f"    CPU collation (log-mel) of one batch: {1000 * out['collate_s']:.0f} ms "
            f"({100 * out['collate_s'] / out['step_s']:.0f} % of a step if not overlapped)"
        )
    else:
        print("\n(b) needs a CUDA GPU: skipped (use --force-gpu-part for a small CPU stand-in)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

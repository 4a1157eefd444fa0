"""Model-core benchmarks of ``python -m jobs.bench_model``: each figure a ratio of two sides
measured alternately in one run (steering overhead, real-length vs padded encoding, batched vs
per-example generation, decoding held to the tool-call grammar vs free) plus the
trainable-parameter arithmetic.
"""

from __future__ import annotations

import torch

from steermoe import backbones
from steermoe.bench.common import (
    Comparison,
    count_trainable,
    device_label,
    interleave,
    pick_device,
    speech_windows,
    steering_param_count,
    suppress_tokens,
)
from steermoe.config import ModelConfig
from steermoe.model import build_model
from steermoe.model.build import build_trainable

REAL = ("whisper-base", "smollm2-135m-instruct")
TINY = ("tiny-random-whisper", "tiny-random-llm")
# Whisper-large-v3 encoder (D, L) and Qwen2.5-7B (H): the paper's shapes.
LARGE_SHAPES = {"dim": 1280, "layers": 32, "llm_dim": 3584}


def steering_overhead(model, waves: list, *, repeats: int, warmup: int = 1) -> Comparison:
    """(a) The same clips through the encoder with and without the steering MoE.

    Sides ``steered`` and ``frozen``: ``model.encoder(features, lengths, steering=...)``.
    """
    features, lengths = model.featurize(waves)
    features, lengths = features.to(model.device), lengths.to(model.device)
    steering = model.steering

    def steered() -> None:
        steering.stats.clear()
        model.encoder(features, lengths, steering=steering)

    with torch.inference_mode():
        return interleave(
            {"steered": steered, "frozen": lambda: model.encoder(features, lengths, steering=None)},
            repeats=repeats,
            warmup=warmup,
            device=model.device,
        )


def real_vs_padded(model, waves: list, *, repeats: int, warmup: int = 1) -> Comparison:
    """(b) Encoder on the real clip length vs the stock Hugging Face encoder on 30 s.

    Sides ``real`` (the wrapper on the clips' own frames) and ``padded`` (stock
    ``WhisperEncoder`` on 3000 mel frames, as Hugging Face requires).
    """
    device = model.device
    dtype = model.encoder.encoder.conv1.weight.dtype
    features, lengths = model.featurize(waves)
    features, lengths = features.to(device), lengths.to(device)
    padded = model.feature_extractor(waves, sampling_rate=16000, return_tensors="pt")
    padded = padded["input_features"].to(device, dtype)  # B, M, 3000
    stock = model.encoder.encoder
    with torch.inference_mode():
        return interleave(
            {
                "real": lambda: model.encoder(features, lengths),
                "padded": lambda: stock(input_features=padded),
            },
            repeats=repeats,
            warmup=warmup,
            device=device,
        )


def batched_vs_loop(
    model, waves: list, *, max_new_tokens: int, repeats: int, warmup: int = 1
) -> tuple[Comparison, dict[str, int]]:
    """(c) One batched ``generate`` vs one ``generate`` per example, fixed decode length.

    The stop tokens are suppressed while timing, so every example decodes exactly
    ``max_new_tokens`` tokens on both sides (an untrained model may otherwise stop early).
    Featurisation is done once beforehand and not timed.

    Returns:
        the comparison (sides ``batched``, ``loop``) and the tokens each side decoded.
    """
    instructions = ["Transcribe the audio."] * len(waves)
    device = model.device
    batch = model.collate(waves, instructions).to(device)
    singles = [model.collate([w], instructions[:1]).to(device) for w in waves]
    tokens = {"batched": 0, "loop": 0}

    def batched() -> None:
        tokens["batched"] = sum(model.generate(batch, max_new_tokens=max_new_tokens).num_tokens)

    def loop() -> None:
        tokens["loop"] = sum(
            sum(model.generate(one, max_new_tokens=max_new_tokens).num_tokens) for one in singles
        )

    with suppress_tokens(model, model.template.stop_ids):
        comparison = interleave(
            {"batched": batched, "loop": loop}, repeats=repeats, warmup=warmup, device=device
        )
    return comparison, tokens


# Two tools as the synthetic fc suite offers them: a free string, an enum, numbers.
BENCH_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_timer",
            "parameters": {
                "type": "object",
                "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
                "required": ["minutes"],
            },
        },
    },
]


def grammar_vs_free(
    model, waves: list, *, max_new_tokens: int, repeats: int, warmup: int = 1
) -> tuple[Comparison, int]:
    """(e) Greedy decoding held to the tool-call grammar vs free, batch of tool prompts.

    Both sides decode the same batch with the compact tool instruction for the same number
    of steps: the held side runs first (its call lists close after N steps, the vocabulary's
    token texts are built then), and the free side then decodes exactly N tokens (stop tokens
    suppressed). So the ratio is the grammar's cost over the same encoder pass, prefill and
    decode steps.

    Returns:
        the comparison (sides ``held``, ``free``) and N.
    """
    from steermoe.data.tools import tool_instruction
    from steermoe.model.core import Decoding
    from steermoe.model.tool_grammar import ToolCallGrammar

    prompt = tool_instruction(BENCH_TOOLS, compact=True)
    batch = model.collate(waves, [prompt] * len(waves)).to(model.device)
    held_opts = Decoding(tool_calls=ToolCallGrammar(BENCH_TOOLS, mode="list"))
    gen = model.generate(batch, max_new_tokens=max_new_tokens, decoding=held_opts)
    steps = max(len(ids) for ids in gen.token_ids)

    def held() -> None:
        model.generate(batch, max_new_tokens=max_new_tokens, decoding=held_opts)

    def free() -> None:
        with suppress_tokens(model, model.template.stop_ids):
            model.generate(batch, max_new_tokens=steps, max_repeats=0)

    sides = {"held": held, "free": free}
    comparison = interleave(sides, repeats=repeats, warmup=warmup, device=model.device)
    return comparison, steps


def param_counts(
    *, dim: int, layers: int, llm_dim: int, experts: tuple[int, ...] = (2, 4, 8)
) -> list[dict[str, int]]:
    """Trainable parameters for N experts: the built modules and the method's arithmetic.

    Each row: ``experts``, ``built`` (parameters of the platform's own
    :func:`~steermoe.model.build.build_trainable`) and the formula's parts and ``total``.
    """
    rows = []
    for n in experts:
        # The paper's module: no projector output norm (its H gains are not in the formula).
        cfg = ModelConfig(steering={"num_experts": n}, projector={"norm": "none"})
        trainable, _ = build_trainable(cfg, encoder_dim=dim, encoder_layers=layers, llm_dim=llm_dim)
        formula = steering_param_count(dim=dim, layers=layers, experts=n, llm_dim=llm_dim)
        rows.append({"experts": n, "built": count_trainable(trainable), **formula})
    return rows


def load(backbone: str, device: torch.device, dtype: str, experts: int):
    """The model for ``backbone`` (``real``/``tiny``/``auto``) and a line saying which."""
    note = ""
    if backbone == "auto":
        ready = all(backbones.is_prepared(name) for name in REAL)
        backbone = "real" if ready else "tiny"
        if not ready:
            note = " (real backbones not prepared: run `python -m jobs.prepare_backbones`)"
    encoder, llm = REAL if backbone == "real" else TINY
    cfg = ModelConfig(encoder=encoder, llm=llm, dtype=dtype, steering={"num_experts": experts})
    model = build_model(cfg, device=device)
    # Inference only: the trainable part runs in the backbones' dtype (fp32 or bf16).
    model.trainable.to(model.llm.get_input_embeddings().weight.dtype)
    model.eval()
    return model, f"{encoder} + {llm} ({backbone}){note}"


def run(
    *,
    backbone: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    repeats: int = 5,
    batch_size: int = 8,
    clip_s: float = 5.0,
    max_new_tokens: int = 16,
    experts: int = 4,
    threads: int = 0,
) -> None:
    """Measure (a)-(d) and print each figure with its target (see ``jobs/bench_model.py``)."""
    if threads:
        torch.set_num_threads(threads)
    where = pick_device(device)
    model, which = load(backbone, where, dtype, experts)
    waves, source = speech_windows(clip_s, batch_size)
    weights = model.llm.get_input_embeddings().weight.dtype
    r = repeats
    print(f"device: {device_label(where)}")
    print(f"model: {which}, dense steering N={experts}, {str(weights).removeprefix('torch.')}")
    print(
        f"clips: {source}; 1 warm-up call per side, then {r} (a), {max(2, r // 2)} (b), "
        f"{max(2, (r + 1) // 2)} (c) timed calls per side, alternating"
    )

    a = steering_overhead(model, waves, repeats=r)
    ratio = a.ratio("steered", "frozen")
    print(
        f"\n(a) steered / frozen encoder time: {ratio:.3f}  (target <= 1.10; ratio of minima "
        f"{a.min_ratio('steered', 'frozen'):.3f})"
    )
    print(f"    steered {a.describe('steered', per='batch')}")
    print(f"    frozen  {a.describe('frozen', per='batch')}")

    b = real_vs_padded(model, waves, repeats=max(2, r // 2))
    print(
        f"\n(b) real-length encoding is {b.ratio('padded', 'real'):.2f}x faster than padded "
        f"to 30 s ({clip_s:g} s clips, batch {batch_size}; target >= 3x; ratio of "
        f"minima {b.min_ratio('padded', 'real'):.2f}x)"
    )
    print(f"    real   {b.describe('real', per='batch')}")
    print(f"    padded {b.describe('padded', per='batch')}")

    c, tokens = batched_vs_loop(
        model, waves, max_new_tokens=max_new_tokens, repeats=max(2, (r + 1) // 2)
    )
    batched_tps = tokens["batched"] / c.median("batched")
    loop_tps = tokens["loop"] / c.median("loop")
    print(
        f"\n(c) batched (batch {batch_size}) / per-example generation throughput: "
        f"{batched_tps / loop_tps:.2f}x  (target >= 3x; ratio of minima "
        f"{c.min_ratio('loop', 'batched'):.2f}x)"
    )
    print(
        f"    batched {batched_tps:.1f} tokens/s, loop {loop_tps:.1f} tokens/s; "
        f"{max_new_tokens} tokens forced per example (stop tokens suppressed), "
        f"decoded {tokens['batched']} vs {tokens['loop']}"
    )
    print(f"    batched {c.describe('batched', per='batch')}")
    print(f"    loop    {c.describe('loop', per='batch')}")

    e, steps = grammar_vs_free(
        model, waves, max_new_tokens=max(max_new_tokens, 48), repeats=max(2, (r + 1) // 2)
    )
    print(
        f"\n(e) greedy decoding held to the tool-call grammar / free: {e.ratio('held', 'free'):.3f}"
        f" (batch {batch_size}, the same {steps} decode steps each; ratio of minima "
        f"{e.min_ratio('held', 'free'):.3f})"
    )
    print(f"    held {e.describe('held', per='batch')}")
    print(f"    free {e.describe('free', per='batch')}")

    print("\n(d) trainable parameters (router D*L*N + L*N, vectors L*N*D, scales L, D*H + H)")
    enc = model.encoder
    h = model.llm.get_input_embeddings().weight.shape[1]
    built = count_trainable(model.trainable)
    frozen = sum(p.numel() for p in model.parameters()) - built
    print(
        f"    {which}: built model N={experts}: {built:,} trainable, {frozen:,} frozen "
        f"({100 * built / (built + frozen):.2f} %); fp32 checkpoint {built * 4 / 2**20:.2f} MiB"
    )
    for label, dims in (
        (f"{which.split(' (')[0]} (D={enc.dim}, L={enc.num_layers}, H={h})", None),
        ("whisper-large-v3 + Qwen2.5-7B (D=1280, L=32, H=3584)", LARGE_SHAPES),
    ):
        dims = dims or {"dim": enc.dim, "layers": enc.num_layers, "llm_dim": h}
        print(f"    {label}:")
        for row in param_counts(**dims):
            check = "ok" if row["built"] == row["total"] else f"MISMATCH built {row['built']:,}"
            print(
                f"      N={row['experts']}: {row['total']:>10,} = router {row['router']:,} "
                f"+ vectors {row['vectors']:,} + scales {row['scales']} "
                f"+ projector {row['projector']:,}  [{check}]"
            )
    print(
        "    Expected: the steering checkpoint is 'about a megabyte' for the default"
        " model; large shapes train ~5 M parameters against ~8.3 B frozen (0.64 B + 7.6 B)."
    )

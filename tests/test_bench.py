"""Benchmark jobs on tiny random backbones: figures are finite and positive, arithmetic holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synth_fixtures import write_suite

from steermoe.bench import model as bench_model
from steermoe.bench import train as bench_train
from steermoe.bench.common import (
    Comparison,
    bare_train_loop,
    interleave,
    steering_param_count,
    suppress_tokens,
)
from steermoe.config import ModelConfig
from steermoe.model import build_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    cfg = ModelConfig(encoder="tiny-random-whisper", llm="tiny-random-llm")
    model = build_model(cfg, cache_dir=tmp_path_factory.mktemp("cache"))
    model.eval()
    return model


def clips(n: int, seconds: float = 2.0) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(n)]


def positive(values) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


def test_interleave_alternates_and_counts():
    calls: list[str] = []
    result = interleave(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warmup, then AB BA AB
    assert [len(v) for v in result.times.values()] == [3, 3]
    assert Comparison({"x": [2.0, 4.0, 6.0], "y": [1.0, 2.0, 3.0]}).ratio("x", "y") == 2.0


def test_large_shape_parameter_arithmetic_matches_hand_calculation():
    # D=1280, L=32, N=8, H=3584 by hand: router 1280*32*8 + 32*8, vectors 32*8*1280, scales 32,
    # projector 1280*3584 + 3584.
    counts = steering_param_count(dim=1280, layers=32, experts=8, llm_dim=3584)
    assert counts == {
        "router": 327_936,
        "vectors": 327_680,
        "scales": 32,
        "projector": 4_591_104,
        "total": 5_246_752,
    }
    rows = bench_model.param_counts(**bench_model.LARGE_SHAPES)
    assert [r["total"] for r in rows] == [4_755_040, 4_918_944, 5_246_752]
    assert all(r["built"] == r["total"] for r in rows)  # the platform's modules agree


def test_model_benchmarks_give_finite_positive_figures(tiny_model):
    waves = clips(2)
    a = bench_model.steering_overhead(tiny_model, waves, repeats=1)
    b = bench_model.real_vs_padded(tiny_model, waves, repeats=1)
    c, tokens = bench_model.batched_vs_loop(tiny_model, waves, max_new_tokens=3, repeats=1)
    assert positive([a.ratio("steered", "frozen"), b.ratio("padded", "real")])
    assert positive([c.ratio("loop", "batched")])
    assert tokens == {"batched": 6, "loop": 6}  # stop tokens suppressed: exactly 3 each
    e, steps = bench_model.grammar_vs_free(tiny_model, waves, max_new_tokens=4, repeats=1)
    assert positive([e.ratio("held", "free")])
    assert 1 <= steps <= 4
    built = bench_model.param_counts(dim=64, layers=2, llm_dim=64, experts=(4,))[0]
    norm = tiny_model.trainable.projector.norm  # the platform's addition, not in the formula
    gains = sum(p.numel() for p in norm.parameters()) if norm is not None else 0
    assert gains == 64
    total = sum(p.numel() for _, p in tiny_model.trainable_parameters())
    assert built["built"] == total - gains


def test_suppress_tokens_is_removed_afterwards(tiny_model):
    head = tiny_model.llm.get_output_embeddings()
    with suppress_tokens(tiny_model, tiny_model.template.stop_ids):
        assert len(head._forward_hooks) == 1
    assert len(head._forward_hooks) == 0


def test_bare_train_loop_on_tiny_backbones(tmp_path):
    root = write_suite(tmp_path / "data")
    cfg = bench_train.bench_config(
        "tiny", [f"data.root={root}"], steps=2, storage=str(tmp_path / "runs")
    )
    timing = bare_train_loop(cfg, steps=2, warmup_steps=1)
    assert timing.steps == 2 and timing.samples > 0
    assert positive([timing.samples_per_s, timing.step_s])


def test_large_shape_path_runs_with_small_stand_ins():
    model = bench_train.random_model("small", torch.device("cpu"))
    before = model.steering.experts.vectors.detach().clone()
    out = bench_train.gpu_throughput(
        model, batch_size=2, clip_s=1.0, target_tokens=4, steps=1, warmup=1
    )
    assert positive([out["samples_per_s"], out["step_s"]])
    assert not torch.equal(before, model.steering.experts.vectors)  # gradient reached steering

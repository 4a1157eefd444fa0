"""Serve benchmark of ``python -m jobs.bench_serve``: closed-loop HTTP load on deployments.

:func:`deploy_and_measure` deploys the model twice (batched and unbatched) and runs the load
from a separate process. Each of ``concurrency`` workers sends its requests back to back over its own keep-alive
connection, so exactly ``concurrency`` requests are in flight at any time. Besides greedy
batched and unbatched decoding, a ``sampled`` row measures the batched deployment with
sampling on (temperature, top_p and a seed per request).
"""

from __future__ import annotations

import base64
import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

from steermoe.config import Config
from steermoe.data.heldout import LIBRIVOX
from steermoe.tracking import tracking_uri


@dataclass(frozen=True)
class LoadResult:
    """One closed-loop run."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    audio_s: float
    latencies_s: list[float]
    completion_tokens: int

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def rtfx(self) -> float:
        """Audio seconds processed per wall-clock second."""
        return self.audio_s / self.wall_s

    def pct(self, q: float) -> float:
        """Latency percentile in seconds."""
        return float(np.percentile(self.latencies_s, q))


def clips_b64(paths: list[Path], max_s: float) -> list[tuple[str, float]]:
    """Real clips cut to ``max_s`` (the served model's limit), as base64 WAV + duration."""
    out = []
    for path in paths:
        wave, rate = sf.read(str(path), dtype="float32")
        wave = wave[: int(max_s * rate)]
        buf = io.BytesIO()
        sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
        out.append((base64.b64encode(buf.getvalue()).decode(), len(wave) / rate))
    return out


def chat_body(model: str, clip_b64: str, max_tokens: int, sampling: dict | None = None) -> dict:
    """An ASR chat completion request (audio only: the model's own ASR instruction), greedy
    or with the ``sampling`` fields (``temperature``, ``top_p``, ``seed``)."""
    part = {"type": "input_audio", "input_audio": {"data": clip_b64, "format": "wav"}}
    return {
        "model": model,
        "messages": [{"role": "user", "content": [part]}],
        "max_tokens": max_tokens,
        **(sampling or {}),
    }


def closed_loop(
    url: str,
    *,
    model: str,
    clips: list[tuple[str, float]],
    concurrency: int,
    per_worker: int,
    max_tokens: int,
    api_key: str | None = None,
    sampling: dict | None = None,
) -> LoadResult:
    """Run ``concurrency`` workers x ``per_worker`` chat completions against ``url``
    (greedy, or sampled with ``sampling`` and a different seed per request)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def worker(w: int) -> tuple[list[float], float, int, int]:
        lat, audio, tokens, errors = [], 0.0, 0, 0
        with requests.Session() as session:
            for i in range(per_worker):
                clip, seconds = clips[(w + i) % len(clips)]
                seeded = {**sampling, "seed": w * per_worker + i} if sampling else None
                t0 = time.perf_counter()
                r = session.post(
                    f"{url}/v1/chat/completions",
                    json=chat_body(model, clip, max_tokens, seeded),
                    headers=headers,
                    timeout=600,
                )
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                    continue
                audio += seconds
                tokens += r.json()["usage"]["completion_tokens"]
        return lat, audio, tokens, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        parts = list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - start
    return LoadResult(
        concurrency=concurrency,
        requests=concurrency * per_worker,
        errors=sum(p[3] for p in parts),
        wall_s=wall,
        audio_s=sum(p[1] for p in parts),
        latencies_s=[x for p in parts for x in p[0]],
        completion_tokens=sum(p[2] for p in parts),
    )


# ------------------------------------------------------------------------ orchestration


@dataclass(frozen=True)
class BenchSpec:
    """What to measure."""

    clips: tuple[Path, ...]
    concurrency: tuple[int, ...] = (1, 8, 32)
    # Requests per concurrency level (at least 2 per worker).
    requests: int = 64
    max_tokens: int = 16
    # The sampled row: temperature (0 = no such row) and top_p, on the batched deployment.
    temperature: float = 0.7
    top_p: float = 0.9


def _health(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=30).json()


def _model_card(url: str, api_key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return requests.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"][0]


def run_benchmark(urls: dict[str, str], spec: BenchSpec, *, api_key: str | None) -> dict:
    """Measure every mode in ``urls`` (e.g. batched/unbatched) at every concurrency, plus
    ``sampled``: the first url with sampling on (unless ``spec.temperature`` is 0).

    The load runs in a spawned process so the client never competes with this process's
    threads for the GIL. Returns rows plus the batch-1 decode latency.
    """
    first = next(iter(urls.values()))
    card = _model_card(first, api_key)
    clips = clips_b64(list(spec.clips), max_s=min(card["max_audio_s"], 30.0) - 0.05)
    model = card["id"]
    rows = []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:

        def load(
            url: str, concurrency: int, per_worker: int, max_tokens: int, sampling=None
        ) -> LoadResult:
            return pool.submit(
                closed_loop,
                url,
                model=model,
                clips=clips,
                concurrency=concurrency,
                per_worker=per_worker,
                max_tokens=max_tokens,
                api_key=api_key,
                sampling=sampling,
            ).result()

        modes = [(mode, url, None) for mode, url in urls.items()]
        if spec.temperature > 0:
            sampling = {"temperature": spec.temperature, "top_p": spec.top_p}
            modes.append(("sampled", first, sampling))

        for url in urls.values():  # warm-up: first requests pay lazy initialisation
            load(url, 2, 2, spec.max_tokens)
        one = load(first, 1, 8, 1)
        full = load(first, 1, 8, spec.max_tokens)
        extra_tokens = (full.completion_tokens - one.completion_tokens) / full.requests
        extra_ms = 1000 * (np.mean(full.latencies_s) - np.mean(one.latencies_s))
        ms_per_token = extra_ms / extra_tokens if extra_tokens > 0 else float("nan")
        for c in spec.concurrency:
            for mode, url, sampling in modes:
                before = _health(url)["batches"]
                res = load(url, c, max(2, spec.requests // c), spec.max_tokens, sampling)
                after = _health(url)["batches"]
                n = after["count"] - before["count"]
                sizes = after["recent_sizes"][-n:] if n else []
                rows.append(
                    {"mode": mode, "result": res, "mean_batch": float(np.mean(sizes or [0]))}
                )
    return {"rows": rows, "ms_per_token": float(ms_per_token), "clips": len(clips)}


def default_clips() -> tuple[Path, ...]:
    """The LibriVox test clips of ``pocketsphinx-testdata`` (none when not installed)."""
    return tuple(sorted(LIBRIVOX.glob("*.wav")))


def deploy_and_measure(config: Config, spec: BenchSpec, *, init_random: bool = False) -> dict:
    """Deploy ``serve.model`` as ``/batched`` (``serve.max_batch_size``) and ``/unbatched``
    (batch 1) on one Serve instance, measure both with :func:`run_benchmark`, shut down.

    Args:
        config: the deployment (``serve``) and the MLflow store.
        spec: what to measure.
        init_random: write a random checkpoint to ``serve.model`` when that folder is missing.
    """
    # Ray and torch stay out of the module: the load process imports it too.
    import ray
    from ray import serve

    from steermoe.model import build_model, save_checkpoint
    from steermoe.serve.deploy import connect_ray, deploy

    if init_random and not Path(config.serve.model).exists():
        save_checkpoint(build_model(config.model), config.model, config.serve.model)
    connect_ray()
    try:
        uri = tracking_uri(config)
        urls = {
            "batched": deploy(
                config, tracking_uri=uri, app_name="bench-batched", route_prefix="/batched"
            ),
            "unbatched": deploy(
                config,
                tracking_uri=uri,
                app_name="bench-unbatched",
                route_prefix="/unbatched",
                max_batch_size=1,
            ),
        }
        return run_benchmark(urls, spec, api_key=os.environ.get(config.serve.api_key_env))
    finally:
        serve.shutdown()
        ray.shutdown()


def report(bench: dict, *, baseline: str = "unbatched", batched: str = "batched") -> str:
    """The table and the ratios the issue asks for."""
    lines = [
        f"{'mode':10s} {'conc':>4s} {'reqs':>5s} {'err':>4s} {'req/s':>8s} {'p50 ms':>8s} "
        f"{'p95 ms':>8s} {'p99 ms':>8s} {'RTFx':>7s} {'batch':>6s}"
    ]
    by = {}
    for row in bench["rows"]:
        r: LoadResult = row["result"]
        by[(row["mode"], r.concurrency)] = r
        lines.append(
            f"{row['mode']:10s} {r.concurrency:4d} {r.requests:5d} {r.errors:4d} {r.rps:8.2f} "
            f"{1000 * r.pct(50):8.1f} {1000 * r.pct(95):8.1f} {1000 * r.pct(99):8.1f} "
            f"{r.rtfx:7.2f} {row['mean_batch']:6.2f}"
        )
    lines.append("")
    levels = sorted({c for _, c in by})
    ratios = [f"c={c}: x{by[(batched, c)].rps / by[(baseline, c)].rps:.2f}" for c in levels]
    lines.append("throughput batched / unbatched: " + ", ".join(ratios))
    top = max(levels)
    ratio = by[(batched, top)].rps / by[(baseline, top)].rps
    lines.append(
        f"target >= 3x at concurrency {top}: {'PASS' if ratio >= 3 else 'FAIL'} (x{ratio:.2f})"
    )
    if (baseline, 1) in by:
        bound = 2 * by[(baseline, 1)].pct(50) * top
        p99 = by[(batched, top)].pct(99)
        lines.append(
            f"p99 batched @{top} = {1000 * p99:.0f} ms vs 2 x unbatched p50 @1 x {top} = "
            f"{1000 * bound:.0f} ms: {'PASS' if p99 <= bound else 'FAIL'} "
            f"(ratio {p99 / bound:.2f})"
        )
    if any(mode == "sampled" for mode, _ in by):
        costs = [
            f"c={c}: x{by[('sampled', c)].rps / by[(batched, c)].rps:.2f}"
            for c in levels
            if ("sampled", c) in by
        ]
        lines.append("throughput sampled / greedy (batched): " + ", ".join(costs))
    lines.append(f"decode latency at batch 1: {bench['ms_per_token']:.2f} ms/token")
    return "\n".join(lines)

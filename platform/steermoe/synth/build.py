"""Build the offline synthetic suites (asr, aqa, fc) from text pools and TTS voices.

``build(config)`` plans every clip from the seed (texts, voices, speed, pitch, noise), renders
the missing ones in a process pool, and writes ``<out>/<suite>/{train,validation,test}.jsonl``
with audio under ``<out>/<suite>/audio/<split>/``. Audio file names carry a hash of everything
that shapes the clip, so a re-run renders only what is new or changed and skips valid files.
Splits are disjoint in texts/templates (:mod:`steermoe.synth.text`) and in voices
(:func:`steermoe.synth.tts.split_voices`).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steermoe.data.audio import SAMPLE_RATE, is_valid_wav, write_wav
from steermoe.data.augment import add_noise
from steermoe.data.examples import Example, write_manifest
from steermoe.data.heldout import ASR_INSTRUCTION
from steermoe.data.tools import calls_to_text, tool_instruction
from steermoe.synth import aqa, fc, text, tts
from steermoe.synth.build_config import BuildConfig, SuiteConfig

SUITES = ("asr", "aqa", "fc")
OVERSAMPLE = 0.05  # extra clips planned per split to replace ones dropped for length


@dataclass(frozen=True)
class Job:
    """One clip to render and the example it becomes."""

    id: str
    suite: str
    split: str
    filename: str  # relative to <out>/<suite>
    text: str | None  # spoken text (None for tone clips)
    voice: str | None  # voice id (None for tone clips)
    engine: str  # piper | flite | espeak | kokoro | tones
    speed: float
    pitch: float
    tones: dict[str, Any] | None
    snr_db: float | None
    gain: float
    min_s: float
    max_s: float
    example: dict[str, Any] = field(default_factory=dict)  # fields besides path/duration


@dataclass
class BuildReport:
    """Counts and timings of one build."""

    out: str
    planned: int = 0
    rendered: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)
    engine_clips: dict[str, int] = field(default_factory=dict)
    engine_seconds: dict[str, float] = field(default_factory=dict)  # worker seconds
    engine_audio_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def throughput(self) -> dict[str, float]:
        """Rendered clips per worker-second, per engine."""
        return {
            e: round(n / self.engine_seconds[e], 2)
            for e, n in self.engine_clips.items()
            if self.engine_seconds.get(e)
        }


# ---------------------------------------------------------------------------- planning


def _voices(config: BuildConfig, report: BuildReport) -> dict[str, list[tts.Voice]]:
    weights = config.engines.model_dump()
    usable = []
    for engine in tts.ENGINES:
        if weights[engine] <= 0:
            continue
        problem = tts.engine_available(engine)
        if problem:
            warnings.warn(f"{problem}; building without {engine}", stacklevel=2)
            report.warnings.append(problem)
            continue
        usable.append(engine)
    voices = [v for v in tts.all_voices() if v.engine in usable]
    splits = tts.split_voices(voices, test=config.voices.test, validation=config.voices.validation)
    for split, vs in splits.items():
        if not vs:
            raise ValueError(f"no voice available for the {split} split (engines: {usable})")
    return splits


class _Planner:
    def __init__(self, config: BuildConfig, voices: dict[str, list[tts.Voice]]) -> None:
        self.config = config
        self.voices = voices
        self.weights = config.engines.model_dump()

    def voice(self, rng: random.Random, split: str) -> tts.Voice:
        by_engine: dict[str, list[tts.Voice]] = defaultdict(list)
        for v in self.voices[split]:
            by_engine[v.engine].append(v)
        engines = sorted(by_engine)
        engine = rng.choices(engines, weights=[self.weights[e] for e in engines])[0]
        return rng.choice(by_engine[engine])

    def job(
        self,
        rng: random.Random,
        *,
        suite: str,
        split: str,
        index: int,
        limits: SuiteConfig,
        example: dict[str, Any],
        spoken: str | None = None,
        voice: tts.Voice | None = None,
        tones: dict[str, Any] | None = None,
    ) -> Job:
        c = self.config
        snr = round(rng.uniform(*c.snr_db), 1) if rng.random() < c.noise_prob else None
        speed = round(rng.uniform(*c.speed), 3) if voice else 1.0
        pitch = round(rng.uniform(*c.pitch), 3) if voice else 1.0
        gain = round(rng.uniform(0.3, 0.9), 3)
        spec = [
            spoken,
            voice.id if voice else None,
            speed,
            pitch,
            tones,
            snr,
            gain,
            limits.min_s,
            limits.max_s,
            SAMPLE_RATE,
            c.seed,
        ]
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        eid = f"{suite}-{split}-{index:05d}"
        example = {**example, "voice": voice.id if voice else "tones"}
        example.setdefault("meta", {}).update(
            {
                "engine": voice.engine if voice else "tones",
                "speed": speed,
                "pitch": pitch,
                "snr_db": snr,
            }
        )
        return Job(
            id=eid,
            suite=suite,
            split=split,
            filename=f"audio/{split}/{eid}-{digest}.wav",
            text=spoken,
            voice=voice.id if voice else None,
            engine=voice.engine if voice else "tones",
            speed=speed,
            pitch=pitch,
            tones=tones,
            snr_db=snr,
            gain=gain,
            min_s=limits.min_s,
            max_s=limits.max_s,
            example=example,
        )


def _n_planned(n: int) -> int:
    return n + math.ceil(n * OVERSAMPLE) if n else 0


def plan(config: BuildConfig, voices: dict[str, list[tts.Voice]]) -> list[Job]:
    """Every clip of the build, in a fixed order (deterministic from ``config.seed``)."""
    planner = _Planner(config, voices)
    return _plan_asr(config, planner) + _plan_aqa(config, planner) + _plan_fc(config, planner)


def _plan_asr(config: BuildConfig, planner: _Planner) -> list[Job]:
    counts = {s: _n_planned(n) for s, n in config.asr.counts.model_dump().items()}
    if not any(counts.values()):
        return []
    texts = text.asr_texts(
        counts,
        seed=config.seed,
        mix=config.text_mix,
        short_share=config.asr.short_share,
        max_words=config.asr.max_words,
    )
    jobs = []
    for split, utterances in texts.items():
        rng = random.Random(f"{config.seed}:asr-voice:{split}")
        for i, utt in enumerate(utterances):
            example = {
                "task": "asr",
                "instruction": ASR_INSTRUCTION,
                "target": utt.text,
                "meta": {"source": utt.source, "text_key": utt.key},
            }
            jobs.append(
                planner.job(
                    rng,
                    suite="asr",
                    split=split,
                    index=i,
                    limits=config.asr,
                    example=example,
                    spoken=utt.text,
                    voice=planner.voice(rng, split),
                )
            )
    return jobs


def _plan_aqa(config: BuildConfig, planner: _Planner) -> list[Job]:
    carriers = [f"{slot}:{i}" for slot, cs in aqa.CARRIERS.items() for i in range(len(cs))]
    carrier_split = text.assign_splits(carriers, seed=config.seed, fractions=(0.17, 0.17))
    jobs = []
    for split, n in config.aqa.counts.model_dump().items():
        rng = random.Random(f"{config.seed}:aqa:{split}")
        mine = sorted(k for k, s in carrier_split.items() if s == split)
        for i in range(_n_planned(n)):
            family = rng.choices(("content", "sound", "gender"), weights=config.aqa_mix)[0]
            voice = None
            if family == "sound":
                item = aqa.sound_item(
                    rng.choice(("beeps", "sweep", "louder", "higher")), rng, config.aqa_forms
                )
            else:
                slot, cid = rng.choice(mine).split(":")
                item = aqa.content_item(slot, int(cid), rng, config.aqa_forms)
                voice = planner.voice(rng, split)
                if family == "gender":
                    item = aqa.gender_item(
                        item.text or "", item.key, voice.gender, rng, config.aqa_forms
                    )
            example = {
                "task": "aqa",
                "instruction": aqa.render_question(item.question, item.choices),
                "target": item.answer,
                "kind": item.kind,
                "choices": list(item.choices) if item.choices else None,
                "meta": {"family": item.family, "text_key": item.key, "spoken": item.text},
            }
            jobs.append(
                planner.job(
                    rng,
                    suite="aqa",
                    split=split,
                    index=i,
                    limits=config.aqa,
                    example=example,
                    spoken=item.text,
                    voice=voice,
                    tones=item.tones or None,
                )
            )
    return jobs


def fc_template_splits(seed: int) -> dict[str, str]:
    """Clause and chit-chat template ids -> split. Per tool, one style always trains; a
    second goes to test or validation (alternating over tools), a third to the other one."""
    by_tool: dict[str, list[str]] = defaultdict(list)
    for key in fc.CLAUSES:
        by_tool[key.split(":")[0]].append(key)
    out = {fc.PAIR_KEY: "train"}
    tools = sorted(by_tool, key=lambda t: text.stable_unit(seed, "fc-tool", t))
    for n, tool in enumerate(tools):
        styles = sorted(by_tool[tool], key=lambda k: text.stable_unit(seed, "fc-style", k))
        held = ["test", "validation"] if n % 2 == 0 else ["validation", "test"]
        for i, key in enumerate(styles):
            out[key] = held[i - 1] if 1 <= i <= 2 else "train"
    out.update(text.assign_splits(fc.CHITCHAT_KEYS, seed=seed, fractions=(0.2, 0.2)))
    return out


def _plan_fc(config: BuildConfig, planner: _Planner) -> list[Job]:
    splits = fc_template_splits(config.seed)
    categories = ("simple", "multiple", "parallel", "irrelevance")
    jobs = []
    for split, n in config.fc.counts.model_dump().items():
        rng = random.Random(f"{config.seed}:fc:{split}")
        clauses = sorted(k for k, s in splits.items() if s == split and k in fc.CLAUSES)
        chitchat = sorted(k for k, s in splits.items() if s == split and k.startswith("chitchat"))
        for i in range(_n_planned(n)):
            category = rng.choices(categories, weights=config.fc_mix)[0]
            if category == "parallel":
                if splits[fc.PAIR_KEY] == split and rng.random() < 0.15:
                    keys = [fc.PAIR_KEY]
                else:
                    a = rng.choice(clauses)
                    others = [k for k in clauses if k.split(":")[0] != a.split(":")[0]]
                    keys = [a, rng.choice(others)]
            elif category == "irrelevance" and chitchat and rng.random() < 0.5:
                keys = [rng.choice(chitchat)]
            else:
                keys = [rng.choice(clauses)]
            item = fc.fc_item(category, keys, rng)
            tools = [fc.TOOLS[name] for name in item.tools]
            example = {
                "task": "fc",
                "instruction": tool_instruction(tools),
                "target": calls_to_text(item.calls),
                "tools": tools,
                "expected_calls": list(item.expected),
                "category": item.category,
                "meta": {"text_key": "+".join(item.keys), "spoken": item.text},
            }
            jobs.append(
                planner.job(
                    rng,
                    suite="fc",
                    split=split,
                    index=i,
                    limits=config.fc,
                    example=example,
                    spoken=item.text,
                    voice=planner.voice(rng, split),
                )
            )
    return jobs


# ---------------------------------------------------------------------------- rendering

_VOICES = {v.id: v for v in tts.all_voices()}


def render(job: Job, out: str) -> dict[str, Any]:
    """Render one clip unless a valid file exists; returns its duration or the failure."""
    path = Path(out) / job.suite / job.filename
    skip = path.with_name(path.name + ".skip")
    duration = is_valid_wav(path)
    if duration is not None:
        return {"id": job.id, "duration": duration, "engine": job.engine, "reused": True}
    if skip.is_file():
        return {"id": job.id, "error": skip.read_text(), "engine": job.engine, "reused": True}
    start = time.perf_counter()
    seed = int(hashlib.sha1(path.name.encode()).hexdigest()[:12], 16)
    try:
        if job.tones is not None:
            audio = aqa.make_tones(job.tones, random.Random(seed))
        else:
            audio = tts.synthesize(
                _VOICES[job.voice], job.text or "", speed=job.speed, pitch=job.pitch
            )
        audio = _finish(audio, job, np.random.default_rng(seed))
    except (tts.TTSError, ValueError) as exc:
        return {"id": job.id, "error": str(exc), "engine": job.engine, "reused": False}
    secs = time.perf_counter() - start
    duration = len(audio) / SAMPLE_RATE
    if duration > job.max_s:
        reason = f"too long: {duration:.2f} s > {job.max_s:g} s"
        skip.parent.mkdir(parents=True, exist_ok=True)
        skip.write_text(reason)
        return {"id": job.id, "error": reason, "engine": job.engine, "secs": secs, "reused": False}
    write_wav(path, audio)
    return {"id": job.id, "duration": duration, "engine": job.engine, "secs": secs, "reused": False}


def _finish(audio: np.ndarray, job: Job, rng: np.random.Generator) -> np.ndarray:
    """Trim to the voiced span plus a short margin, pad short clips, set level, add noise."""
    audio = np.asarray(audio, dtype=np.float64)
    peak = np.abs(audio).max() if audio.size else 0.0
    if not np.isfinite(peak) or peak <= 1e-6:
        raise ValueError("synthesised audio is silent")
    audio = audio * (job.gain / peak)
    n_min = int(job.min_s * SAMPLE_RATE)
    if len(audio) < n_min:
        if len(audio) < 0.6 * n_min:
            raise ValueError(f"too short: {len(audio) / SAMPLE_RATE:.2f} s")
        lead = int(rng.integers(0, n_min - len(audio) + 1))
        audio = np.concatenate([np.zeros(lead), audio, np.zeros(n_min - len(audio) - lead)])
    if job.snr_db is not None:
        audio = add_noise(audio, job.snr_db, rng)
    return audio.astype(np.float32)


def _render_star(args: tuple[Job, str]) -> dict[str, Any]:
    return render(*args)


# ---------------------------------------------------------------------------- the build


def build(config: BuildConfig, *, log=print) -> BuildReport:
    """Plan, render (in parallel, incrementally) and write the manifests of every suite.

    Returns:
        A :class:`BuildReport`; also saved as ``<out>/build_report.json``.
    """
    out = config.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    report = BuildReport(out=str(out))
    start = time.perf_counter()
    voices = _voices(config, report)
    log(
        "voices per split: " + ", ".join(f"{s} {len(v)} ({_engines(v)})" for s, v in voices.items())
    )
    jobs = plan(config, voices)
    report.planned = len(jobs)
    log(f"planned {len(jobs)} clips into {out}")
    results = _render_all(jobs, str(out), config, report, log)
    _write_manifests(jobs, results, out, config, report, log)
    if config.prune:
        _prune(jobs, out, log)
    report.wall_s = round(time.perf_counter() - start, 2)
    rendered = report.rendered
    log(
        f"done in {report.wall_s:.1f} s: {rendered} rendered, {report.reused} reused, "
        f"{len(report.failed)} failed; clips/worker-s per engine: {report.throughput()}"
    )
    (out / "build_report.json").write_text(json.dumps(asdict(report), indent=1))
    return report


def _engines(voices: list[tts.Voice]) -> str:
    counts = Counter(v.engine for v in voices)
    return " ".join(f"{e}={n}" for e, n in sorted(counts.items()))


def _render_all(
    jobs: list[Job], out: str, config: BuildConfig, report: BuildReport, log
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    args = [(j, out) for j in jobs]
    start = last = time.perf_counter()
    if config.workers == 0:
        iterator = map(_render_star, args)
        pool = None
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the spawned workers
        pool = mp.get_context("spawn").Pool(config.workers)
        iterator = pool.imap_unordered(_render_star, args, chunksize=4)
    try:
        for n, res in enumerate(iterator, 1):
            suite = res["id"].split("-")[0]
            results[res["id"]] = res
            engine = res["engine"]
            if res["reused"]:
                report.reused += 1
            else:
                report.rendered += 1
                report.engine_clips[engine] = report.engine_clips.get(engine, 0) + 1
                report.engine_seconds[engine] = report.engine_seconds.get(engine, 0) + res.get(
                    "secs", 0.0
                )
                report.engine_audio_s[engine] = round(
                    report.engine_audio_s.get(engine, 0) + res.get("duration", 0.0), 2
                )
            if "error" in res:
                report.failed.append((res["id"], res["error"]))
            now = time.perf_counter()
            if now - last >= config.progress_every_s or n == len(jobs):
                last = now
                rate = n / max(now - start, 1e-9)
                log(
                    f"  {n}/{len(jobs)} clips ({suite}), {rate:.1f} clips/s, "
                    f"{report.reused} reused, {len(report.failed)} dropped"
                )
                sys.stdout.flush()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return results


def _write_manifests(
    jobs: list[Job], results: dict[str, dict], out: Path, config: BuildConfig, report, log
) -> None:
    by_split: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in jobs:
        by_split[(job.suite, job.split)].append(job)
    for suite in SUITES:
        counts = getattr(config, suite).counts.model_dump()
        for split, wanted in counts.items():
            rows: list[Example] = []
            for job in by_split.get((suite, split), []):
                res = results.get(job.id, {})
                if "duration" not in res or len(rows) >= wanted:
                    continue
                rows.append(
                    Example(
                        id=job.id,
                        audio_path=str(out / suite / job.filename),
                        duration_s=round(res["duration"], 4),
                        **job.example,
                    )
                )
            if wanted == 0 and not rows:
                continue
            path = write_manifest(out / suite / f"{split}.jsonl", rows)
            report.written[f"{suite}/{split}"] = len(rows)
            short = f" (wanted {wanted})" if len(rows) < wanted else ""
            log(f"wrote {path} with {len(rows)} examples{short}")


def _prune(jobs: list[Job], out: Path, log) -> None:
    keep = {out / j.suite / j.filename for j in jobs}
    keep |= {p.with_name(p.name + ".skip") for p in keep}
    removed = 0
    for suite in SUITES:
        folder = out / suite / "audio"
        if not folder.is_dir():
            continue
        for p in folder.rglob("*"):
            if p.is_file() and p not in keep:
                p.unlink()
                removed += 1
    if removed:
        log(f"pruned {removed} stale audio files")

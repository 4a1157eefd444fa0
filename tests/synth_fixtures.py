"""Tiny on-the-fly speech-like data for training tests: tone patterns with text targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def tone_clip(index: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A clip whose pitch encodes ``index`` (so a model can learn the mapping)."""
    t = np.arange(int(16000 * seconds)) / 16000
    freq = 200.0 + 150.0 * index
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def write_suite(root: Path, n_train: int = 24, n_val: int = 8, seed: int = 0) -> Path:
    """``root/asr/{train,validation}.jsonl`` plus WAVs; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("validation", n_val)):
        folder = root / "asr" / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            k = i % len(WORDS)
            seconds = float(rng.uniform(0.6, 1.6))
            path = folder / f"{split}-{i:04d}.wav"
            sf.write(path, tone_clip(k, seconds, rng), 16000, subtype="PCM_16")
            rows.append(
                {
                    "id": f"{split}-{i:04d}",
                    "audio_path": str(path.relative_to(root / "asr")),
                    "duration_s": round(seconds, 3),
                    "task": "asr",
                    "instruction": "Transcribe the audio.",
                    "target": WORDS[k],
                }
            )
        (root / "asr" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root

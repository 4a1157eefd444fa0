"""Audio reading and checking: every clip becomes float32 mono 16 kHz or an :class:`AudioError`.

Rates: any rate >= 4000 Hz is resampled to 16 kHz with a polyphase windowed-sinc filter
(8 kHz telephone speech such as FSDD is valid input). A rate below 4000 Hz cannot carry speech
and is rejected as a broken file. Multi-channel audio is averaged to mono.
"""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
MIN_SOURCE_RATE = 4_000


class AudioError(ValueError):
    """A clip that cannot be used; the message names the example id and the reason."""

    def __init__(self, example_id: str, reason: str) -> None:
        super().__init__(f"example {example_id!r}: {reason}")
        self.example_id = example_id
        self.reason = reason


def load_audio(
    path: str | Path,
    *,
    example_id: str,
    min_s: float = 0.0,
    max_s: float | None = None,
) -> np.ndarray:
    """Read a clip as float32 mono 16 kHz samples in [-1, 1].

    Args:
        path: any file libsndfile reads (WAV, FLAC, OGG, ...).
        example_id: named in every error message.
        min_s: clips shorter than this (seconds) are rejected.
        max_s: clips longer than this are rejected (``None`` = no limit). Length is checked on
            the header before decoding, so an over-long file is never read in full.

    Raises:
        AudioError: missing, unreadable/corrupt or non-audio file, absurd rate, empty clip,
            NaN or infinite samples, too short or too long.
    """
    info = audio_info(path, example_id=example_id)
    duration = info.frames / info.samplerate
    _check_length(duration, example_id=example_id, min_s=min_s, max_s=max_s)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for truncated data
        raise AudioError(example_id, f"cannot decode {path}: {exc}") from None
    if data.size == 0:
        raise AudioError(example_id, f"empty audio (0 samples) in {path}")
    if not np.isfinite(data).all():
        raise AudioError(example_id, f"audio contains NaN or infinite samples ({path})")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, rate, SAMPLE_RATE).astype(np.float32, copy=False)


def audio_info(path: str | Path, *, example_id: str) -> sf._SoundFileInfo:
    """Header of a clip (rate, frames, channels) after cheap sanity checks.

    Raises:
        AudioError: missing file, not audio, absurd sample rate, zero frames.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(example_id, f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError(example_id, f"empty file (0 bytes): {path}")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(example_id, f"not a readable audio file ({path}): {exc}") from None
    if info.samplerate < MIN_SOURCE_RATE:
        raise AudioError(
            example_id, f"sample rate {info.samplerate} Hz is below {MIN_SOURCE_RATE} Hz ({path})"
        )
    if info.frames <= 0:
        raise AudioError(example_id, f"empty audio (0 samples) in {path}")
    return info


def _check_length(duration: float, *, example_id: str, min_s: float, max_s: float | None) -> None:
    if max_s is not None and duration > max_s:
        raise AudioError(example_id, f"too long: {duration:.2f} s > max {max_s:g} s")
    if duration < min_s:
        raise AudioError(example_id, f"too short: {duration:.3f} s < min {min_s:g} s")


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D signal (Kaiser-windowed sinc, like
    ``scipy.signal.resample_poly`` with its default window), pure numpy."""
    if orig_rate == new_rate:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(int(new_rate), int(orig_rate))
    return resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator)


def resample_poly(x: np.ndarray, up: int, down: int, half_taps: int = 10) -> np.ndarray:
    """Upsample by ``up``, low-pass, downsample by ``down``; output length ``ceil(n*up/down)``.

    The filter has ``2*half_taps*max(up, down)+1`` taps (Kaiser beta 5), evaluated only at the
    samples each output needs, so memory is O(output length * taps / up).
    """
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    max_rate = max(up, down)
    cutoff = 1.0 / max_rate
    half_len = half_taps * max_rate
    taps = np.arange(-half_len, half_len + 1, dtype=np.float64)
    h = cutoff * np.sinc(cutoff * taps) * np.kaiser(2 * half_len + 1, 5.0)
    h *= up / h.sum() * 1.0  # unity DC gain after zero-stuffing
    n_out = math.ceil(n * up / down)
    # Output sample m sits at position m*down on the upsampled grid; it sums h[j] * u[m*down + half_len - j]
    # where u is x zero-stuffed by `up`, i.e. only j with (m*down + half_len - j) % up == 0 count.
    pos = np.arange(n_out, dtype=np.int64) * down + half_len
    phase = pos % up
    base = pos // up  # index into x for the first tap of this phase
    per_phase = math.ceil(len(h) / up)
    h_pad = np.zeros(per_phase * up, dtype=np.float64)
    h_pad[: len(h)] = h
    out = np.zeros(n_out, dtype=np.float64)
    chunk = max(1, 2_000_000 // per_phase)
    k = np.arange(per_phase, dtype=np.int64)
    for start in range(0, n_out, chunk):
        sl = slice(start, start + chunk)
        idx = base[sl, None] - k[None, :]  # x index for tap k of each output
        coef = h_pad[phase[sl, None] + k[None, :] * up]
        valid = (idx >= 0) & (idx < n)
        vals = np.where(valid, x[np.clip(idx, 0, n - 1)], 0.0)
        out[sl] = (vals * coef).sum(axis=1)
    return out.astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write 16-bit PCM WAV atomically (temporary file + rename); clips to [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_valid_wav(path: str | Path, *, rate: int = SAMPLE_RATE) -> float | None:
    """Duration in seconds of a readable mono WAV at ``rate`` with frames, else ``None``
    (used by incremental builds to decide what to redo)."""
    try:
        info = sf.info(str(path))
    except Exception:
        return None
    if info.samplerate != rate or info.channels != 1 or info.frames <= 0:
        return None
    return info.frames / info.samplerate

"""Decode uploaded audio bytes into float32 mono 16 kHz samples, or refuse with a reason.

Any container libsndfile reads from memory works (WAV, FLAC, OGG/Vorbis/Opus, MP3 with
libsndfile >= 1.1). Truncated files are refused rather than silently shortened: WAV data chunks
are checked against their declared size, other formats against the frame count in the header.
"""

from __future__ import annotations

import io
import math
import struct
from fractions import Fraction

import numpy as np
import soundfile as sf

from steermoe.data.audio import resample
from steermoe.serve.errors import bad_request

SAMPLE_RATE = 16_000
# Below 4 kHz a file cannot carry speech; above 384 kHz it is not a real recording.
MIN_RATE, MAX_RATE = 4_000, 384_000
# Shorter clips carry no speech (the platform's data checks use the same floor).
MIN_AUDIO_S = 0.1
# Polyphase filters longer than this (odd rate ratios) fall back to linear interpolation.
_MAX_POLYPHASE = 2_000
# Formats a client may name in `input_audio.format`.
FORMATS = frozenset({"wav", "flac", "ogg", "mp3", "opus", "aiff"})
_SF_FORMAT = {
    "wav": "WAV",
    "flac": "FLAC",
    "ogg": "OGG",
    "opus": "OGG",
    "mp3": "MP3",
    "aiff": "AIFF",
}


def decode_audio(
    data: bytes,
    *,
    max_s: float,
    min_s: float = MIN_AUDIO_S,
    fmt: str | None = None,
    param: str = "file",
) -> np.ndarray:
    """Bytes of an audio file -> float32 mono samples at 16 kHz.

    Args:
        data: the whole file.
        max_s: longest accepted clip in seconds (checked on the header before decoding).
        min_s: shortest accepted clip in seconds.
        fmt: optional format hint (``wav``, ``mp3``...), used when detection fails.
        param: request field named in error messages.

    Raises:
        APIError: 400 for empty, undecodable, truncated, NaN, too short/long or absurd-rate audio.
    """
    if not data:
        raise bad_request("audio is empty (0 bytes)", param=param, code="invalid_audio")
    _check_riff(data, param)
    info, kwargs = _open(data, fmt, param)
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise bad_request(
            f"unsupported sample rate {info.samplerate} Hz (accepted {MIN_RATE}-{MAX_RATE})",
            param=param,
            code="invalid_audio",
        )
    if info.frames <= 0:
        raise bad_request("audio has no samples", param=param, code="invalid_audio")
    duration = info.frames / info.samplerate
    if duration > max_s:
        raise bad_request(
            f"audio is {duration:.2f} s long; the limit is {max_s:g} s",
            param=param,
            code="audio_too_long",
        )
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True, **kwargs)
    except Exception:  # libsndfile raises several types for corrupt data
        raise bad_request("audio data is corrupt", param=param, code="invalid_audio") from None
    if wave.shape[0] == 0:
        raise bad_request("audio has no samples", param=param, code="invalid_audio")
    if info.frames > 0 and wave.shape[0] < info.frames:
        raise bad_request(
            f"audio is truncated: header declares {info.frames} frames, found {wave.shape[0]}",
            param=param,
            code="invalid_audio",
        )
    if wave.shape[0] / rate > max_s:
        raise bad_request(
            f"audio is {wave.shape[0] / rate:.2f} s long; the limit is {max_s:g} s",
            param=param,
            code="audio_too_long",
        )
    if wave.shape[0] / rate < min_s:
        raise bad_request(
            f"audio is {wave.shape[0] / rate:.3f} s long; the minimum is {min_s:g} s",
            param=param,
            code="audio_too_short",
        )
    if not np.isfinite(wave).all():
        raise bad_request(
            "audio contains NaN or infinite samples", param=param, code="invalid_audio"
        )
    mono = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    return to_16k(mono, int(rate))


def to_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    """Resample a mono wave to 16 kHz (polyphase; linear interpolation for odd ratios)."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(wave, dtype=np.float32)
    ratio = Fraction(SAMPLE_RATE, rate)
    if max(ratio.numerator, ratio.denominator) <= _MAX_POLYPHASE:
        return resample(wave, rate, SAMPLE_RATE).astype(np.float32, copy=False)
    n_out = math.ceil(len(wave) * SAMPLE_RATE / rate)
    t = np.arange(n_out) * (rate / SAMPLE_RATE)
    return np.interp(t, np.arange(len(wave)), wave).astype(np.float32)


def _open(data: bytes, fmt: str | None, param: str) -> tuple[_Info, dict]:
    """Header of the file (auto-detected, else with the format hint) and the read kwargs."""
    attempts: list[dict] = [{}]
    if fmt and _SF_FORMAT.get(fmt):
        attempts.append({"format": _SF_FORMAT[fmt]})
    for kwargs in attempts:
        try:
            with sf.SoundFile(io.BytesIO(data), **kwargs) as f:
                return _Info(f.samplerate, f.frames, f.channels), kwargs
        except Exception:  # not this format; try the next
            continue
    hint = f" as {fmt}" if fmt else ""
    raise bad_request(
        f"audio could not be decoded{hint} (supported: wav, flac, ogg, mp3)",
        param=param,
        code="invalid_audio",
    )


class _Info:
    """The three header fields we use (``sf.info`` needs a file name)."""

    def __init__(self, samplerate: int, frames: int, channels: int) -> None:
        self.samplerate = samplerate
        self.frames = frames
        self.channels = channels


def _check_riff(data: bytes, param: str) -> None:
    """Refuse a RIFF/WAVE file whose ``data`` chunk is shorter than it declares.

    libsndfile silently shortens such files; a client that sent half a file should know.
    Streaming writers put 0 or 0xFFFFFFFF in the size field: those are accepted.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            available = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and size > available:
                raise bad_request(
                    f"WAV file is truncated: data chunk declares {size} bytes, found {available}",
                    param=param,
                    code="invalid_audio",
                )
            return
        pos += 8 + size + (size & 1)

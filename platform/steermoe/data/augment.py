"""Training-time audio augmentation: each pass over the data hears every clip differently.

A synthetic suite has few voices (about 54 in the reference training split), and a clip
rendered once sounds the same on every epoch, so a model fits the training voices long before
it hears new ones. ``data.augment`` redraws, per clip and per batch, a speed factor (tempo and
pitch together, by resampling, as in Kaldi's speed perturbation), room reverberation, a level
change, background noise and a band limit (the channel of a telephone or an 8 kHz recording).
The rendered clips are clean full-band studio speech; real recordings are none of these. The
draws come from ``(seed, rank, batch number)``, so a resumed run
augments its batches exactly as an uninterrupted one would. Validation and evaluation never
augment.
"""

from __future__ import annotations

import math

import numpy as np

from steermoe.data.audio import SAMPLE_RATE


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus white or brown-ish noise (even odds) at ``snr_db`` below its power,
    peak-limited to 0.99."""
    audio = np.asarray(audio, dtype=np.float64)
    noise = rng.standard_normal(len(audio))
    if rng.random() < 0.5:  # brown-ish noise: integrate, remove drift
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(401) / 401, mode="same")
    signal_power = np.mean(audio**2)
    noise *= math.sqrt(signal_power / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    return _limit_peak(audio + noise)


def _limit_peak(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """``audio`` scaled down so its largest magnitude is at most ``peak`` (else unchanged)."""
    top = np.abs(audio).max() if audio.size else 0.0
    return audio * (peak / top) if top > peak else audio


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` about ``factor`` times as fast (shorter and higher for ``factor`` > 1).

    Band-limited resampling in the frequency domain: the spectrum is cut (or zero-padded) to
    the new length, so nothing aliases. Both transform lengths are 7-smooth numbers (the clip
    is zero-padded and the padding trimmed after): a length with a large prime factor would
    take ten times as long. The pair is picked to keep the factor within 0.2 %.
    """
    n = len(audio)
    if n == 0 or factor == 1.0:
        return np.asarray(audio, dtype=np.float32)
    n_fft, m_fft = _fft_lengths(n, factor)
    spectrum = np.fft.rfft(np.asarray(audio, dtype=np.float64), n_fft)
    keep = m_fft // 2 + 1
    if keep <= len(spectrum):
        spectrum = spectrum[:keep]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(keep - len(spectrum), spectrum.dtype)])
    out = np.fft.irfft(spectrum, m_fft) * (m_fft / n_fft)
    return out[: max(1, round(n * m_fft / n_fft))].astype(np.float32)


def _smooth_numbers(limit: int = 1 << 23) -> np.ndarray:
    """Every number up to ``limit`` with no prime factor above 7, sorted."""
    values = [1]
    for p in (2, 3, 5, 7):
        grown = []
        for v in values:
            while v <= limit:
                grown.append(v)
                v *= p
        values = grown
    return np.array(sorted(values), dtype=np.int64)


_SMOOTH = _smooth_numbers()


def _fft_lengths(n: int, factor: float, candidates: int = 24) -> tuple[int, int]:
    """7-smooth transform lengths (n_fft >= n, m_fft) with n_fft / m_fft closest to
    ``factor``, among the first ``candidates`` smooth lengths from ``n`` up."""
    first = int(np.searchsorted(_SMOOTH, n))
    n_ffts = _SMOOTH[first : first + candidates]
    targets = n_ffts / factor
    at = np.clip(np.searchsorted(_SMOOTH, targets), 1, len(_SMOOTH) - 1)
    below, above = _SMOOTH[at - 1], _SMOOTH[at]
    m_ffts = np.where(targets - below < above - targets, below, above)
    best = int(np.argmin(np.abs(n_ffts / m_ffts / factor - 1)))
    return int(n_ffts[best]), max(2, int(m_ffts[best]))


def low_pass(audio: np.ndarray, cutoff_hz: float, width_hz: float = 300.0) -> np.ndarray:
    """``audio`` with everything above ``cutoff_hz`` removed: a raised-cosine roll-off over
    ``width_hz`` below the cutoff (a brick wall would ring), zero-phase, same length."""
    n = len(audio)
    if n == 0 or cutoff_hz >= SAMPLE_RATE / 2:
        return np.asarray(audio, dtype=np.float32)
    n_fft = int(_SMOOTH[np.searchsorted(_SMOOTH, n)])
    spectrum = np.fft.rfft(np.asarray(audio, dtype=np.float64), n_fft)
    hz = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    edge = np.clip((cutoff_hz - hz) / width_hz, 0.0, 1.0)  # 1 in the pass band, 0 above
    spectrum *= 0.5 - 0.5 * np.cos(np.pi * edge)
    return np.fft.irfft(spectrum, n_fft)[:n].astype(np.float32)


def reverberate(
    audio: np.ndarray, rt60_s: float, rng: np.random.Generator, drr_db: tuple = (0.0, 10.0)
) -> np.ndarray:
    """``audio`` as heard in a room whose reverberation decays 60 dB in ``rt60_s`` seconds.

    The impulse response is the direct path plus exponentially decaying noise (a diffuse
    tail), its energy below the direct sound's by a direct-to-reverberant ratio drawn from
    ``drr_db``. The result keeps the clip's length and loudness (RMS), peak-limited to 0.99.
    """
    x = np.asarray(audio, dtype=np.float64)
    if len(x) == 0:
        return x.astype(np.float32)
    length = max(2, int(rt60_s * SAMPLE_RATE))
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-3 * math.log(10) * t / rt60_s)
    tail[0] = 0.0
    ratio = 10 ** (-rng.uniform(*drr_db) / 10)  # tail energy / direct energy
    response = tail * math.sqrt(ratio / (np.sum(tail**2) + 1e-12))
    response[0] = 1.0
    n_fft = int(_SMOOTH[np.searchsorted(_SMOOTH, len(x) + length - 1)])
    wet = np.fft.irfft(np.fft.rfft(x, n_fft) * np.fft.rfft(response, n_fft), n_fft)[: len(x)]
    wet *= math.sqrt(np.mean(x**2) / (np.mean(wet**2) + 1e-12))
    return _limit_peak(wet).astype(np.float32)


def augment_clip(audio: np.ndarray, spec, rng: np.random.Generator, max_s: float) -> np.ndarray:
    """One random view of a clip under ``spec`` (an ``AugmentConfig``); never longer than
    ``max_s`` seconds (a slowed clip that would be keeps its speed).

    The speaker first (speed), then the room (reverberation), the level, the background
    noise, and last the channel (band limit). A step that is off draws no random number, so
    the draws of the others do not depend on it.
    """
    out = np.asarray(audio, dtype=np.float32)
    if spec.speed is not None:
        factor = rng.uniform(*spec.speed)
        if len(out) / factor <= max_s * SAMPLE_RATE:
            out = change_speed(out, factor)
    if spec.reverb_prob > 0 and rng.random() < spec.reverb_prob:
        out = reverberate(out, rng.uniform(*spec.rt60_s), rng)
    if spec.gain_db is not None:
        out = _limit_peak(out * 10 ** (rng.uniform(*spec.gain_db) / 20))
    if spec.noise_prob > 0 and rng.random() < spec.noise_prob:
        out = add_noise(out, rng.uniform(*spec.snr_db), rng)
    if spec.lowpass_prob > 0 and rng.random() < spec.lowpass_prob:
        out = low_pass(out, rng.uniform(*spec.lowpass_hz))
    return np.asarray(out, dtype=np.float32)


def augment_batch(
    audios: list[np.ndarray], spec, *, seed: int, rank: int, batch: int, max_s: float
) -> list[np.ndarray]:
    """Augment every clip of training batch number ``batch`` of ``rank``; the same arguments
    give the same result (resumed runs match uninterrupted ones)."""
    rng = np.random.default_rng([seed, rank, batch])
    return [augment_clip(a, spec, rng, max_s) for a in audios]

"""Every bad-audio case is rejected with the example id; other rates are resampled."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from steermoe.data.audio import AudioError, load_audio, resample_poly


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_16k_wav_loads_unchanged(tmp_path):
    x = _tone(1.0, 16000)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "a.wav", example_id="a")
    assert y.dtype == np.float32 and y.shape == (16000,)
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_8khz_stereo_flac_is_resampled_and_downmixed(tmp_path):
    x = _tone(0.5, 8000)
    sf.write(tmp_path / "a.flac", np.stack([x, x], axis=1), 8000)
    y = load_audio(tmp_path / "a.flac", example_id="fsdd-1")
    assert y.shape == (8000,)  # 0.5 s at 16 kHz
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 440) < 3  # same pitch after resampling


def test_resampler_matches_scipy_when_available():
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(0).standard_normal(4410)
    for up, down in [(2, 1), (320, 441), (160, 147)]:
        np.testing.assert_allclose(
            resample_poly(x, up, down), signal.resample_poly(x, up, down), atol=1e-5
        )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not audio\n" * 20), "not a readable audio file"),
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40)), "not a readable"),
        (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "empty audio"),
        (
            lambda p: sf.write(
                p, np.array([0.1, np.nan] * 800, dtype=np.float32), 16000, subtype="FLOAT"
            ),
            "NaN",
        ),
        (
            lambda p: sf.write(
                p, np.array([0.1, np.inf] * 800, dtype=np.float32), 16000, subtype="FLOAT"
            ),
            "NaN or infinite",
        ),
        (lambda p: sf.write(p, _tone(31.0, 16000), 16000), "too long"),
        (lambda p: sf.write(p, _tone(0.05, 16000), 16000), "too short"),
        (lambda p: sf.write(p, _tone(1.0, 2000), 2000), "below 4000 Hz"),
    ],
)
def test_bad_audio_names_the_example(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        load_audio(path, example_id="utt-42", min_s=0.1, max_s=30.0)
    assert "'utt-42'" in str(err.value)
    assert reason in str(err.value)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav", example_id="x")
    sf.write(tmp_path / "t.flac", _tone(2.0, 16000), 16000)
    data = (tmp_path / "t.flac").read_bytes()
    (tmp_path / "t.flac").write_bytes(data[: len(data) // 3])  # corrupt: cut mid-stream
    with pytest.raises(AudioError, match="'cut'"):
        load_audio(tmp_path / "t.flac", example_id="cut")

"""Training-time augmentation (data.augment): speed, level and noise, redrawn per batch,
reproducible on resume, never applied outside training."""

from __future__ import annotations

import numpy as np
import pytest

from steermoe.config import ConfigError, load_config
from steermoe.data import batches as train_data
from steermoe.data.audio import SAMPLE_RATE
from steermoe.data.augment import (
    add_noise,
    augment_batch,
    augment_clip,
    change_speed,
    low_pass,
    reverberate,
)
from steermoe.data.batches import TrainStream
from steermoe.data.examples import Example

TINY = ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"]


def tone(freq=440.0, seconds=1.0):
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio):
    spectrum = np.abs(np.fft.rfft(audio))
    return np.argmax(spectrum) * SAMPLE_RATE / len(audio)


def test_speed_change_shortens_and_raises_pitch_together():
    fast = change_speed(tone(440.0, 2.0), 1.1)
    slow = change_speed(tone(440.0, 2.0), 0.9)
    assert len(fast) == pytest.approx(2 * SAMPLE_RATE / 1.1, rel=0.002)
    assert len(slow) == pytest.approx(2 * SAMPLE_RATE / 0.9, rel=0.002)
    assert peak_hz(fast) == pytest.approx(484.0, abs=2.0)
    assert peak_hz(slow) == pytest.approx(396.0, abs=2.0)


def test_noise_lands_at_the_requested_snr():
    clean = tone(300.0, 2.0).astype(np.float64) * 0.1  # quiet: the peak limit stays idle
    for snr in (10.0, 25.0):
        noisy = add_noise(clean, snr, np.random.default_rng(1))
        measured = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
        assert measured == pytest.approx(snr, abs=0.1)


def test_augmentation_is_reproducible_per_batch_and_differs_between_batches():
    spec = load_config(
        None, ["data.augment={speed: [0.9, 1.1], gain_db: [-6, 6], noise_prob: 0.5}"]
    ).data.augment
    clips = [tone(200.0 + 100 * i, 1.0) for i in range(4)]
    a = augment_batch(clips, spec, seed=0, rank=0, batch=7, max_s=30.0)
    b = augment_batch(clips, spec, seed=0, rank=0, batch=7, max_s=30.0)
    c = augment_batch(clips, spec, seed=0, rank=0, batch=8, max_s=30.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.allclose(x, y) for x, y in zip(a, c))
    assert all(x.dtype == np.float32 and np.abs(x).max() <= 0.99 + 1e-6 for x in a)
    assert {len(x) for x in a} != {SAMPLE_RATE}  # the speeds changed the lengths


def test_a_clip_is_never_slowed_past_the_length_limit():
    spec = load_config(None, ["data.augment={speed: [0.5, 0.6]}"]).data.augment
    clip = tone(440.0, 2.0)
    rng = np.random.default_rng(0)
    assert len(augment_clip(clip, spec, rng, max_s=3.0)) == len(clip)
    assert len(augment_clip(clip, spec, rng, max_s=30.0)) > 3 * SAMPLE_RATE


def test_augment_config_errors_name_the_key_and_default_is_off():
    assert not load_config(None, []).data.augment.enabled
    with pytest.raises(ConfigError, match=r"data.augment.speed: low 1.1 is above high 0.9"):
        load_config(None, ["data.augment={speed: [1.1, 0.9]}"])
    with pytest.raises(ConfigError, match=r"data.augment.speed: must lie within"):
        load_config(None, ["data.augment={speed: [0.2, 1.0]}"])
    with pytest.raises(ConfigError, match=r"data.augment.noise_prob"):
        load_config(None, ["data.augment.noise_prob=1.5"])
    with pytest.raises(ConfigError, match=r"data.augment.pitch"):
        load_config(None, ["data.augment.pitch=[0.9, 1.1]"])


def test_stream_augments_training_batches_and_a_resumed_stream_matches(monkeypatch):
    clips = {f"e{i}": tone(200.0 + 50 * i, 1.0 + 0.25 * i) for i in range(8)}

    def fake_load(examples, data, max_s=None):
        return train_data.Loaded(examples, [clips[ex.id] for ex in examples], [])

    monkeypatch.setattr(train_data, "load_batch", fake_load)
    examples = [
        Example(
            id=f"e{i}",
            audio_path=f"/x/{i}.wav",
            duration_s=1.0 + 0.25 * i,
            task="asr",
            instruction="",
            target="t",
        )
        for i in range(8)
    ]
    cfg = load_config(None, [*TINY, "data.augment={speed: [0.9, 1.1], noise_prob: 1.0}"])

    def stream():
        return TrainStream(examples, batch_size=2, rank=0, world_size=1, seed=0, data=cfg.data)

    a = stream()
    it = iter(a)
    first = next(it)
    assert not any(
        len(x) == len(clips[ex.id]) and np.allclose(x, clips[ex.id])
        for ex, x in zip(first.examples, first.audios)
    )
    state = a.state_dict()
    after = next(it)
    b = stream()
    b.load_state_dict(state)
    resumed = next(iter(b))
    assert [ex.id for ex in resumed.examples] == [ex.id for ex in after.examples]
    assert all(np.array_equal(x, y) for x, y in zip(resumed.audios, after.audios))


def test_speed_change_stays_within_a_fifth_of_a_percent_of_the_factor():
    for n in (1_000, 16_001, 80_037, 240_011):  # lengths with large prime factors too
        for factor in (0.88, 0.95, 1.03, 1.12):
            out = change_speed(np.ones(n, dtype=np.float32), factor)
            assert len(out) == pytest.approx(n / factor, rel=0.002)


def band_energy(audio, low_hz, high_hz):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    hz = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    return spectrum[(hz >= low_hz) & (hz < high_hz)].sum()


def test_low_pass_removes_the_band_above_the_cutoff_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    cut = low_pass(noise, 4000.0)
    assert len(cut) == len(noise) and cut.dtype == np.float32
    assert band_energy(cut, 4000, 8000) < 1e-6 * band_energy(noise, 4000, 8000)
    assert band_energy(cut, 100, 3600) == pytest.approx(band_energy(noise, 100, 3600), rel=0.01)


def test_reverberation_smears_a_click_over_the_room_decay_time():
    click = np.zeros(SAMPLE_RATE, dtype=np.float32)
    click[1000] = 0.5
    wet = reverberate(click, 0.5, np.random.default_rng(0))
    assert len(wet) == len(click) and np.abs(wet).max() <= 0.99 + 1e-6
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(click**2)), rel=1e-3)
    energy = wet.astype(np.float64) ** 2
    assert energy[:1000].sum() < 1e-20  # causal: nothing before the click (FFT round-off)
    early = energy[1001 : 1001 + SAMPLE_RATE // 20].sum()  # the first 50 ms of the tail
    late = energy[1001 + SAMPLE_RATE // 4 : 1001 + SAMPLE_RATE // 4 + SAMPLE_RATE // 20].sum()
    # 250 ms later the tail has decayed by about 30 dB (60 dB per 0.5 s).
    assert 10 * np.log10(early / late) == pytest.approx(30.0, abs=6.0)


def test_new_steps_off_leave_the_earlier_draws_unchanged_and_on_change_the_clips():
    base = "data.augment={speed: [0.9, 1.1], gain_db: [-6, 6], noise_prob: 0.5"
    plain = load_config(None, [base + "}"]).data.augment
    off = load_config(None, [base + ", reverb_prob: 0, lowpass_prob: 0}"]).data.augment
    on = load_config(None, [base + ", reverb_prob: 1, lowpass_prob: 1}"]).data.augment
    clips = [tone(200.0 + 100 * i, 1.0) for i in range(3)]
    a = augment_batch(clips, plain, seed=0, rank=0, batch=3, max_s=30.0)
    b = augment_batch(clips, off, seed=0, rank=0, batch=3, max_s=30.0)
    c = augment_batch(clips, on, seed=0, rank=0, batch=3, max_s=30.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not any(len(x) == len(y) and np.allclose(x, y) for x, y in zip(a, c))
    assert (
        on.enabled and load_config(None, ["data.augment={lowpass_prob: 0.2}"]).data.augment.enabled
    )


@pytest.mark.parametrize(
    "setting",
    [
        "{rt60_s: [0.9, 0.3]}",
        "{rt60_s: [0.1, 5.0]}",
        "{lowpass_hz: [300, 4000]}",
        "{reverb_prob: 2}",
    ],
)
def test_bad_room_or_band_settings_are_named(setting):
    key = setting.strip("{}").split(":")[0]
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"data.augment={setting}"])

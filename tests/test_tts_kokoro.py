"""Kokoro voices: who they are, what they are told to say, and whether Whisper hears it."""

from __future__ import annotations

import numpy as np
import pytest

from steermoe import backbones, env
from steermoe.synth import tts
from steermoe.synth.build_config import load_build_config

SENTENCES = (
    "When I left you, I was but the pupil.",
    "You can reach me on six eight four five two one after six.",
    "Please set a timer for twenty minutes and remind me to call my sister.",
)


def _kokoro(voice_id: str) -> tts.Voice:
    return next(v for v in tts.all_voices() if v.id == voice_id)


def test_kokoro_voices_train_by_default_and_blends_keep_one_gender():
    voices = [v for v in tts.all_voices() if v.engine == "kokoro"]
    ids = [v.id for v in voices]
    assert len(ids) == len(set(ids)) == 13
    splits = tts.split_voices(tts.all_voices())
    assert {v.id for v in splits["train"]} >= set(ids)  # like Piper: validation/test unchanged
    for v in voices:
        speakers = v.name.split("+")
        assert {tts.KOKORO_SPEAKERS[s] for s in speakers} == {v.gender}, v.id
    assert {v.gender for v in voices} == {"male", "female"}
    # Off unless a build asks for it: existing builds keep their voices and audio.
    assert load_build_config(None, []).engines.kokoro == 0


def test_kokoro_phonemes_keep_clause_punctuation_and_read_numbers_whole():
    phonemes = tts.kokoro_phonemes("Set a timer for 6,000 seconds, then call Anna. Okay?")
    clauses = [c.strip() for c in phonemes.replace("?", ".").split(".") if c.strip()]
    assert len(clauses) == 2 and phonemes.endswith("?")
    first = clauses[0].split(",")
    assert len(first) == 2  # the comma after "seconds", none inside "6,000"
    assert "θˈWzənd" in first[0]  # "thousand": the number read as one, its diphthong as W
    assert "tˈImɚ" in first[0]  # "timer": aɪ as Kokoro's single symbol I


@pytest.mark.slow  # loads the 88 MB model and synthesises speech: ~20 s on 2 cores
def test_kokoro_speech_is_deterministic_and_whisper_understands_it(tmp_path, monkeypatch):
    import jiwer
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from whisper_normalizer.english import EnglishTextNormalizer

    whisper = backbones.resolve("whisper-tiny.en")  # prepared by `make test`, offline
    monkeypatch.setenv("STEERMOE_CACHE", str(tmp_path))  # the model assembles from scratch
    voices = ["kokoro:jf_gongitsune", "kokoro:jf_alpha+jf_nezumi", "kokoro:jm_kumo-low"]
    audio = [
        tts.synthesize(_kokoro(v), s, speed=1.05, pitch=0.97) for v, s in zip(voices, SENTENCES)
    ]
    assert list(env.cache_dir().glob("tts/kokoro-*.onnx"))
    again = tts.synthesize(_kokoro(voices[0]), SENTENCES[0], speed=1.05, pitch=0.97)
    np.testing.assert_array_equal(again, audio[0])
    for clip, sentence in zip(audio, SENTENCES):
        assert clip.dtype == np.float32
        seconds = len(clip) / 16000
        words = len(sentence.split())
        assert 0.15 * words < seconds < 0.6 * words + 1.0, (sentence, seconds)

    model = WhisperForConditionalGeneration.from_pretrained(whisper).eval()
    processor = WhisperProcessor.from_pretrained(whisper)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        tokens = model.generate(features, num_beams=1, do_sample=False)
    heard = processor.batch_decode(tokens, skip_special_tokens=True)
    norm = EnglishTextNormalizer()
    wer = jiwer.wer([norm(s) for s in SENTENCES], [norm(h) for h in heard])
    assert wer <= 0.25, (wer, heard)

"""Sampling in the shared ``generate()``: the draw against a naive reference, seeds, greedy."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from steermoe.model.core import Decoding, _sample


def naive_nucleus(logits: list[float], temperature: float, top_p: float) -> dict[int, float]:
    """Token -> probability: softmax(logits / T), most likely first, kept while the mass
    before a token is below top_p, renormalised."""
    weights = [math.exp(x / temperature) for x in logits]
    probs = [w / sum(weights) for w in weights]
    kept, mass = {}, 0.0
    for token in sorted(range(len(probs)), key=lambda t: -probs[t]):
        if mass >= top_p:
            break
        kept[token] = probs[token]
        mass += probs[token]
    return {t: p / sum(kept.values()) for t, p in kept.items()}


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.5, 1.0), (1.5, 0.8)])
def test_sample_matches_the_naive_nucleus(temperature, top_p):
    logits = [2.0, 0.5, 1.0, -1.0, 0.0, 1.5]
    want = naive_nucleus(logits, temperature, top_p)
    opts = Decoding(temperature=temperature, top_p=top_p, seed=0)
    gen = opts.generator()
    draws = 12_000
    counts = Counter(_sample(torch.tensor(logits), opts, gen) for _ in range(draws))
    assert set(counts) <= set(want)  # nothing outside the nucleus
    for token, p in want.items():
        assert counts[token] / draws == pytest.approx(p, abs=0.02), (token, counts)


def test_tiny_top_p_or_temperature_is_greedy():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    for opts in (Decoding(temperature=1.0, top_p=1e-6, seed=1), Decoding(temperature=1e-4)):
        gen = opts.generator()
        assert {_sample(logits, opts, gen) for _ in range(200)} == {1}


def test_decoding_refuses_out_of_range_values():
    for bad in ({"temperature": -0.1}, {"temperature": math.nan}, {"top_p": 0}, {"top_p": 1.1}):
        with pytest.raises(ValueError):
            Decoding(**bad)
    with pytest.raises(ValueError):
        Decoding(stop=("",))
    assert Decoding().generator() is None  # greedy draws nothing


@pytest.fixture(scope="module")
def model(loud_tiny_model):
    return loud_tiny_model


def clips(*seconds):
    rng = np.random.default_rng(4)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]


def test_generate_samples_reproducibly_and_batch_invariantly(model):
    audios, prompts = clips(0.8, 1.6, 1.2), ["Transcribe the audio.", "What?", "x"]
    batch = model.collate(audios, prompts)
    greedy = model.generate(batch, max_new_tokens=10)
    assert model.generate(batch, max_new_tokens=10, decoding=Decoding()) == greedy
    nucleus = Decoding(temperature=1.0, top_p=1e-6, seed=5)
    assert model.generate(batch, max_new_tokens=10, decoding=nucleus).token_ids == (
        greedy.token_ids
    )
    opts = [Decoding(temperature=1.2, seed=s) for s in (1, 2, 3)]
    sampled = model.generate(batch, max_new_tokens=10, decoding=opts)
    assert sampled.token_ids != greedy.token_ids
    assert model.generate(batch, max_new_tokens=10, decoding=opts) == sampled
    for i in range(3):  # each example alone, with its own seed, decodes the same tokens
        alone = model.generate(
            model.collate([audios[i]], [prompts[i]]), max_new_tokens=10, decoding=opts[i]
        )
        assert alone.token_ids[0] == sampled.token_ids[i]
    runs = {
        tuple(model.generate(batch, max_new_tokens=10, decoding=Decoding(1.2, seed=s)).token_ids[0])
        for s in range(5)
    }
    assert len(runs) > 2  # different seeds, different samples


def test_generate_finish_reasons_and_stop_strings(model):
    batch = model.collate(clips(1.0), ["Transcribe the audio."])
    opts = Decoding(temperature=1.0, seed=8)
    free = model.generate(batch, max_new_tokens=12, decoding=opts)
    assert free.finish_reasons == ["length"] and len(free.token_ids[0]) == 12
    text = model.tokenizer.decode(free.token_ids[0], skip_special_tokens=True)
    stop = text[3:5]
    cut = model.generate(
        batch, max_new_tokens=12, decoding=Decoding(temperature=1.0, seed=8, stop=(stop,))
    )
    assert cut.finish_reasons == ["stop"]
    assert cut.texts == [text[: text.index(stop)].strip()]
    assert cut.token_ids[0] == free.token_ids[0][: len(cut.token_ids[0])]

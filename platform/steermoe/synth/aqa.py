"""Spoken audio question answering items: about what is said and about the sound itself.

Content items speak a carrier sentence that mentions one colour, number, name, animal, city,
weekday or fruit and ask about it. Sound items are generated tones (how many beeps, rising or
falling pitch, which of two tones is louder or higher). Voice items ask whether the speaker is
male or female. Every item comes in three forms (``kind``): ``open`` (short answer),
``yes_no`` and ``multiple_choice`` (``choices`` listed in the instruction too).
Carrier templates are split-disjoint (see :func:`steermoe.synth.text.assign_splits`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluators.audio_qa import NUMBER_WORDS, TENS_WORDS
from steermoe.data.audio import SAMPLE_RATE
from steermoe.synth.text import CITIES, DAYS, FIRST_NAMES

SLOTS: dict[str, tuple[str, ...]] = {
    "colour": (
        "red",
        "blue",
        "green",
        "yellow",
        "purple",
        "orange",
        "black",
        "white",
        "pink",
        "brown",
        "grey",
    ),
    "number": (*NUMBER_WORDS[2:13], TENS_WORDS[0]),
    "name": tuple(FIRST_NAMES[:40]),
    "animal": (
        "dog",
        "cat",
        "horse",
        "rabbit",
        "fox",
        "owl",
        "goat",
        "duck",
        "tiger",
        "elephant",
        "dolphin",
        "parrot",
    ),
    "city": tuple(CITIES[:30]),
    "weekday": DAYS,
    "fruit": (
        "apple",
        "banana",
        "cherry",
        "lemon",
        "mango",
        "peach",
        "pear",
        "plum",
        "orange",
        "grape",
    ),
}
CARRIERS: dict[str, tuple[str, ...]] = {
    "colour": (
        "I painted the garden fence {x} last weekend.",
        "She wore a {x} coat to the interview on Monday.",
        "The car parked outside the bakery is {x}.",
        "We decided to paint the kitchen walls {x} this spring.",
        "His new umbrella is bright {x} and very large.",
        "The front door of the old house was painted {x}.",
    ),
    "number": (
        "There were {x} boats waiting in the harbour this morning.",
        "I bought {x} tickets for the show tonight.",
        "The recipe needs {x} eggs and a cup of sugar.",
        "We have {x} chairs left in the meeting room.",
        "My neighbour owns {x} bicycles and no car.",
        "The class planted {x} trees behind the school.",
    ),
    "name": (
        "Yesterday {x} fixed the broken window in the hall.",
        "The parcel on the table is addressed to {x}.",
        "I think {x} will be late for dinner again.",
        "Our new neighbour is called {x}, and she plays the piano.",
        "Please give these keys to {x} before you leave.",
        "The prize for the best essay went to {x}.",
    ),
    "animal": (
        "A {x} was sleeping under the bench in the park.",
        "My grandmother has always wanted to keep a {x}.",
        "The children watched a {x} near the river for an hour.",
        "There is a picture of a {x} on the cover of the book.",
        "We heard that a {x} escaped from the farm last night.",
        "The museum has a wooden statue of a {x} in the entrance.",
    ),
    "city": (
        "Next summer we are flying to {x} for a family wedding.",
        "My cousin has lived in {x} for almost ten years.",
        "The conference this year takes place in {x}.",
        "The train was delayed for an hour just outside {x}.",
        "She sent me a postcard from {x} last month.",
        "They opened a new office in {x} in the autumn.",
    ),
    "weekday": (
        "The football match was moved to {x} afternoon.",
        "The market in the square only opens on {x}.",
        "We always clean the house together on {x}.",
        "My dentist appointment is on {x} at ten.",
        "The library stays open late every {x}.",
        "The new film comes out on {x} evening.",
    ),
    "fruit": (
        "I put a {x} in your lunch box this morning.",
        "The cake on the counter tastes strongly of {x}.",
        "He planted a {x} tree at the end of the garden.",
        "She always orders {x} juice with her breakfast.",
        "The shop had run out of every {x} by noon.",
        "There is one {x} left in the bowl on the table.",
    ),
}
QUESTIONS: dict[str, tuple[str, str, str]] = {  # open, yes/no (with {y}), multiple choice
    "colour": (
        "What colour is mentioned?",
        "Is the colour {y} mentioned?",
        "Which colour is mentioned?",
    ),
    "number": (
        "What number is mentioned?",
        "Does the speaker mention the number {y}?",
        "Which number is mentioned?",
    ),
    "name": ("What name is mentioned?", "Is the name {y} mentioned?", "Which name is mentioned?"),
    "animal": ("Which animal is mentioned?", "Is a {y} mentioned?", "Which animal is mentioned?"),
    "city": (
        "Which city is mentioned?",
        "Does the speaker mention {y}?",
        "Which city is mentioned?",
    ),
    "weekday": (
        "Which day of the week is mentioned?",
        "Is {y} mentioned?",
        "Which day is mentioned?",
    ),
    "fruit": ("Which fruit is mentioned?", "Is a {y} mentioned?", "Which fruit is mentioned?"),
}
# Beep counts, as spoken answers.
COUNT_WORDS = NUMBER_WORDS[1:7]


@dataclass(frozen=True)
class AqaItem:
    """One question: what to speak (or which tones to make), and the expected answer."""

    family: str  # content | beeps | sweep | louder | higher | gender
    key: str  # split key (carrier template id, or the family for generated sounds)
    question: str
    answer: str
    kind: str
    choices: tuple[str, ...] | None = None
    text: str | None = None  # spoken carrier sentence (None for tone items)
    tones: dict[str, Any] = field(default_factory=dict)


def render_question(question: str, choices: tuple[str, ...] | None) -> str:
    """Instruction text: the question plus, for multiple choice, the lettered-free options."""
    if not choices:
        return question
    return f"{question} Choose one of: {', '.join(choices)}."


def _form(rng: random.Random, forms: tuple[float, float, float]) -> str:
    return rng.choices(("open", "yes_no", "multiple_choice"), weights=forms)[0]


def content_item(
    slot: str, carrier_id: int, rng: random.Random, forms: tuple[float, float, float]
) -> AqaItem:
    """A carrier sentence mentioning one value of ``slot`` and a question about it."""
    values = SLOTS[slot]
    value = rng.choice(values)
    text = CARRIERS[slot][carrier_id].format(x=value)
    if text[0].islower():
        text = text[0].upper() + text[1:]
    q_open, q_yes_no, q_mc = QUESTIONS[slot]
    kind = _form(rng, forms)
    key = f"content:{slot}:{carrier_id}"
    if kind == "open":
        return AqaItem("content", key, q_open, value, kind, text=text)
    if kind == "yes_no":
        asked = value if rng.random() < 0.5 else rng.choice([v for v in values if v != value])
        answer = "yes" if asked == value else "no"
        return AqaItem("content", key, q_yes_no.format(y=asked), answer, kind, text=text)
    choices = [value, *rng.sample([v for v in values if v != value], 3)]
    rng.shuffle(choices)
    return AqaItem("content", key, q_mc, value, kind, tuple(choices), text=text)


def sound_item(family: str, rng: random.Random, forms: tuple[float, float, float]) -> AqaItem:
    """A generated-tone question of ``family`` (beeps, sweep, louder, higher)."""
    kind = _form(rng, forms)
    freq = rng.uniform(300, 1500)
    if family == "beeps":
        n = rng.randint(1, 6)
        tones = {
            "type": "beeps",
            "n": n,
            "freq": freq,
            "dur": rng.uniform(0.08, 0.3),
            "gap": rng.uniform(0.15, 0.5),
        }
        answer = COUNT_WORDS[n - 1]
        if kind == "open":
            return AqaItem(family, family, "How many beeps are there?", answer, kind, tones=tones)
        if kind == "yes_no":
            asked = n if rng.random() < 0.5 else rng.choice([k for k in range(1, 7) if k != n])
            q = f"Are there exactly {COUNT_WORDS[asked - 1]} beeps?"
            return AqaItem(family, family, q, "yes" if asked == n else "no", kind, tones=tones)
        others = rng.sample([w for w in COUNT_WORDS if w != answer], 3)
        choices = tuple(sorted([answer, *others], key=COUNT_WORDS.index))
        return AqaItem(
            family, family, "How many beeps do you hear?", answer, kind, choices, tones=tones
        )
    if family == "sweep":
        rising = rng.random() < 0.5
        lo, hi = freq, freq * rng.uniform(1.6, 3.0)
        tones = {
            "type": "sweep",
            "start": lo if rising else hi,
            "end": hi if rising else lo,
            "dur": rng.uniform(0.8, 2.0),
        }
        answer = "rising" if rising else "falling"
        if kind == "yes_no":
            up = rng.random() < 0.5
            q = f"Does the pitch of the tone go {'up' if up else 'down'}?"
            return AqaItem(family, family, q, "yes" if up == rising else "no", kind, tones=tones)
        q = "Is the pitch of the tone rising or falling?"
        choices = ("rising", "falling") if kind == "multiple_choice" else None
        return AqaItem(family, family, q, answer, kind, choices, tones=tones)
    if family in ("louder", "higher"):
        first = rng.random() < 0.5
        if family == "louder":
            gains = (1.0, rng.uniform(0.15, 0.35))
            tones = {
                "type": "pair",
                "freqs": (freq, freq),
                "gains": gains if first else gains[::-1],
            }
            adjective = "louder"
        else:
            ratio = rng.uniform(1.5, 2.5)
            tones = {
                "type": "pair",
                "freqs": (freq * ratio, freq) if first else (freq, freq * ratio),
                "gains": (0.7, 0.7),
            }
            adjective = "higher in pitch"
        tones["dur"] = rng.uniform(0.4, 0.9)
        answer = "first" if first else "second"
        if kind == "yes_no":
            asked_first = rng.random() < 0.5
            q = f"Two tones play one after the other. Is the {'first' if asked_first else 'second'} one {adjective}?"
            return AqaItem(
                family, family, q, "yes" if asked_first == first else "no", kind, tones=tones
            )
        q = f"Two tones play one after the other. Which one is {adjective}, the first or the second?"
        choices = ("first", "second") if kind == "multiple_choice" else None
        return AqaItem(family, family, q, answer, kind, choices, tones=tones)
    raise ValueError(f"unknown sound family {family!r}")


def gender_item(
    text: str, key: str, gender: str, rng: random.Random, forms: tuple[float, float, float]
) -> AqaItem:
    """Is the (synthetic) speaker male or female?"""
    kind = _form(rng, forms)
    if kind == "yes_no":
        asked = rng.choice(("male", "female"))
        q = f"Is the speaker {asked}?"
        return AqaItem("gender", key, q, "yes" if asked == gender else "no", kind, text=text)
    q = "Is the speaker male or female?"
    choices = ("male", "female") if kind == "multiple_choice" else None
    return AqaItem("gender", key, q, gender, kind, choices, text=text)


def make_tones(spec: dict[str, Any], rng: random.Random) -> np.ndarray:
    """Render a tone spec at 16 kHz with short fades and random leading/trailing silence."""
    sr = SAMPLE_RATE

    def tone(freq: float, dur: float, gain: float = 0.6) -> np.ndarray:
        t = np.arange(int(dur * sr)) / sr
        y = gain * np.sin(2 * np.pi * freq * t)
        fade = min(len(y) // 4, int(0.01 * sr))
        if fade:
            ramp = np.linspace(0, 1, fade)
            y[:fade] *= ramp
            y[-fade:] *= ramp[::-1]
        return y

    def silence(dur: float) -> np.ndarray:
        return np.zeros(int(dur * sr))

    parts = [silence(rng.uniform(0.2, 0.6))]
    if spec["type"] == "beeps":
        for i in range(spec["n"]):
            parts.append(tone(spec["freq"], spec["dur"]))
            if i < spec["n"] - 1:
                parts.append(silence(spec["gap"]))
    elif spec["type"] == "sweep":
        t = np.arange(int(spec["dur"] * sr)) / sr
        f = spec["start"] * (spec["end"] / spec["start"]) ** (t / spec["dur"])  # exponential
        phase = 2 * np.pi * np.cumsum(f) / sr
        y = 0.6 * np.sin(phase)
        fade = int(0.02 * sr)
        y[:fade] *= np.linspace(0, 1, fade)
        y[-fade:] *= np.linspace(1, 0, fade)
        parts.append(y)
    elif spec["type"] == "pair":
        parts.append(tone(spec["freqs"][0], spec["dur"], spec["gains"][0]))
        parts.append(silence(rng.uniform(0.3, 0.6)))
        parts.append(tone(spec["freqs"][1], spec["dur"], spec["gains"][1]))
    else:
        raise ValueError(f"unknown tone type {spec['type']!r}")
    parts.append(silence(rng.uniform(0.2, 0.6)))
    return np.concatenate(parts).astype(np.float32)

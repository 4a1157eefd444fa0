"""The tool-call grammar: which texts are viable call lists, and decoding held to it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evaluators import function_calling as fc_eval
from steermoe.data.tools import calls_to_text
from steermoe.model.core import Decoding
from steermoe.model.tool_grammar import ToolCallGrammar

LIGHTS = {
    "type": "function",
    "function": {
        "name": "control_lights",
        "parameters": {
            "type": "object",
            "properties": {
                "room": {"type": "string"},
                "state": {"type": "string", "enum": ["on", "off"]},
                "brightness": {"type": "integer"},
            },
            "required": ["room", "state"],
        },
    },
}
THERMOSTAT = {
    "type": "function",
    "function": {
        "name": "set_thermostat",
        "parameters": {
            "type": "object",
            "properties": {
                "temperature": {"type": "number"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["temperature"],
        },
    },
}
# Nested schemas, type lists, anyOf, a bare tool without parameters.
PLAYLIST = {
    "name": "make_playlist",
    "parameters": {
        "type": "object",
        "properties": {
            "songs": {"type": "array", "items": {"type": "string"}},
            "options": {
                "type": "object",
                "properties": {
                    "shuffle": {"type": "boolean"},
                    "limit": {"type": ["integer", "null"]},
                },
            },
            "extra": {},
            "mood": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        },
    },
}
PING = {"name": "ping"}
TOOLS = [LIGHTS, THERMOSTAT, PLAYLIST, PING]

GOOD = [
    [],
    [{"name": "control_lights", "arguments": {"room": "kitchen", "state": "on"}}],
    [
        {"name": "set_thermostat", "arguments": {"unit": "celsius", "temperature": -2.5e1}},
        {
            "name": "control_lights",
            "arguments": {"state": "off", "room": 'a "b" \\ ü', "brightness": 0},
        },
    ],
    [
        {
            "name": "make_playlist",
            "arguments": {
                "songs": ["a", "b"],
                "options": {"shuffle": True, "limit": None},
                "extra": {"any": [1, {"x": None}]},
                "mood": 3,
            },
        },
        {"name": "ping", "arguments": {}},
    ],
]


@pytest.mark.parametrize("spaced", [False, True], ids=["canonical", "json.dumps"])
@pytest.mark.parametrize("calls", GOOD, ids=range(len(GOOD)))
def test_every_prefix_of_a_call_list_is_viable_and_only_the_whole_is_closed(calls, spaced):
    grammar = ToolCallGrammar(TOOLS)
    text = json.dumps(calls, ensure_ascii=False) if spaced else calls_to_text(calls)
    for end in range(len(text)):
        assert grammar.viable(text[:end]), text[:end]
        assert not grammar.closed(text[:end]), text[:end]
    assert grammar.closed(text) and grammar.may_stop(text)
    assert not grammar.viable(text + " ") and not grammar.viable(text + "]")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('[{"name":"turn_on"', "a name no tool has"),
        ('[{"name":"control_lights","arguments":{"colour"', "a key the schema does not declare"),
        ('[{"name":"control_lights","arguments":{"room":"a","room"', "a key twice"),
        ('[{"name":"control_lights","arguments":{"room":"a"}', "a required key missing"),
        ('[{"name":"control_lights","arguments":{"state":"dim"', "a value outside the enum"),
        ('[{"name":"control_lights","arguments":{"room":5', "a number for a string"),
        (
            '[{"name":"control_lights","arguments":{"state":"on","brightness":1.5',
            "a float for an int",
        ),
        (
            '[{"name":"control_lights","arguments":{"state":"on","brightness":"5"',
            "a string for an int",
        ),
        ('[{"name":"control_lights","arguments":{"state":"on","brightness":05', "a leading zero"),
        ('[{"name":"set_thermostat","arguments":{"temperature":true', "a boolean for a number"),
        ('[{"name":"make_playlist","arguments":{"songs":[1', "an array item of the wrong type"),
        ('[{"name":"make_playlist","arguments":{"options":{"limit":"x"', "not integer nor null"),
        ('[{"name":"make_playlist","arguments":{"mood":true', "outside anyOf"),
        ('[{"name":"ping","arguments":{"x"', "a key for a tool without parameters"),
        ('[{"name":"ping","arguments":{"room":"a\x01', "a raw control character"),
        ('[{"name" :"ping"', "a space before a colon"),
        ('[{"name":  "ping"', "two spaces"),
        ('[ {"name":"ping"', "a space after the bracket"),
        ('[{"name":\n"ping"', "a newline"),
        ("[ping()]", "Python call syntax"),
        ('{"name":"ping","arguments":{}}', "a bare call, not a list"),
        ("The lights are on.", "text"),
    ],
)
def test_texts_that_leave_the_grammar_are_not_viable(text, why):
    grammar = ToolCallGrammar(TOOLS)
    assert not grammar.viable(text), why
    assert not grammar.closed(text)


def test_modes_and_call_limits():
    one = '[{"name":"ping","arguments":{}}]'
    two = '[{"name":"ping","arguments":{}},{"name":"ping","arguments":{}}]'
    listed, required, auto = (ToolCallGrammar(TOOLS, mode=m) for m in ("list", "required", "auto"))
    assert listed.closed("[]") and not required.viable("[]") and auto.closed("[]")
    assert required.closed(one) and required.closed(two)
    single = ToolCallGrammar(TOOLS, mode="required", max_calls=1)
    assert single.closed(one) and not single.viable(two[: len(one)])
    # auto: free text is not held (and may end anywhere); a text that opens a list is.
    assert auto.viable("Sure, the lights are on.") and auto.may_stop("Sure")
    assert not auto.closed("Sure") and auto.may_stop("")
    assert not auto.viable('[{"name":"nope"') and not auto.may_stop('[{"name":"ping"')
    assert listed.may_stop("[]") and not listed.may_stop("") and not listed.may_stop("[")
    assert listed.next_chars("") == {"["}
    assert listed.next_chars("[") == {"]", "{"}
    assert listed.next_chars('[{"name":"') == {"c", "s", "m", "p"}
    assert listed.next_chars('[{"name":"control_lights","arguments":{"room":"x"') == {","}
    assert "\u00e9" in listed.next_chars(
        '[{"name":"ping","arguments":{}},{"name":"make_playlist","arguments":{"songs":["'
    )


@pytest.mark.parametrize("spaced", [False, True], ids=["canonical", "json.dumps"])
def test_any_cut_call_list_completes_into_a_whole_one_that_keeps_what_was_written(spaced):
    grammar = ToolCallGrammar(TOOLS)
    for calls in GOOD:
        text = json.dumps(calls, ensure_ascii=False) if spaced else calls_to_text(calls)
        for end in range(1, len(text), 4):
            tail = grammar.completion(text[:end])
            assert tail is not None, text[:end]
            assert grammar.closed(text[:end] + tail), text[:end] + tail
            assert isinstance(json.loads(text[:end] + tail), list)
        assert grammar.completion(text) is None  # already whole


def test_completion_adds_required_arguments_only_and_refuses_what_it_cannot_close():
    grammar = ToolCallGrammar(TOOLS, mode="required")
    tail = grammar.completion('[{"name":"control_lights","arguments":{"room":"hall way ')
    assert json.loads('[{"name":"control_lights","arguments":{"room":"hall way ' + tail) == [
        {"name": "control_lights", "arguments": {"room": "hall way ", "state": "off"}}
    ]
    assert json.loads("[" + grammar.completion("[")) == [
        {"name": "control_lights", "arguments": {"room": "", "state": "off"}}
    ]
    assert ToolCallGrammar(TOOLS).completion("[") == "]"
    auto = ToolCallGrammar(TOOLS, mode="auto")
    assert auto.completion("Sure, done.") is None  # free text is not held
    assert auto.completion('[{"name":"turn_on"') is None  # left the grammar
    assert auto.completion("") is None


def test_bad_grammars_are_refused():
    for kwargs, match in [
        ({"tools": []}, "at least one tool"),
        ({"tools": [PING, PING]}, "duplicate tool names"),
        ({"tools": [{"function": {}}]}, "without a function name"),
        ({"tools": [PING], "mode": "always"}, "mode must be one of"),
        ({"tools": [PING], "max_calls": 0}, "max_calls"),
    ]:
        with pytest.raises(ValueError, match=match):
            ToolCallGrammar(**kwargs)


# ------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def model(loud_tiny_model):
    return loud_tiny_model


def clips(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        (0.1 * rng.standard_normal(int(16000 * (0.6 + 0.3 * i)))).astype(np.float32)
        for i in range(n)
    ]


def test_greedy_decoding_under_the_grammar_is_the_argmax_over_the_tokens_that_fit(
    model, monkeypatch
):
    """A random model left alone writes no call; held to the grammar, each token it emits is
    the likeliest of those that keep the answer viable (checked against the whole vocabulary)."""
    grammar = ToolCallGrammar(TOOLS, mode="required")
    seen: list[tuple[torch.Tensor, list[int], int]] = []
    pick = model._allowed_token

    def recorded(logits, ids, opts, generator):
        token = pick(logits, ids, opts, generator)
        seen.append((logits.float().clone(), list(ids), token))
        return token

    monkeypatch.setattr(model, "_allowed_token", recorded)
    batch = model.collate(clips(3), ["x", "y", "z"])
    free = model.generate(batch, max_new_tokens=40)
    assert not any(grammar.viable(t) for t in free.texts if t)  # the untrained model rambles
    held = model.generate(
        batch, max_new_tokens=40, decoding=Decoding(tool_calls=grammar), max_repeats=0
    )
    assert len(seen) == sum(
        len(ids) + (r == "stop") for ids, r in zip(held.token_ids, held.finish_reasons)
    )
    texts = model._vocabulary(seen[0][0].shape[-1]).texts
    stops = set(model.template.stop_ids)
    for logits, ids, token in seen:
        text = model.tokenizer.decode(ids, skip_special_tokens=True)
        fits = [
            t
            for t in range(logits.shape[-1])
            if (
                grammar.may_stop(text)
                if t in stops
                else bool(texts[t]) and grammar.viable(text + texts[t])
            )
        ]
        assert token in fits
        assert logits[token] == logits[fits].max()
    for text in held.texts:
        assert grammar.viable(text)


def test_held_answers_close_into_calls_the_evaluator_accepts(model):
    """With schemas whose values are all enums, a held answer must close within its budget:
    each one parses, names an offered tool and passes the schema checks of the evaluator."""
    mode = {
        "name": "set_mode",
        "parameters": {
            "type": "object",
            "properties": {
                "mode": {"type": "string", "enum": ["eco", "boost"]},
                "quiet": {"type": "boolean"},
            },
            "required": ["mode"],
        },
    }
    stop = {"name": "stop_all", "parameters": {"type": "object", "properties": {}}}
    tools = [{"type": "function", "function": f} for f in (mode, stop)]
    batch = model.collate(clips(4), ["a", "b", "c", "d"])
    opts = [
        Decoding(tool_calls=ToolCallGrammar(tools, mode="required", max_calls=1)),
        Decoding(temperature=1.0, seed=3, tool_calls=ToolCallGrammar(tools, max_calls=1)),
        Decoding(
            temperature=1.5, seed=4, tool_calls=ToolCallGrammar(tools, mode="required", max_calls=1)
        ),
        Decoding(),  # free, in the same batch
    ]
    gen = model.generate(batch, max_new_tokens=60, decoding=opts)
    assert gen.finish_reasons[:3] == ["stop"] * 3
    for text in gen.texts[:3]:
        calls = json.loads(text)
        assert isinstance(calls, list) and len(calls) <= 1
        for call in calls:
            expected = {
                "name": call["name"],
                "arguments": {k: [v] for k, v in call["arguments"].items()},
            }
            verdict = fc_eval.check(text, [expected], tools)
            assert verdict["valid"], (text, verdict)
    assert (
        gen.texts[3]
        == model.generate(model.collate(clips(4)[3:], ["d"]), max_new_tokens=60).texts[0]
    )


def test_an_answer_cut_by_the_budget_still_parses_and_keeps_its_tokens(model):
    grammar = ToolCallGrammar(TOOLS, mode="required")
    batch = model.collate(clips(2), ["a", "b"])
    gen = model.generate(batch, max_new_tokens=5, decoding=Decoding(tool_calls=grammar))
    assert gen.finish_reasons == ["length", "length"] and gen.completed == [True, True]
    for text, ids in zip(gen.texts, gen.token_ids):
        written = model.tokenizer.decode(ids, skip_special_tokens=True).strip()
        assert text.startswith(written) and len(text) > len(written)
        calls = json.loads(text)
        assert len(calls) >= 1 and calls[0]["name"] in grammar.schemas


def test_generation_says_which_answers_the_repetition_guard_ended(model):
    batch = model.collate(clips(4), ["a", "b", "c", "d"])
    guarded = model.generate(batch, max_new_tokens=48, max_repeats=2)
    free = model.generate(batch, max_new_tokens=48, max_repeats=0)
    assert any(guarded.looped) and not any(free.looped)
    for looped, reason, ids, whole in zip(
        guarded.looped, guarded.finish_reasons, guarded.token_ids, free.token_ids
    ):
        if looped:  # ended early, its last repeat dropped: a prefix of the free answer
            assert reason == "stop" and len(ids) < len(whole) and whole[: len(ids)] == ids
    assert guarded.completed == free.completed == [False] * 4

"""Serving without Ray: request parsing, audio decoding, response shaping, the engine."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import threading

import numpy as np
import pytest
import soundfile as sf
from starlette.requests import Request

from steermoe.bench import serve as bench_serve
from steermoe.config import ModelConfig, load_config
from steermoe.data.tools import render_tools
from steermoe.model import build_model
from steermoe.model.core import Decoding
from steermoe.serve import requests as rq
from steermoe.serve import responses as rs
from steermoe.serve.args import ServeArgs, key_digest, with_key_digest
from steermoe.serve.audio import decode_audio
from steermoe.serve.engine import Cancelled, Engine, Job, Result
from steermoe.serve.errors import APIError
from steermoe.serve.transport import parse_multipart

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIMER = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}},
    },
}
LIMITS = {
    "served_name": "steermoe",
    "max_tokens": 32,
    "max_audio_s": 3.0,
    "default_instruction": "Transcribe the audio.",
}


def wav_bytes(seconds=1.0, rate=16000, channels=1, fmt="WAV", subtype=None, seed=0):
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def chat_body(audio=None, text="What is said?", **extra):
    audio = audio if audio is not None else wav_bytes()
    content = [
        {"type": "text", "text": text},
        {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"},
        },
    ]
    return {"model": "steermoe", "messages": [{"role": "user", "content": content}], **extra}


def status_of(fn, *args, **kwargs) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------------------ audio


def test_decode_resamples_and_downmixes():
    out = decode_audio(wav_bytes(1.0, rate=8000, channels=2), max_s=3)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == 16000


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_decode_other_containers(fmt):
    out = decode_audio(wav_bytes(0.5, fmt=fmt), max_s=3)
    assert abs(len(out) - 8000) < 50


def test_decode_odd_rate_uses_interpolation_fallback():
    out = decode_audio(wav_bytes(0.5, rate=44101), max_s=3)
    assert abs(len(out) - 8000) <= 1


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "invalid_audio"),
        (b"\x00\x01garbage" * 50, "invalid_audio"),
        (wav_bytes(1.0)[:20_000], "invalid_audio"),  # truncated data chunk
        (wav_bytes(1.0)[:30], "invalid_audio"),  # truncated header
        (wav_bytes(4.0), "audio_too_long"),
        (wav_bytes(0.5, rate=3000), "invalid_audio"),  # below 4 kHz
        (wav_bytes(0.05), "audio_too_short"),
    ],
)
def test_decode_rejects_bad_audio(data, code):
    err = status_of(decode_audio, data, max_s=3.0)
    assert err.status == 400 and err.code == code and err.param == "file"


def test_decode_rejects_nan():
    x = np.zeros(1600, dtype=np.float32)
    x[10] = np.nan
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    err = status_of(decode_audio, buf.getvalue(), max_s=3)
    assert "NaN" in err.message


def test_decode_rejects_lying_riff_size():
    data = bytearray(wav_bytes(0.2))
    pos = data.index(b"data")
    struct.pack_into("<I", data, pos + 4, 10_000_000)
    assert "truncated" in status_of(decode_audio, bytes(data), max_s=3).message


# --------------------------------------------------------------------------- requests


def test_parse_chat_plain_and_with_tools():
    plain = rq.parse_chat(chat_body(), **LIMITS)
    assert plain.job.instruction == "What is said?" and plain.tools == []
    assert plain.job.max_tokens == 32 and len(plain.job.audio) == 16000

    fc = rq.parse_chat(chat_body(tools=[WEATHER, TIMER], max_tokens=5), **LIMITS)
    assert fc.tool_choice == "auto" and [t["function"]["name"] for t in fc.tools] == [
        "get_weather",
        "set_timer",
    ]
    assert fc.job.instruction.startswith("What is said?\n" + render_tools([WEATHER, TIMER]))
    assert fc.job.max_tokens == 5

    named = {"type": "function", "function": {"name": "set_timer"}}
    one = rq.parse_chat(chat_body(tools=[WEATHER, TIMER], tool_choice=named), **LIMITS)
    assert [t["function"]["name"] for t in one.tools] == ["set_timer"]
    assert "get_weather" not in one.job.instruction

    none = rq.parse_chat(chat_body(tools=[WEATHER], tool_choice="none"), **LIMITS)
    assert none.tools == [] and none.job.instruction == "What is said?"


def test_parse_chat_holds_answers_with_tools_to_the_call_grammar():
    def grammar(**fields):
        return rq.parse_chat(chat_body(**fields), **LIMITS).job.decoding.tool_calls

    assert grammar() is None and grammar(tools=[WEATHER], tool_choice="none") is None
    auto = grammar(tools=[WEATHER, TIMER], temperature=0.5)
    assert (auto.mode, auto.max_calls, sorted(auto.schemas)) == (
        "auto",
        rq.MAX_CALLS,
        ["get_weather", "set_timer"],
    )
    required = grammar(tools=[WEATHER, TIMER], tool_choice="required", parallel_tool_calls=False)
    assert (required.mode, required.max_calls) == ("required", 1)
    named = {"type": "function", "function": {"name": "set_timer"}}
    one = grammar(tools=[WEATHER, TIMER], tool_choice=named)
    assert (one.mode, sorted(one.schemas)) == ("required", ["set_timer"])
    assert one.viable('[{"name":"set_timer"') and not one.viable('[{"name":"get_weather"')
    req = rq.parse_chat(chat_body(tools=[WEATHER], temperature=0.5, seed=2), **LIMITS)
    assert (req.job.decoding.temperature, req.job.decoding.seed) == (0.5, 2)


def test_parse_chat_defaults_to_asr_instruction_and_reads_stream_options():
    body = chat_body(text="", stream=True, stream_options={"include_usage": True})
    req = rq.parse_chat(body, **LIMITS)
    assert req.job.instruction == "Transcribe the audio."
    assert req.stream and req.include_usage


BAD_TOOLS = [
    ({"type": "function", "function": {"name": "bad name!"}}, "tools[0].function.name"),
    ({"type": "retrieval", "function": {"name": "x"}}, "tools[0].type"),
    ({"type": "function", "function": {"name": "f", "parameters": "x"}}, "tools[0]"),
    (
        {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}},
        "tools[0].function.parameters",
    ),
    (
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {}, "required": ["x"]},
            },
        },
        "tools[0].function.parameters",
    ),
    ({"type": "function", "function": {"name": "a" * 65}}, "tools[0].function.name"),
]


@pytest.mark.parametrize(("tool", "param"), BAD_TOOLS)
def test_parse_chat_rejects_bad_tool_schemas(tool, param):
    err = status_of(rq.parse_chat, chat_body(tools=[tool]), **LIMITS)
    assert err.status == 400 and err.param.startswith(param), err.message


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"model": "gpt-4o"}, 404, "model"),
        ({"model": 5}, 400, "model"),
        ({"messages": []}, 400, "messages"),
        ({"messages": "hi"}, 400, "messages"),
        ({"max_tokens": 33}, 400, "max_tokens"),
        ({"max_completion_tokens": 0}, 400, "max_completion_tokens"),
        ({"max_tokens": "5"}, 400, "max_tokens"),
        ({"stream": "yes"}, 400, "stream"),
        ({"n": 2}, 400, "n"),
        ({"tool_choice": "required"}, 400, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, 400, "tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            400,
            "tool_choice",
        ),
    ],
)
def test_parse_chat_rejects_bad_fields(change, status, param):
    err = status_of(rq.parse_chat, {**chat_body(), **change}, **LIMITS)
    assert (err.status, err.param) == (status, param), err.message
    if status == 404:
        assert err.code == "model_not_found"


def test_parse_chat_rejects_bad_audio_parts():
    body = chat_body()
    body["messages"][0]["content"][1]["input_audio"]["data"] = "!!not base64!!"
    assert "base64" in status_of(rq.parse_chat, body, **LIMITS).message
    body = chat_body()
    body["messages"][0]["content"][1]["input_audio"]["format"] = "exe"
    assert "format" in status_of(rq.parse_chat, body, **LIMITS).message
    body = chat_body()
    body["messages"][0]["content"] = "text only"
    assert "input_audio" in status_of(rq.parse_chat, body, **LIMITS).message
    body = chat_body()
    body["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": "x"}})
    assert status_of(rq.parse_chat, body, **LIMITS).status == 400


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[1, 2]", b"null", b'"x"', b"[" * 100_000, b'{"a":' * 40 + b"1" + b"}" * 40]
)
def test_parse_json_rejects_non_objects_and_deep_nesting(raw):
    assert status_of(rq.parse_json, raw).status == 400


def test_parse_transcription_fields():
    fields = {"model": "steermoe", "file": (wav_bytes(1.0), "a.wav"), "language": "en"}
    req = rq.parse_transcription({**fields, "response_format": "verbose_json"}, **LIMITS)
    assert req.job.instruction == "Transcribe the audio." and req.language == "en"
    assert req.response_format == "verbose_json"
    for change, param in [
        ({"file": "not a file"}, "file"),
        ({"model": ""}, "model"),
        ({"response_format": "xml"}, "response_format"),
        ({"language": "english!"}, "language"),
    ]:
        assert status_of(rq.parse_transcription, {**fields, **change}, **LIMITS).param == param
    assert status_of(rq.parse_transcription, {**fields, "model": "x"}, **LIMITS).status == 404


# Every hostile value of an OpenAI field gets a 400 naming it (each of these was a 200 before).
HOSTILE_CHAT = [
    ({"temperature": -1}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": "42"}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"stop": 5}, "stop"),
    ({"stop": {"a": 1}}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": ""}, "stop"),
    ({"stop": ["ok", 3]}, "stop"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format.type"),
    ({"response_format": {"type": "text", "extra": 1}}, "response_format.extra"),
    ({"n": 2}, "n"),
    ({"n": 0}, "n"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "max_tokens"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"presence_penalty": -3}, "presence_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"verbosity": "high"}, "verbosity"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"store": True}, "store"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"user": 5}, "user"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_obfuscation": True}}, "stream_options"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"tools": [{**WEATHER, "function": {**WEATHER["function"], "strict": True}}]}, "tools[0]"),
]


@pytest.mark.parametrize(("change", "param"), HOSTILE_CHAT)
def test_parse_chat_refuses_what_it_cannot_honour(change, param):
    err = status_of(rq.parse_chat, {**chat_body(), **change}, **LIMITS)
    assert (err.status, err.type) == (400, "invalid_request_error"), err.message
    assert err.param.startswith(param), (err.param, err.message)
    if param == "frobnicate":
        assert err.message == "Unrecognized request argument supplied: frobnicate"


def test_parse_chat_honours_sampling_fields_and_accepts_neutral_ones():
    req = rq.parse_chat(
        chat_body(temperature=0.7, top_p=0.9, seed=-3, stop=["\n", "END"], max_tokens=5),
        **LIMITS,
    )
    assert req.job.decoding == Decoding(temperature=0.7, top_p=0.9, seed=-3, stop=("\n", "END"))
    assert rq.parse_chat(chat_body(stop="."), **LIMITS).job.decoding.stop == (".",)
    assert rq.parse_chat(chat_body(), **LIMITS).job.decoding == Decoding()  # greedy default
    neutral = {
        "temperature": 0,
        "top_p": 1,
        "stop": None,
        "n": 1,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "logit_bias": {},
        "logprobs": False,
        "top_logprobs": 0,
        "modalities": ["text"],
        "store": False,
        "service_tier": "auto",
        "audio": None,
        "user": "u-1",
        "safety_identifier": "s",
        "prompt_cache_key": "k",
        "metadata": {"team": "asr"},
        "max_tokens": 7,
        "max_completion_tokens": 7,
        "response_format": {"type": "text"},
        "parallel_tool_calls": True,
    }
    req = rq.parse_chat(chat_body(**neutral), **LIMITS)
    assert req.job.decoding.greedy and req.job.max_tokens == 7 and not req.json_object
    json_req = rq.parse_chat(chat_body(response_format={"type": "json_object"}), **LIMITS)
    assert json_req.json_object
    one = rq.parse_chat(chat_body(tools=[WEATHER], parallel_tool_calls=False), **LIMITS)
    assert not one.parallel_tool_calls


def test_parse_json_refuses_non_standard_constants():
    for raw in (b'{"temperature": NaN}', b'{"top_p": Infinity}', b'{"seed": -Infinity}'):
        assert "not valid JSON" in status_of(rq.parse_json, raw).message


def test_parse_transcription_honours_or_refuses_every_field():
    fields = {"model": "steermoe", "file": (wav_bytes(1.0), "a.wav")}
    plain = rq.parse_transcription(fields, **LIMITS)
    assert plain.job.decoding == Decoding() and plain.job.instruction == "Transcribe the audio."
    req = rq.parse_transcription(
        {
            **fields,
            "temperature": "0.4",
            "language": "EN-gb",
            "prompt": " Elinor, Marianne. ",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["segment"],
            "stream": "false",
        },
        **LIMITS,
    )
    assert req.job.decoding.temperature == pytest.approx(0.4)
    assert req.job.instruction == "Transcribe the audio.\nContext: Elinor, Marianne."
    assert req.language == "EN-gb"
    for fmt in ("srt", "vtt", "text", "json"):
        assert rq.parse_transcription({**fields, "response_format": fmt}, **LIMITS)
    german = rq.parse_transcription({**fields, "language": "de"}, **LIMITS, languages=("en", "de"))
    assert german.language == "de"
    for change, param in [
        ({"temperature": "abc"}, "temperature"),
        ({"temperature": "-1"}, "temperature"),
        ({"temperature": "1.5"}, "temperature"),
        ({"temperature": "nan"}, "temperature"),
        ({"language": "xx"}, "language"),
        ({"language": "de"}, "language"),
        ({"response_format": "xml"}, "response_format"),
        ({"stream": "true"}, "stream"),
        (
            {"timestamp_granularities[]": ["word"], "response_format": "verbose_json"},
            "timestamp_granularities[]",
        ),
        ({"timestamp_granularities[]": ["segment"]}, "timestamp_granularities[]"),
        ({"include[]": ["logprobs"]}, "include[]"),
        ({"chunking_strategy": "auto"}, "chunking_strategy"),
        ({"known_speaker_names[]": ["a"]}, "known_speaker_names[]"),
        ({"seed": "1"}, "seed"),
        ({"top_p": "0.5"}, "top_p"),
    ]:
        err = status_of(rq.parse_transcription, {**fields, **change}, **LIMITS)
        assert (err.status, err.param) == (400, param), (change, err.message)
    err = status_of(rq.parse_transcription, {**fields, "language": "xx"}, **LIMITS)
    assert err.code == "unsupported_language" and "en" in err.message


BOUNDARY = "b0undary"


def form_part(name: str, value: bytes | str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
    return head + (value if isinstance(value, bytes) else value.encode()) + b"\r\n"


def parse_form(body: bytes, *, in_app: bool = True, boundary: str | None = BOUNDARY) -> dict:
    """``transport.parse_multipart`` on ``body``, already read as the app does."""
    ctype = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", ctype.encode())],
    }
    if in_app:  # inside an app Starlette reports a bad form as an HTTPException
        scope["app"] = object()

    async def drained() -> dict:  # read_body has consumed the real stream
        return {"type": "http.request", "body": b"", "more_body": False}

    return asyncio.run(parse_multipart(Request(scope, drained), body))


@pytest.mark.parametrize("in_app", [True, False], ids=["in-app", "bare"])
def test_parse_multipart_fields_and_limits(in_app):
    def form(*parts: bytes) -> bytes:
        return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()

    fields = parse_form(
        form(
            form_part("model", "steermoe"),
            form_part("file", b"RIFF\x00abc", "a.wav"),
            form_part("timestamp_granularities[]", "word"),
            form_part("timestamp_granularities[]", "segment"),
        ),
        in_app=in_app,
    )
    assert fields == {
        "model": "steermoe",
        "file": (b"RIFF\x00abc", "a.wav"),
        "timestamp_granularities[]": ["word", "segment"],
    }
    at_limits = form(
        *(form_part(f"k{i}", "v") for i in range(31)),
        form_part("prompt", "x" * 64 * 1024),
        *(form_part(f"f{i}", b"x", f"{i}.wav") for i in range(2)),
    )
    assert len(parse_form(at_limits, in_app=in_app)) == 34
    malformed = "malformed multipart form: "
    for body, message in [
        (
            form(*(form_part(f"f{i}", b"x", f"{i}.wav") for i in range(3))),
            malformed + "Too many files. Maximum number of files is 2.",
        ),
        (
            form(*(form_part(f"k{i}", "v") for i in range(33))),
            malformed + "Too many fields. Maximum number of fields is 32.",
        ),
        (
            form(form_part("prompt", "x" * (64 * 1024 + 1))),
            malformed + "Part exceeded maximum size of 64KB.",
        ),
        (b"\x00\xff" * 100, malformed + "Invalid multipart data."),
        (form(form_part("model", "a"), form_part("model", "b")), "form field 'model' is repeated"),
    ]:
        err = status_of(parse_form, body, in_app=in_app)
        assert (err.status, err.message) == (400, message)
    err = status_of(parse_form, form(form_part("model", "a")), in_app=in_app, boundary=None)
    assert (err.status, err.message) == (400, malformed + "Missing boundary in multipart.")


# -------------------------------------------------------------------------- responses


def result(text, tokens=4, finish="stop"):
    return Result(text=text, completion_tokens=tokens, prompt_tokens=10, finish_reason=finish)


def test_tool_calls_from_generated_json():
    out = rs.chat_completion(
        result('[{"name":"get_weather","arguments":{"city":"Paris"}}]'),
        model="steermoe",
        offered=["get_weather"],
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_tool_calls_python_syntax_parallel():
    calls = rs.tool_calls_from_text(
        '[get_weather(city="Paris"), set_timer(minutes=5)]', ["get_weather", "set_timer"]
    )
    assert [c["function"]["name"] for c in calls] == ["get_weather", "set_timer"]
    assert json.loads(calls[1]["function"]["arguments"]) == {"minutes": 5}


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("[]", ""),  # the model's "no tool fits"
        ('[{"name":"rm_rf","arguments":{}}]', '[{"name":"rm_rf","arguments":{}}]'),  # not offered
        ("It is sunny.", "It is sunny."),
        ('[{"name": "get_weather", "arguments": {', '[{"name": "get_weather", "arguments": {'),
    ],
)
def test_non_calls_become_content(text, content):
    out = rs.chat_completion(result(text), model="steermoe", offered=["get_weather"])
    message = out["choices"][0]["message"]
    assert message["content"] == content and "tool_calls" not in message
    assert out["choices"][0]["finish_reason"] == "stop"


def test_without_tools_text_is_content_even_if_call_shaped():
    text = '[{"name":"get_weather","arguments":{"city":"Paris"}}]'
    out = rs.chat_completion(result(text, finish="length"), model="m")
    assert out["choices"][0]["message"]["content"] == text
    assert out["choices"][0]["finish_reason"] == "length"


def test_sse_chunk_and_transcription_formats():
    line = rs.chunk("id1", "m", 1, {"content": "hé"}, None)
    assert line.startswith("data: ") and line.endswith("\n\n")
    assert json.loads(line[6:])["choices"][0]["delta"] == {"content": "hé"}
    assert rs.sse("[DONE]") == "data: [DONE]\n\n"
    r = result("hello world")
    assert rs.transcription(r, response_format="text", duration_s=1, language=None) == "hello world"
    verbose = rs.transcription(r, response_format="verbose_json", duration_s=1.5, language="de")
    assert verbose["duration"] == 1.5 and verbose["language"] == "de"


def test_json_object_is_validated_and_refused_when_not_json():
    ok = rs.chat_completion(result('{"a": 1}'), model="m", json_object=True)
    assert ok["choices"][0]["message"] == {"role": "assistant", "content": '{"a": 1}'}
    for text in ("hello", "[1, 2]", '{"a": '):
        out = rs.chat_completion(result(text), model="m", json_object=True)
        message = out["choices"][0]["message"]
        assert message["content"] is None and "JSON object" in message["refusal"]
        assert out["choices"][0]["finish_reason"] == "stop"
    cut = rs.chat_completion(result('{"a": ', finish="length"), model="m", json_object=True)
    assert cut["choices"][0]["message"]["content"] == '{"a": '  # budget spent: partial JSON
    assert cut["choices"][0]["finish_reason"] == "length"


def test_parallel_tool_calls_false_keeps_the_first_call():
    text = '[get_weather(city="Paris"), set_timer(minutes=5)]'
    offered = ["get_weather", "set_timer"]
    both = rs.chat_completion(result(text), model="m", offered=offered)
    one = rs.chat_completion(result(text), model="m", offered=offered, parallel_tool_calls=False)
    assert len(both["choices"][0]["message"]["tool_calls"]) == 2
    (call,) = one["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"


def test_timed_transcription_formats_hold_one_cue_over_the_clip():
    r = result("hello world")
    srt = rs.transcription(r, response_format="srt", duration_s=3723.5, language=None)
    assert srt == "1\n00:00:00,000 --> 01:02:03,500\nhello world\n\n"
    vtt = rs.transcription(r, response_format="vtt", duration_s=2.99, language=None)
    assert vtt == "WEBVTT\n\n00:00:00.000 --> 00:00:02.990\nhello world\n\n"
    verbose = rs.transcription(r, response_format="verbose_json", duration_s=2.99, language="en")
    assert verbose["segments"] == [
        {"id": 0, "seek": 0, "start": 0.0, "end": 2.99, "text": "hello world"}
    ]


def test_bench_report_has_a_sampled_row_and_its_cost():
    def row(mode, c, wall):
        lat = [wall / 4] * 8
        res = bench_serve.LoadResult(c, 8, 0, wall, 8.0, lat, 32)
        return {"mode": mode, "result": res, "mean_batch": 1.0}

    bench = {
        "rows": [row(m, c, w) for c in (1, 8) for m, w in [("batched", 1), ("unbatched", 4)]]
        + [row("sampled", c, 2) for c in (1, 8)],
        "ms_per_token": 5.0,
        "clips": 1,
    }
    lines = bench_serve.report(bench).splitlines()
    assert [ln.split()[:2] for ln in lines[1:7]] == [
        ["batched", "1"],
        ["unbatched", "1"],
        ["batched", "8"],
        ["unbatched", "8"],
        ["sampled", "1"],
        ["sampled", "8"],
    ]
    assert "throughput batched / unbatched: c=1: x4.00, c=8: x4.00" in lines
    assert "throughput sampled / greedy (batched): c=1: x0.50, c=8: x0.50" in lines
    body = bench_serve.chat_body("m", "AAAA", 4, {"temperature": 0.7, "top_p": 0.9, "seed": 3})
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
        4,
        0.7,
        0.9,
        3,
    )


# ------------------------------------------------------------------------------- args


def test_serve_args_from_config_and_key_digest(monkeypatch):
    cfg = load_config(None, ["serve.model=/ckpt", "serve.max_batch_size=4", "serve.api_key_env=K"])
    args = ServeArgs.from_config(cfg)
    assert args.model == "/ckpt" and args.max_batch_size == 4 and args.api_key_sha256 is None
    assert args.ongoing_limit == 16
    monkeypatch.setenv("K", "s3cret")
    with_key = with_key_digest(args)
    assert with_key.api_key_sha256 == key_digest("s3cret")
    assert "s3cret" not in with_key.model_dump_json()
    with pytest.raises(ValueError):
        ServeArgs(model="x", min_replicas=3, max_replicas=2)


# ----------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    model = build_model(
        ModelConfig(encoder="tiny-random-whisper", llm="tiny-random-llm"), cache_dir=cache
    )
    return Engine(model.eval(), max_audio_s=30.0)


def test_engine_caps_audio_at_encoder_window(engine):
    model = engine.model
    window = model.encoder.max_frames * model.feature_extractor.hop_length / 16000
    assert Engine(model, max_audio_s=10_000).max_audio_s == pytest.approx(window)
    assert Engine(model, max_audio_s=0.5 * window).max_audio_s == pytest.approx(0.5 * window)


def test_engine_batch_matches_single_and_respects_budgets(engine):
    rng = np.random.default_rng(0)
    a, b = ((0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 40000))
    jobs = [Job(a, "Transcribe the audio.", 3), Job(b, "What?", 7)]
    batched = engine.run(jobs)
    alone = [engine.run([j])[0] for j in jobs]
    assert batched == alone
    for result, job in zip(batched, jobs):  # the budget is respected per request
        if result.finish_reason == "length":
            assert result.completion_tokens == job.max_tokens
        else:  # end of turn, or the repetition guard stopped a loop
            assert result.finish_reason == "stop"
            assert result.completion_tokens < job.max_tokens
    assert batched[1].prompt_tokens > batched[0].prompt_tokens  # longer clip, more audio tokens


def test_engine_stream_pieces_join_to_the_batched_text(engine):
    rng = np.random.default_rng(1)
    job = Job((0.1 * rng.standard_normal(24000)).astype(np.float32), "Transcribe the audio.", 6)
    pieces: list[str] = []
    streamed = engine.stream(job, pieces.append)
    assert streamed == engine.run([job])[0]
    assert "".join(pieces) == streamed.text


def test_engine_stream_cancel_stops_decoding(engine):
    cancel = threading.Event()
    cancel.set()
    job = Job(np.zeros(16000, dtype=np.float32), "x", 6)
    with pytest.raises(Cancelled):
        engine.stream(job, lambda _: None, cancel)


def sampled_jobs(seed: int | None, n: int = 2, **opts) -> list[Job]:
    rng = np.random.default_rng(5)
    waves = [(0.1 * rng.standard_normal(16000 + 8000 * i)).astype(np.float32) for i in range(n)]
    return [
        Job(w, "Transcribe the audio.", 10, Decoding(temperature=1.0, seed=seed, **opts))
        for w in waves
    ]


def test_engine_sampling_is_seeded_per_request(engine):
    first = engine.run(sampled_jobs(seed=11))
    assert engine.run(sampled_jobs(seed=11)) == first  # same seed, same output
    texts = {engine.run(sampled_jobs(seed=s))[0].text for s in range(4)}
    assert len(texts) > 1  # the seed matters
    # Batch composition does not: alone, or next to a greedy request and another seed.
    alone = engine.run(sampled_jobs(seed=11)[1:])[0]
    greedy = Job(np.zeros(20000, dtype=np.float32), "What?", 6)
    other = sampled_jobs(seed=99, n=1)[0]
    mixed = engine.run([greedy, sampled_jobs(seed=11)[1], other])
    assert mixed[1] == alone == first[1]
    assert mixed[0] == engine.run([greedy])[0]


def test_engine_stop_strings_cut_the_text_batched_and_streamed(engine):
    (free,) = engine.run(sampled_jobs(seed=3, n=1))
    assert free.completion_tokens == 10 and len(free.text) > 4, free
    stop = free.text[2:4]
    (job,) = sampled_jobs(seed=3, n=1, stop=(stop, "never-in-output"))
    (cut,) = engine.run([job])
    assert cut.text == free.text[: free.text.index(stop)].strip()
    assert cut.finish_reason == "stop" and cut.completion_tokens <= free.completion_tokens
    pieces: list[str] = []
    streamed = engine.stream(job, pieces.append)
    assert streamed == cut and "".join(pieces) == cut.text

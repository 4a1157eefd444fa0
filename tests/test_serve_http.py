"""The Serve application through real HTTP on 127.0.0.1, with the official `openai` client.

One module-scoped deployment (tiny random backbones, a checkpoint in a temporary folder, an
API key) serves every test. With random weights the generated text is arbitrary: tests check
shapes, determinism (greedy, and sampling with a seed), token accounting, batching, and that
hostile input never gets a 5xx: every field the server cannot honour is a 400 naming it.
"""

from __future__ import annotations

import base64
import io
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from steermoe.env import free_port

pytestmark = pytest.mark.ray

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SHORT_CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"  # 2.99 s
LONG_CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"  # 7.1 s
KEY = "sk-test-9f8e7d6c"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass(frozen=True)
class Server:
    url: str

    def client(self, key: str = KEY):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=10).json()


@pytest.fixture(scope="module")
def clip() -> bytes:
    if not SHORT_CLIP.is_file():
        pytest.skip("Debian package pocketsphinx-testdata (real LibriVox clips) is not installed")
    return SHORT_CLIP.read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory, clip) -> Server:
    import ray
    from ray import serve

    from steermoe.config import ModelConfig
    from steermoe.model import build_model, save_checkpoint
    from steermoe.serve import ServeArgs, build_app
    from steermoe.serve.args import key_digest

    cache = tmp_path_factory.mktemp("cache")
    config = ModelConfig(encoder="tiny-random-whisper", llm="tiny-random-llm")
    ckpt = save_checkpoint(
        build_model(config, cache_dir=cache), config, tmp_path_factory.mktemp("ck") / "best"
    )
    args = ServeArgs(
        model=str(ckpt),
        cache_dir=str(cache),
        max_body_mb=1.0,
        max_audio_s=5.0,  # SHORT_CLIP fits, LONG_CLIP is refused
        max_tokens=40,
        max_batch_size=8,
        batch_wait_timeout_s=0.2,
        api_key_sha256=key_digest(KEY),
    )
    port = free_port()
    # address="local": a new cluster of our own, never one another process started.
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="steermoe-test", route_prefix="/")
        yield Server(f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
        ray.shutdown()


def audio_message(data: bytes, text: str = "", fmt: str = "wav") -> list[dict]:
    parts = [{"type": "text", "text": text}] if text else []
    parts.append(
        {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt},
        }
    )
    return [{"role": "user", "content": parts}]


# ----------------------------------------------------------------------------- routes


def test_health_and_models(server):
    health = server.health()  # no key needed
    assert health["status"] == "ok" and health["model"] == "steermoe"
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["steermoe"]
    assert server.client().models.retrieve("steermoe").id == "steermoe"
    r = requests.get(f"{server.url}/v1/models/gpt-4", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_api_key_enforced(server):
    import openai

    url = f"{server.url}/v1/models"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert missing.headers["www-authenticate"] == "Bearer"
    for header in (f"Bearer {KEY}x", f"Basic {KEY}", "Bearer", KEY):
        assert requests.get(url, headers={"Authorization": header}, timeout=10).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong").models.list()
    ok = requests.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert ok.status_code == 200


def test_openai_client_transcribes_real_clip(server, clip):
    client = server.client()
    first = client.audio.transcriptions.create(model="steermoe", file=("a.wav", clip))
    second = client.audio.transcriptions.create(model="steermoe", file=("a.wav", clip))
    assert isinstance(first.text, str) and first.text == second.text
    verbose = client.audio.transcriptions.create(
        model="steermoe", file=("a.wav", clip), response_format="verbose_json", language="en"
    )
    assert verbose.text == first.text and verbose.language == "en"
    assert verbose.duration == pytest.approx(2.99, abs=0.01)
    text = client.audio.transcriptions.create(
        model="steermoe", file=("a.wav", clip), response_format="text"
    )
    assert text == first.text


def test_long_real_clip_is_refused_with_reason(server):
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        server.client().audio.transcriptions.create(
            model="steermoe", file=("long.wav", LONG_CLIP.read_bytes())
        )
    assert info.value.body["code"] == "audio_too_long"


def test_openai_chat_with_audio_and_tools(server, clip):
    client = server.client()
    messages = audio_message(clip, "What is the weather like?")
    plain = client.chat.completions.create(model="steermoe", messages=messages, max_tokens=4)
    with_tools = client.chat.completions.create(
        model="steermoe", messages=messages, tools=[WEATHER], max_tokens=4
    )
    no_tools = client.chat.completions.create(
        model="steermoe", messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=4
    )
    for out in (plain, with_tools, no_tools):
        assert out.object == "chat.completion" and out.model == "steermoe"
        choice = out.choices[0]
        assert choice.message.role == "assistant"
        assert choice.finish_reason in ("stop", "length", "tool_calls")
        if choice.finish_reason == "tool_calls":
            assert all(c.function.name == "get_weather" for c in choice.message.tool_calls)
            json.loads(choice.message.tool_calls[0].function.arguments)
        else:
            assert isinstance(choice.message.content, str)
        assert 1 <= out.usage.completion_tokens <= 4
    # The tools reach the prompt (rendered into the instruction); tool_choice="none" drops them.
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens
    assert no_tools.usage.prompt_tokens == plain.usage.prompt_tokens
    assert no_tools.choices[0].message.content == plain.choices[0].message.content


LAMP = {
    "type": "function",
    "function": {
        "name": "lamp",
        "parameters": {
            "type": "object",
            "properties": {"on": {"type": "boolean"}},
            "required": ["on"],
        },
    },
}


def test_required_and_named_tool_choice_answer_with_a_call_to_the_schema(server, clip):
    """The untrained model writes no call by itself; held to the call grammar it answers
    ``tool_choice: required`` and a named function with one call whose arguments fit."""
    client = server.client()
    messages = audio_message(clip, "Switch the lamp.")
    named = {"type": "function", "function": {"name": "lamp"}}
    for tools, choice in (([LAMP], "required"), ([WEATHER, LAMP], named)):
        out = client.chat.completions.create(
            model="steermoe",
            messages=messages,
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=False,
            max_tokens=40,
        )
        choice_ = out.choices[0]
        assert choice_.finish_reason == "tool_calls", choice_.message
        (call,) = choice_.message.tool_calls
        assert call.function.name == "lamp"
        arguments = json.loads(call.function.arguments)
        assert set(arguments) == {"on"} and isinstance(arguments["on"], bool)


def test_openai_streaming(server, clip):
    client = server.client()
    messages = audio_message(clip)
    whole = client.chat.completions.create(model="steermoe", messages=messages, max_tokens=8)
    stream = client.chat.completions.create(
        model="steermoe",
        messages=messages,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len(chunks) >= 3 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    raw = requests.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "steermoe", "messages": messages, "max_tokens": 2, "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_stream_client_disconnect_leaves_server_healthy(server, clip):
    body = {"model": "steermoe", "messages": audio_message(clip), "max_tokens": 16, "stream": True}
    with requests.post(
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        stream=True,
        timeout=60,
    ) as r:
        first = next(r.iter_lines())
        assert first.startswith(b"data: ")
    out = server.client().chat.completions.create(
        model="steermoe", messages=audio_message(clip), max_tokens=2
    )
    assert out.usage.completion_tokens <= 2


def test_concurrent_requests_are_batched(server, clip):
    before = server.health()["batches"]
    client = server.client()
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(client.audio.transcriptions.create, model="steermoe", file=("a.wav", clip))
            for _ in range(8)
        ]
        texts = {f.result().text for f in futures}
    assert len(texts) == 1  # batch-invariant decoding
    after = server.health()["batches"]
    new_sizes = after["recent_sizes"][-(after["count"] - before["count"]) :]
    assert sum(new_sizes) == 8 and max(new_sizes) > 1, new_sizes


def test_sampling_seed_stop_and_json_mode_through_the_client(server, clip):
    client = server.client()
    messages = audio_message(clip)

    def chat(**kw):
        return client.chat.completions.create(
            model="steermoe", messages=messages, max_tokens=12, **kw
        ).choices[0]

    first = chat(temperature=1.0, top_p=0.95, seed=7)
    assert chat(temperature=1.0, top_p=0.95, seed=7).message.content == first.message.content
    texts = {chat(temperature=1.0, seed=s).message.content for s in range(4)}
    assert len(texts) > 1, texts
    streamed = client.chat.completions.create(
        model="steermoe",
        messages=messages,
        max_tokens=12,
        temperature=1.0,
        top_p=0.95,
        seed=7,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == first.message.content  # alone in a stream = in a batch
    content = first.message.content
    assert len(content) > 4, content
    stop = content[2:4]
    cut = chat(temperature=1.0, top_p=0.95, seed=7, stop=[stop, "\x00"])
    assert cut.message.content == content[: content.index(stop)].strip()
    assert cut.finish_reason == "stop"
    json_mode = chat(response_format={"type": "json_object"}, stop=[content[0]], seed=7)
    if json_mode.message.content is None:  # random weights do not write JSON
        assert "JSON object" in json_mode.message.refusal
    else:
        assert isinstance(json.loads(json_mode.message.content), dict)


def test_transcription_fields_through_the_client(server, clip):
    import openai

    client = server.client()
    greedy = client.audio.transcriptions.create(model="steermoe", file=("a.wav", clip)).text
    srt = client.audio.transcriptions.create(
        model="steermoe", file=("a.wav", clip), response_format="srt", temperature=0.0
    )
    assert srt == f"1\n00:00:00,000 --> 00:00:02,990\n{greedy}\n\n"
    vtt = client.audio.transcriptions.create(
        model="steermoe", file=("a.wav", clip), response_format="vtt", language="en"
    )
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.990\n")
    sampled = client.audio.transcriptions.create(
        model="steermoe", file=("a.wav", clip), temperature=0.9, prompt="Elinor and Marianne."
    )
    assert isinstance(sampled.text, str)
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="steermoe", file=("a.wav", clip), language="xx")
    assert info.value.body["param"] == "language"
    r = requests.post(f"{server.url}/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404
    assert r.json()["error"] == {
        "message": "Invalid URL (POST /v1/embeddings)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


# ------------------------------------------------------------------------------- fuzz


def _multipart(
    fields: dict[str, str], file: bytes | None, filename: str = "a.wav", boundary="b0undary"
):
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    if file is not None:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(file + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


# OpenAI fields with a value this server cannot honour, and the param its 400 must name.
HOSTILE_FIELDS = [
    ({"temperature": -1}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 2}, "top_p"),
    ({"seed": "x"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": 5}, "stop"),
    ({"stop": {"a": 1}}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.type"),
    ({"n": 2}, "n"),
    ({"max_tokens": 2, "max_completion_tokens": 3}, "max_tokens"),
    ({"max_tokens": None, "max_completion_tokens": 41}, "max_completion_tokens"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"presence_penalty": 9}, "presence_penalty"),
    ({"logit_bias": {"1": 100}}, "logit_bias"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"modalities": ["audio"]}, "modalities"),
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"prediction": {"type": "content"}}, "prediction"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"functions": []}, "functions"),
    ({"function_call": "none"}, "function_call"),
    ({"store": True}, "store"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"parallel_tool_calls": 1}, "parallel_tool_calls"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.function"),
    ({"bogus_field": True}, "bogus_field"),
]
HOSTILE_FORM_FIELDS = [
    ({"temperature": "abc"}, "temperature"),
    ({"temperature": "1.5"}, "temperature"),
    ({"temperature": "inf"}, "temperature"),
    ({"language": "xx"}, "language"),
    ({"language": "de"}, "language"),
    ({"response_format": "xml"}, "response_format"),
    ({"stream": "true"}, "stream"),
    ({"timestamp_granularities[]": "word"}, "timestamp_granularities[]"),
    ({"include[]": "logprobs"}, "include[]"),
    ({"chunking_strategy": "auto"}, "chunking_strategy"),
    ({"seed": "3"}, "seed"),
]


def fuzz_cases(clip: bytes, seed: int = 0) -> list[tuple]:
    """At least 500 malformed or hostile requests: (method, path, headers, body[, param]),
    where ``param`` is the field the 400 must name."""
    rng = random.Random(seed)
    auth = {"Authorization": f"Bearer {KEY}"}
    js = {**auth, "Content-Type": "application/json"}
    chat, asr = "/v1/chat/completions", "/v1/audio/transcriptions"
    cases: list[tuple[str, str, dict, bytes]] = []

    def chat_case(body, headers=js, param=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        cases.append(("POST", chat, headers, data, param))

    def asr_case(fields, file, filename="a.wav", headers=auth, param=None):
        body, ctype = _multipart(fields, file, filename)
        cases.append(("POST", asr, {**headers, "Content-Type": ctype}, body, param))

    def valid_chat(**change):
        return {"model": "steermoe", "messages": audio_message(clip), "max_tokens": 2, **change}

    def rand_bytes(n):
        return bytes(rng.getrandbits(8) for _ in range(n))

    data_start = clip.index(b"data") + 8
    for _ in range(60):  # random bytes as a JSON body
        chat_case(rand_bytes(rng.randint(0, 3000)))
    for _ in range(50):  # random bytes as the audio file
        asr_case(
            {"model": "steermoe"},
            rand_bytes(rng.randint(0, 4000)),
            rng.choice(["a.wav", "b.mp3", "c"]),
        )
    for _ in range(40):  # truncated WAVs, cut inside the header or the data chunk
        cut = rng.choice([rng.randint(1, data_start), rng.randint(data_start + 2, len(clip) - 2)])
        asr_case({"model": "steermoe"}, clip[:cut])
    for _ in range(25):
        cut = rng.randint(data_start + 2, len(clip) - 2)
        chat_case(valid_chat(messages=audio_message(clip[:cut])))
    for _ in range(30):  # huge headers
        pad = {f"X-Pad-{i}": "a" * rng.randint(1000, 4000) for i in range(rng.randint(1, 6))}
        chat_case({"model": "steermoe"}, {**js, **pad})
    mutations = [
        {"model": None},
        {"model": 7},
        {"model": "whisper-1"},
        {"messages": None},
        {"messages": {}},
        {"messages": [1, 2]},
        {"messages": [{"role": "bot", "content": "x"}]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": 5}}]}
            ]
        },
        {"messages": [{"role": "user", "content": "no audio here"}]},
        {"messages": [{"role": "assistant", "content": "only assistant"}]},
        {"max_tokens": "ten"},
        {"max_tokens": -1},
        {"max_tokens": 10**9},
        {"max_tokens": 2.5},
        {"max_completion_tokens": 41},
        {"stream": "yes"},
        {"stream_options": "all"},
        {"n": 3},
        {"temperature": "hot"},
        {"tools": {"a": 1}},
        {"tools": "x"},
        {"tool_choice": "sometimes"},
        {"tool_choice": "auto"},
    ]
    for _ in range(3):
        for change in mutations:
            body = valid_chat(**change)
            if change.get("model", "") is None:
                body.pop("model")
            chat_case(body)
    big = b'{"model": "steermoe", "pad": "' + b"x" * 1_200_000 + b'"}'
    for _ in range(15):  # oversized bodies (declared length)
        chat_case(big)
        asr_case({"model": "steermoe"}, b"\0" * 1_100_000)
    for _ in range(5):  # oversized, chunked (no Content-Length)
        cases.append(("POST", chat, js, iter([b"x" * 400_000] * 4)))
    alphabet = "!@#$%^&*()<>?~` \n\t" + "abcXYZ019+/="
    for _ in range(30):  # bad base64
        bad = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        body = valid_chat()
        body["messages"][0]["content"][-1]["input_audio"]["data"] = bad + "!"
        chat_case(body)
    bad_tools = [
        {"type": "function", "function": {"name": "has space"}},
        {"type": "function", "function": {"name": ""}},
        {"type": "function", "function": {"name": "x" * 65}},
        {"type": "function", "function": {"name": "f", "parameters": []}},
        {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}},
        {"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": 1}}}},
        {"type": "function", "function": {"name": "f", "parameters": {"required": "a"}}},
        {"type": "function", "function": {"name": "f", "parameters": {"required": ["ghost"]}}},
        {"type": "code_interpreter"},
        {"function": {"name": "f"}},
        {"type": "function"},
        "get_weather",
        None,
    ]
    for _ in range(3):
        for tool in bad_tools:
            chat_case(valid_chat(tools=[WEATHER, tool]))
        chat_case(valid_chat(tools=[WEATHER, WEATHER]))
        chat_case(valid_chat(tools=[WEATHER] * 129))
    for ctype in ["text/plain", "application/xml", "application/x-www-form-urlencoded", "", "json"]:
        for _ in range(4):  # wrong content types
            cases.append(
                ("POST", chat, {**auth, "Content-Type": ctype}, json.dumps(valid_chat()).encode())
            )
            cases.append(("POST", asr, {**auth, "Content-Type": ctype}, clip[:2000]))
    for _ in range(5):
        body, _ = _multipart({"model": "steermoe"}, clip)
        cases.append(
            ("POST", chat, {**auth, "Content-Type": "multipart/form-data; boundary=b0undary"}, body)
        )
        cases.append(("POST", asr, js, json.dumps(valid_chat()).encode()))
    for method, path in [
        ("GET", chat),
        ("GET", asr),
        ("PUT", chat),
        ("DELETE", "/v1/models"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/../../etc/passwd"),
        ("POST", "/health"),
        ("GET", "/v1/models/%00"),
    ]:
        for _ in range(4):  # wrong methods and paths
            cases.append((method, path, js, b"{}"))
    for _ in range(10):  # malformed multipart
        body, _ = _multipart({"model": "steermoe"}, clip[:3000])
        cases.append(("POST", asr, {**auth, "Content-Type": "multipart/form-data"}, body))
        cases.append(
            ("POST", asr, {**auth, "Content-Type": "multipart/form-data; boundary=zzz"}, body)
        )
        cases.append(
            (
                "POST",
                asr,
                {**auth, "Content-Type": "multipart/form-data; boundary=b0undary"},
                body[: rng.randint(5, len(body) - 10)],
            )
        )
    for _ in range(10):  # missing or wrong key
        cases.append(
            ("POST", chat, {"Content-Type": "application/json"}, json.dumps(valid_chat()).encode())
        )
        cases.append(("POST", chat, {**js, "Authorization": f"Bearer {KEY[:-1]}"}, b"{}"))
    nan = np.zeros(1600, dtype=np.float32)
    nan[5] = np.nan
    long_clip = LONG_CLIP.read_bytes()
    for _ in range(5):  # audio limits and broken audio
        asr_case({"model": "steermoe"}, long_clip)
        asr_case({"model": "steermoe"}, _wav(nan, subtype="FLOAT"))
        asr_case({"model": "steermoe"}, _wav(np.zeros(0, dtype=np.float32)))
        asr_case({"model": "steermoe"}, _wav(np.zeros(3000, dtype=np.float32), rate=1000))
        chat_case(valid_chat(messages=audio_message(long_clip)))
    for _ in range(4):  # transcription field errors
        asr_case({}, clip)
        asr_case({"model": "other"}, clip)
        asr_case({"model": "steermoe", "response_format": "docx"}, clip)
        asr_case({"model": "steermoe", "language": "<script>"}, clip)
        asr_case({"model": "steermoe", "file": "text"}, None)
    for _ in range(3):  # OpenAI fields this server cannot honour: a 400 naming each
        for change, param in HOSTILE_FIELDS:
            chat_case(valid_chat(**change), param=param)
        for change, param in HOSTILE_FORM_FIELDS:
            asr_case({"model": "steermoe", **change}, clip, param=param)
        chat_case(b'{"model": "steermoe", "temperature": NaN}')
    for depth in range(10):  # nesting and non-object JSON
        chat_case(b"[" * (100 + 1000 * depth) + b"]" * (100 + 1000 * depth))
        chat_case(json.dumps(rng.choice([[], 1, "x", None, True])).encode())
    return cases


def _send(server: Server, case) -> int | str:
    method, path, headers, body, *expect = case
    try:
        r = requests.request(method, server.url + path, headers=headers, data=body, timeout=30)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    if not 400 <= r.status_code < 500:
        return f"{method} {path} -> {r.status_code} {r.text[:200]}"
    if "Traceback" in r.text:
        return f"{method} {path} leaked a traceback"
    if expect and expect[0] is not None:
        error = r.json()["error"]
        if (r.status_code, error["param"], error["type"]) != (
            400,
            expect[0],
            "invalid_request_error",
        ) or set(error) != {"message", "type", "param", "code"}:
            return (
                f"{method} {path}: wanted a 400 naming {expect[0]!r}, got {r.status_code} {error}"
            )
    return r.status_code


def test_fuzz_hostile_requests_get_4xx_and_server_survives(server, clip):
    cases = fuzz_cases(clip)
    assert len(cases) >= 500
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda c: _send(server, c), cases))
    elapsed = time.perf_counter() - start
    failures = [o for o in outcomes if isinstance(o, str)]
    assert not failures, failures[:10]
    assert {401, 404, 405, 413, 415, 400} <= set(outcomes)
    assert elapsed < 90, f"fuzzing took {elapsed:.0f} s"
    # A valid request still works and the replica never answered 5xx.
    out = server.client().audio.transcriptions.create(model="steermoe", file=("a.wav", clip))
    assert isinstance(out.text, str)
    assert not any(code.startswith("5") for code in server.health()["requests"])

"""Parse and validate OpenAI-style requests into engine jobs (pure functions; no Ray, no HTTP).

No field is silently ignored. Every top-level field of OpenAI's spec for the served routes is
either honoured or refused with a 400 naming it (fields this server cannot honour are accepted
only at their neutral value, e.g. ``logprobs: false``); a wrong type or range is a 400; an
unrecognised field is a 400, as OpenAI answers. Only the last user message is used (the model
is single-turn): its ``input_audio`` part is the clip and its text parts the instruction;
system messages are replaced by the model's own. The README's Serve section has the table.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steermoe.data.tools import tool_instruction
from steermoe.model.core import Decoding
from steermoe.model.tool_grammar import ToolCallGrammar
from steermoe.serve.audio import FORMATS, decode_audio
from steermoe.serve.engine import Job
from steermoe.serve.errors import APIError, bad_request

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_TOOLS = 128
# Most calls in one answer when parallel tool calls are allowed.
MAX_CALLS = 8
MAX_STOP = 4
# Nesting deeper than this is refused before validation (it only serves to exhaust the stack).
MAX_DEPTH = 32
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
# Languages a checkpoint serves when its header does not list the ones it was trained on.
DEFAULT_LANGUAGES = ("en",)
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
_INT64 = (-(2**63), 2**63 - 1)

# Spec fields this server cannot honour, and the only values it accepts for them (the
# neutral ones, which ask for nothing; null always is): anything else is a 400 naming the field.
CHAT_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logit_bias": ({},),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "modalities": (["text"],),
    "audio": (),
    "prediction": (),
    "reasoning_effort": (),
    "verbosity": (),
    "web_search_options": (),
    "functions": (),
    "function_call": (),
    "store": (False,),
    "service_tier": ("auto", "default"),
    "prompt_cache_retention": (),
}
# Transcription form fields refused whenever present (list fields end with "[]").
ASR_UNSUPPORTED = (
    "include[]",
    "chunking_strategy",
    "known_speaker_names[]",
    "known_speaker_references[]",
)
ASR_FIELDS = (
    "file",
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "stream",
    *ASR_UNSUPPORTED,
)


class _Open(BaseModel):
    """Nested request objects: strict types; keys beyond those read are let through."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class _Closed(BaseModel):
    """Objects whose every key is either read or refused: unknown keys are a 400."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TextPart(_Open):
    type: Literal["text"]
    text: str


class InputAudio(_Open):
    data: str = Field(min_length=1)
    format: str = "wav"


class AudioPart(_Open):
    type: Literal["input_audio"]
    input_audio: InputAudio


Part = Annotated[TextPart | AudioPart, Field(discriminator="type")]


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None


class FunctionDef(_Open):
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    # Structured outputs: refused when true (arguments are parsed, not schema-constrained).
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Closed):
    name: str = Field(pattern=TOOL_NAME)


class NamedChoice(_Closed):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Closed):
    include_usage: bool | None = None
    # OpenAI's padding of streamed chunks against side channels; none is added here.
    include_obfuscation: Literal[False] | None = None


class ResponseFormat(_Closed):
    # "json_schema" (structured outputs) is refused: the decode is not schema-constrained.
    type: Literal["text", "json_object"]


class ChatBody(_Closed):
    """Every top-level field of ``POST /v1/chat/completions``: read, or refused unless neutral."""

    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    # False: at most one call is returned (the first the model wrote).
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    # 0 (the default here, and what evaluation measures) = greedy; OpenAI's range is 0..2.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=_INT64[0], le=_INT64[1])
    # A string or a list of up to MAX_STOP strings (checked by `stop_strings`).
    stop: Any = None
    response_format: ResponseFormat | None = None
    # Labels with no effect on the answer (OpenAI does not use them to generate either).
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    # Refused unless neutral (CHAT_NEUTRAL): typed where a neutral value exists.
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_retention: Any = None


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion: the decoding job plus how to shape the answer."""

    model: str
    job: Job
    # Tools offered to the model (after `tool_choice`); empty = answer in plain text.
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "none"
    stream: bool = False
    include_usage: bool = False
    # response_format json_object: the answer must be a JSON object (see responses.py).
    json_object: bool = False
    # parallel_tool_calls false: at most one tool call.
    parallel_tool_calls: bool = True


@dataclass(frozen=True)
class TranscriptionRequest:
    """A validated transcription: the decoding job and the response format."""

    model: str
    job: Job
    response_format: str = "json"
    language: str | None = None


# ------------------------------------------------------------------------- helpers


def parse_json(body: bytes) -> dict[str, Any]:
    """Decode a JSON object body or raise a 400 with the reason."""
    if not body:
        raise bad_request("request body is empty; expected a JSON object")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise bad_request(f"request body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise bad_request(f"request body must be a JSON object, got {type(data).__name__}")
    if _depth(data) > MAX_DEPTH:
        raise bad_request(f"request body is nested deeper than {MAX_DEPTH} levels")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _depth(obj: Any) -> int:
    """Nesting depth of a JSON value (iterative: safe on hostile input)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def _validation_error(exc: ValidationError, data: dict[str, Any]) -> APIError:
    errors = exc.errors(include_url=False, include_input=False)
    # Of the errors on the first bad field (one per member of a union), the deepest one;
    # a wrong value before an unknown key (json_schema's own keys after its type).
    located = [
        (_param(data, e["loc"], missing=e["type"] == "missing"), e)
        for e in errors
        if e["loc"][:1] == errors[0]["loc"][:1]
    ]
    loc, err = max(located, key=lambda p: (p[1]["type"] != "extra_forbidden", len(p[0])))
    if err["type"] == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {loc}", param=loc)
    return bad_request(f"{loc or 'body'}: {err['msg']}", param=loc or None)


def _param(data: Any, loc: tuple, *, missing: bool) -> str:
    """The path of ``loc`` in the request as a client wrote it (``tools[0].function.name``):
    pydantic's union and tag labels in ``loc`` are not keys of the data and are dropped."""
    path, node = "", data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node, path = node[part], f"{path}.{part}"
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node, path = node[part], f"{path}[{part}]"
        elif missing and i == len(loc) - 1 and isinstance(part, str):
            path = f"{path}.{part}"  # a required key that is absent
    return path.lstrip(".")


def check_model(name: str, served_name: str) -> None:
    """404 ``model_not_found`` unless ``name`` is the served model."""
    if name != served_name:
        raise APIError(
            404,
            f"The model {name[:100]!r} does not exist; this server serves {served_name!r}.",
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )


def token_budget(body: ChatBody, limit: int) -> int:
    """``max_completion_tokens`` (or its older spelling ``max_tokens``), checked against the
    limit; both may be given only with the same value."""
    new, old = body.max_completion_tokens, body.max_tokens
    if new is not None and old is not None and new != old:
        raise bad_request(
            f"max_tokens ({old}) and max_completion_tokens ({new}) disagree; send one",
            param="max_tokens",
        )
    param = "max_completion_tokens" if new is not None else "max_tokens"
    value = new if new is not None else old
    if value is None:
        return limit
    if value < 1 or value > limit:
        raise bad_request(f"{param} must be between 1 and {limit}, got {value}", param=param)
    return value


def validate_tool_schema(tool: Tool, index: int) -> None:
    """The ``parameters`` of a function must be a JSON-schema object with consistent keys."""
    params = tool.function.parameters
    where = f"tools[{index}].function.parameters"
    if params is None:
        return
    if params.get("type", "object") != "object":
        raise bad_request(f"{where}.type must be 'object'", param=where, code="invalid_tool")
    props = params.get("properties", {})
    if not isinstance(props, dict) or not all(isinstance(v, dict) for v in props.values()):
        raise bad_request(
            f"{where}.properties must map names to JSON schemas", param=where, code="invalid_tool"
        )
    required = params.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise bad_request(
            f"{where}.required must be a list of names", param=where, code="invalid_tool"
        )
    unknown = [r for r in required if r not in props]
    if unknown:
        raise bad_request(
            f"{where}.required names undefined properties {unknown[:5]}",
            param=where,
            code="invalid_tool",
        )


def select_tools(body: ChatBody) -> tuple[list[dict[str, Any]], str]:
    """Validated tools offered to the model under ``tool_choice``, and the choice's name.

    ``none`` offers no tools (the answer is text); ``auto`` and ``required`` offer all; a named
    function offers only that one. The decode is then held to the call grammar
    (:func:`call_grammar`).
    """
    tools = body.tools or []
    names = [t.function.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise bad_request(f"tools: duplicate function names {dupes[:5]}", param="tools")
    for i, tool in enumerate(tools):
        validate_tool_schema(tool, i)
        if tool.function.strict:
            raise bad_request(
                f"tools[{i}].function.strict: true is not supported (calls are held to the "
                "offered names, the declared keys and the value types, not to every JSON "
                "Schema keyword)",
                param=f"tools[{i}].function.strict",
            )
    choice = body.tool_choice
    if choice is None:
        choice = "auto" if tools else "none"
    if not tools and choice != "none":
        raise bad_request("tool_choice is set but no tools were given", param="tool_choice")
    dumped = [t.model_dump(exclude_none=True) for t in tools]
    if choice == "none":
        return [], "none"
    if isinstance(choice, NamedChoice):
        name = choice.function.name
        if name not in names:
            raise bad_request(f"tool_choice names unknown function {name!r}", param="tool_choice")
        return [dumped[names.index(name)]], name
    return dumped, choice


def call_grammar(
    tools: list[dict[str, Any]], choice: str, *, parallel: bool
) -> ToolCallGrammar | None:
    """The grammar a chat answer is decoded under: none without tools; under ``auto`` the
    answer is free text or, once it begins with ``[``, calls to the offered tools; under
    ``required`` or a named function it is a list of at least one call. ``parallel`` false
    (``parallel_tool_calls``) allows one call."""
    if not tools:
        return None
    mode = "auto" if choice == "auto" else "required"
    return ToolCallGrammar(tools, mode=mode, max_calls=MAX_CALLS if parallel else 1)


def refuse_unsupported(body: ChatBody) -> None:
    """400 for a spec field set to anything but its neutral value (see ``CHAT_NEUTRAL``)."""
    for name, neutral in CHAT_NEUTRAL.items():
        value = getattr(body, name)
        if value is not None and value not in neutral:
            accepted = " or ".join(json.dumps(v) for v in (None, *neutral))
            raise bad_request(
                f"Unsupported parameter: {name!r} is not supported by this server "
                f"(accepted: {accepted})",
                param=name,
                code="unsupported_parameter",
            )
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")


def stop_strings(value: Any) -> tuple[str, ...]:
    """``stop``: null, a string or a list of up to ``MAX_STOP`` non-empty strings."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or len(items) > MAX_STOP
        or not all(isinstance(s, str) and s for s in items)
    ):
        raise bad_request(
            f"stop must be a non-empty string or a list of up to {MAX_STOP} non-empty strings",
            param="stop",
        )
    return tuple(dict.fromkeys(items))


def chat_decoding(body: ChatBody) -> Decoding:
    """Temperature, top_p, seed and stop strings of a chat request (greedy by default)."""
    return Decoding(
        temperature=body.temperature or 0.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        seed=body.seed,
        stop=stop_strings(body.stop),
    )


def check_language(value: Any, languages: tuple[str, ...]) -> str | None:
    """``language``: an ISO-639-1 code (a region subtag is allowed) the model was trained on."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _LANGUAGE.match(value):
        raise bad_request("language must be an ISO-639-1 code such as 'en'", param="language")
    if value.split("-")[0].lower() not in languages:
        raise bad_request(
            f"language {value[:20]!r} is not one this model was trained on "
            f"(supported: {', '.join(languages)})",
            param="language",
            code="unsupported_language",
        )
    return value


def form_temperature(value: Any) -> float:
    """Transcription ``temperature``: a number in 0..1 sent as a form field (0 = greedy)."""
    if value is None or value == "":
        return 0.0
    try:
        number = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        number = math.nan
    if not 0 <= number <= 1:  # NaN fails too
        raise bad_request("temperature must be a number between 0 and 1", param="temperature")
    return number


def check_form_fields(fields: dict[str, Any], response_format: str) -> None:
    """400 for transcription fields that are unknown, unsupported or not honourable."""
    for name in fields:
        if name not in ASR_FIELDS:
            raise bad_request(f"Unrecognized request argument supplied: {name[:40]}", name[:40])
        if name in ASR_UNSUPPORTED:
            raise bad_request(
                f"Unsupported parameter: {name!r} is not supported by this server",
                param=name,
                code="unsupported_parameter",
            )
    list_fields = [n for n in ASR_FIELDS if n.endswith("[]")]
    for name in ("model", "language", "prompt", "response_format", "temperature", "stream"):
        if name in fields and not isinstance(fields[name], str):
            raise bad_request(f"{name} must be a text field", param=name)
    for name in list_fields:
        if name in fields and not isinstance(fields[name], list):
            raise bad_request(f"{name} must be a repeated text field", param=name)
    if fields.get("stream", "false") not in ("false", "False", ""):
        raise bad_request(
            "stream: streamed transcriptions are not supported; the text comes whole",
            param="stream",
        )
    grains = fields.get("timestamp_granularities[]", [])
    if grains and response_format != "verbose_json":
        raise bad_request(
            "timestamp_granularities requires response_format 'verbose_json'",
            param="timestamp_granularities[]",
        )
    if any(g != "segment" for g in grains):
        raise bad_request(
            "timestamp_granularities: only 'segment' is supported (one segment per clip)",
            param="timestamp_granularities[]",
        )


def decode_b64(data: str, param: str) -> bytes:
    """Base64 (optionally as a ``data:`` URL) -> bytes, or a 400."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("audio data is not valid base64", param=param) from None


# -------------------------------------------------------------------------- routes


def parse_chat(
    data: dict[str, Any],
    *,
    served_name: str,
    max_tokens: int,
    max_audio_s: float,
    default_instruction: str,
    tool_prompt: str = "full",
) -> ChatRequest:
    """Validate a chat completion body and decode its audio.

    Raises:
        APIError: 400 for malformed, unknown or unsupported fields, tools or audio; 404 for
            an unknown model.
    """
    try:
        body = ChatBody.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, data) from None
    check_model(body.model, served_name)
    if body.n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    refuse_unsupported(body)
    budget = token_budget(body, max_tokens)
    tools, choice = select_tools(body)
    parallel = body.parallel_tool_calls is not False
    decoding = replace(
        chat_decoding(body), tool_calls=call_grammar(tools, choice, parallel=parallel)
    )
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        raise bad_request("messages: needs a user message with an input_audio part", "messages")
    idx = users[-1]
    content = body.messages[idx].content
    parts = content if isinstance(content, list) else []
    audio = [p for p in parts if isinstance(p, AudioPart)]
    where = f"messages[{idx}].content"
    if len(audio) != 1:
        raise bad_request(
            f"{where}: the last user message needs exactly one input_audio part, got {len(audio)}",
            param=where,
        )
    fmt = audio[0].input_audio.format.lower()
    if fmt not in FORMATS:
        raise bad_request(
            f"{where}: unsupported audio format {fmt[:20]!r} (use one of {sorted(FORMATS)})",
            param=where,
        )
    text = "\n".join(p.text.strip() for p in parts if isinstance(p, TextPart) and p.text.strip())
    pieces = [text] if text else []
    if tools:
        pieces.append(tool_instruction(tools, compact=tool_prompt == "compact"))
    instruction = "\n".join(pieces) or default_instruction
    raw = decode_b64(audio[0].input_audio.data, where)
    wave = decode_audio(raw, max_s=max_audio_s, fmt=fmt, param=where)
    return ChatRequest(
        model=body.model,
        job=Job(audio=wave, instruction=instruction, max_tokens=budget, decoding=decoding),
        tools=tools,
        tool_choice=choice,
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        json_object=body.response_format is not None and body.response_format.type == "json_object",
        parallel_tool_calls=parallel,
    )


def parse_transcription(
    fields: dict[str, Any],
    *,
    served_name: str,
    max_tokens: int,
    max_audio_s: float,
    default_instruction: str,
    languages: tuple[str, ...] = DEFAULT_LANGUAGES,
) -> TranscriptionRequest:
    """Validate multipart transcription fields (``file`` as ``(bytes, filename)``).

    Decoding uses the model's own ASR instruction, the one it was evaluated with; a ``prompt``
    is added to it as a second line, ``Context: <prompt>`` (like Whisper's prompt: earlier
    text, names and spellings to expect). ``temperature`` 0..1 (0 = greedy) samples the
    decode. ``language`` must be one of ``languages`` (what the model was trained on).

    Raises:
        APIError: 400 for missing/malformed/unknown/unsupported fields or audio; 404 for an
            unknown model.
    """
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: a form field naming the model is required", param="model")
    check_model(model, served_name)
    fmt = fields.get("response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise bad_request(
            f"response_format must be one of {list(RESPONSE_FORMATS)}, got {str(fmt)[:20]!r}",
            param="response_format",
        )
    check_form_fields(fields, fmt)
    language = check_language(fields.get("language"), languages)
    temperature = form_temperature(fields.get("temperature"))
    prompt = (fields.get("prompt") or "").strip()
    instruction = f"{default_instruction}\nContext: {prompt}" if prompt else default_instruction
    file = fields.get("file")
    if not isinstance(file, tuple):
        raise bad_request("file: an audio file upload is required", param="file")
    data, filename = file
    hint = filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else None
    wave = decode_audio(data, max_s=max_audio_s, fmt=hint, param="file")
    return TranscriptionRequest(
        model=model,
        job=Job(
            audio=wave,
            instruction=instruction,
            max_tokens=max_tokens,
            decoding=Decoding(temperature=temperature),
        ),
        response_format=fmt,
        language=language,
    )

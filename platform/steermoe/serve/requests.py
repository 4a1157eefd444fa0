"""Parse and validate OpenAI-style requests into engine jobs (pure functions; no Ray, no HTTP).

Unknown top-level fields are ignored (OpenAI clients send optional ones we do not use), but
every field we read is type-checked strictly; mistakes raise :class:`APIError` naming the field.
Sampling fields (``temperature``, ``top_p``...) are accepted and ignored: decoding is greedy.
Only the last user message is used (the model is single-turn): its ``input_audio`` part is the
clip and its text parts the instruction; system messages are replaced by the model's own.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steermoe.data.tools import tool_instruction
from steermoe.serve.audio import FORMATS, decode_audio
from steermoe.serve.engine import Job
from steermoe.serve.errors import APIError, bad_request

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_TOOLS = 128
# Nesting deeper than this is refused before validation (it only serves to exhaust the stack).
MAX_DEPTH = 32
RESPONSE_FORMATS = ("json", "text", "verbose_json")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


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


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Open):
    name: str = Field(pattern=TOOL_NAME)


class NamedChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Open):
    include_usage: bool = False


class ChatBody(_Open):
    """The fields of ``POST /v1/chat/completions`` this server reads."""

    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    temperature: float | None = None


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
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        reason = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise bad_request(f"request body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise bad_request(f"request body must be a JSON object, got {type(data).__name__}")
    if _depth(data) > MAX_DEPTH:
        raise bad_request(f"request body is nested deeper than {MAX_DEPTH} levels")
    return data


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


def _validation_error(exc: ValidationError) -> APIError:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    return bad_request(f"{loc or 'body'}: {err['msg']}", param=loc or None)


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
    """``max_completion_tokens`` (or the legacy ``max_tokens``), checked against the limit."""
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    value = body.max_completion_tokens if param == "max_completion_tokens" else body.max_tokens
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
    """Validated tools offered to the model under ``tool_choice``, and the choice's name."""
    tools = body.tools or []
    names = [t.function.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise bad_request(f"tools: duplicate function names {dupes[:5]}", param="tools")
    for i, tool in enumerate(tools):
        validate_tool_schema(tool, i)
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
        APIError: 400 for malformed fields, tools or audio; 404 for an unknown model.
    """
    try:
        body = ChatBody.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    check_model(body.model, served_name)
    if body.n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    budget = token_budget(body, max_tokens)
    tools, choice = select_tools(body)
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
        job=Job(audio=wave, instruction=instruction, max_tokens=budget),
        tools=tools,
        tool_choice=choice,
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )


def parse_transcription(
    fields: dict[str, Any],
    *,
    served_name: str,
    max_tokens: int,
    max_audio_s: float,
    default_instruction: str,
) -> TranscriptionRequest:
    """Validate multipart transcription fields (``file`` as ``(bytes, filename)``).

    ``language`` and ``prompt`` are validated and accepted; decoding uses the model's own ASR
    instruction, the one it was evaluated with (``language`` is echoed in ``verbose_json``).

    Raises:
        APIError: 400 for missing/malformed fields or audio; 404 for an unknown model.
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
    language = fields.get("language") or None
    if language is not None and (not isinstance(language, str) or not _LANGUAGE.match(language)):
        raise bad_request("language must be an ISO-639 code such as 'en'", param="language")
    for name in ("prompt", "temperature"):
        if name in fields and not isinstance(fields[name], str):
            raise bad_request(f"{name} must be a text field", param=name)
    file = fields.get("file")
    if not isinstance(file, tuple):
        raise bad_request("file: an audio file upload is required", param="file")
    data, filename = file
    hint = filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else None
    wave = decode_audio(data, max_s=max_audio_s, fmt=hint, param="file")
    return TranscriptionRequest(
        model=model,
        job=Job(audio=wave, instruction=default_instruction, max_tokens=max_tokens),
        response_format=fmt,
        language=language,
    )

"""OpenAI response objects built from engine results (pure functions; no Ray, no HTTP).

With tools offered, the generated text is parsed with the evaluators' ``parse_calls`` (JSON
list of ``{"name", "arguments"}`` or Python call syntax): calls to offered functions become
``tool_calls`` with ``finish_reason: "tool_calls"``; ``[]`` (the model's "no tool fits") becomes
empty content; anything else is returned as plain content.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from evaluators.function_calling import parse_calls
from steermoe.serve.engine import Result


def new_id(prefix: str) -> str:
    """A random OpenAI-style object id such as ``chatcmpl-1f3a...``."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def tool_calls_from_text(text: str, offered: Sequence[str]) -> list[dict[str, Any]] | None:
    """OpenAI ``tool_calls`` for the calls in ``text``; ``[]`` for an explicit empty list;
    ``None`` when the text is not (only) calls to offered functions."""
    try:
        calls = parse_calls(text)
    except ValueError:  # CallParseError: call-like text that does not decode
        return None
    if not calls:
        return [] if text.strip() == "[]" else None
    if any(c["name"] not in offered for c in calls):
        return None
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {
                "name": c["name"],
                "arguments": json.dumps(c["arguments"], ensure_ascii=False),
            },
        }
        for c in calls
    ]


def usage(result: Result) -> dict[str, int]:
    """The ``usage`` object."""
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def message_from_result(result: Result, offered: Sequence[str]) -> tuple[dict[str, Any], str]:
    """The assistant message and its ``finish_reason``."""
    calls = tool_calls_from_text(result.text, offered) if offered else None
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    content = "" if calls == [] else result.text
    return {"role": "assistant", "content": content}, result.finish_reason


def chat_completion(
    result: Result, *, model: str, offered: Sequence[str] = (), request_id: str | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message, finish = message_from_result(result, offered)
    return {
        "id": request_id or new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage(result),
    }


def chunk(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    with_usage: dict[str, int] | None = None,
    *,
    empty_choices: bool = False,
) -> str:
    """One ``chat.completion.chunk`` as a server-sent event line."""
    body: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if empty_choices
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if with_usage is not None:
        body["usage"] = with_usage
    return sse(body)


def sse(body: dict[str, Any] | str) -> str:
    """``data: <json>\\n\\n`` (or the literal ``[DONE]`` terminator)."""
    payload = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return f"data: {payload}\n\n"


def transcription(
    result: Result, *, response_format: str, duration_s: float, language: str | None
) -> dict[str, Any] | str:
    """The transcription body: ``{"text"}``, plain text, or the minimal ``verbose_json``."""
    if response_format == "text":
        return result.text
    if response_format == "verbose_json":
        return {
            "task": "transcribe",
            "language": language or "en",
            "duration": round(duration_s, 3),
            "text": result.text,
            "segments": [],
            "usage": {"type": "duration", "seconds": round(duration_s, 3)},
        }
    return {"text": result.text}

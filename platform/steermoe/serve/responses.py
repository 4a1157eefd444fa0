"""OpenAI response objects built from engine results (pure functions; no Ray, no HTTP).

With tools offered, the generated text is parsed with the evaluators' ``parse_calls`` (JSON
list of ``{"name", "arguments"}`` or Python call syntax): calls to offered functions become
``tool_calls`` with ``finish_reason: "tool_calls"`` (only the first with ``parallel_tool_calls:
false``); ``[]`` (the model's "no tool fits") becomes empty content; anything else is returned
as plain content.

With ``response_format: {"type": "json_object"}`` the text is validated, not constrained: a
JSON object is returned as content; anything else, once decoding stopped by itself, becomes
``content: null`` with a ``refusal`` saying so (cut by ``max_tokens``, ``finish_reason:
"length"``, the partial text is returned as content, as OpenAI does).
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


def is_json_object(text: str) -> bool:
    """Whether ``text`` is one JSON object (what ``response_format: json_object`` promises)."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def message_from_result(
    result: Result,
    offered: Sequence[str],
    *,
    json_object: bool = False,
    parallel_tool_calls: bool = True,
) -> tuple[dict[str, Any], str]:
    """The assistant message and its ``finish_reason``."""
    calls = tool_calls_from_text(result.text, offered) if offered else None
    if calls:
        calls = calls if parallel_tool_calls else calls[:1]
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    content = "" if calls == [] else result.text
    if json_object and result.finish_reason != "length" and not is_json_object(content):
        refusal = "The model's answer was not a JSON object (response_format json_object)."
        return {"role": "assistant", "content": None, "refusal": refusal}, "stop"
    return {"role": "assistant", "content": content}, result.finish_reason


def chat_completion(
    result: Result,
    *,
    model: str,
    offered: Sequence[str] = (),
    request_id: str | None = None,
    json_object: bool = False,
    parallel_tool_calls: bool = True,
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message, finish = message_from_result(
        result, offered, json_object=json_object, parallel_tool_calls=parallel_tool_calls
    )
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


def timestamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS<sep>mmm`` (SRT uses ``,``, WebVTT ``.``)."""
    ms = round(seconds * 1000)
    return (
        f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"
    )


def transcription(
    result: Result, *, response_format: str, duration_s: float, language: str | None
) -> dict[str, Any] | str:
    """The transcription body: ``{"text"}``, plain text, ``verbose_json``, ``srt`` or ``vtt``.

    The model gives no timings inside a clip, so timed formats hold one segment (one cue)
    spanning the whole clip.
    """
    if response_format == "text":
        return result.text
    if response_format == "srt":
        return f"1\n{timestamp(0, ',')} --> {timestamp(duration_s, ',')}\n{result.text}\n\n"
    if response_format == "vtt":
        return f"WEBVTT\n\n{timestamp(0, '.')} --> {timestamp(duration_s, '.')}\n{result.text}\n\n"
    if response_format == "verbose_json":
        end = round(duration_s, 3)
        return {
            "task": "transcribe",
            "language": language or "en",
            "duration": end,
            "text": result.text,
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": end, "text": result.text}],
            "usage": {"type": "duration", "seconds": end},
        }
    return {"text": result.text}

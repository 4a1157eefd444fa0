"""Small helpers that query a running endpoint with the official ``openai`` client."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any


def client(base_url: str, api_key_env: str = "STEERMOE_API_KEY", timeout: float = 120.0):
    """An ``openai.OpenAI`` client for ``base_url`` (``http://127.0.0.1:8000/v1``)."""
    import openai

    key = os.environ.get(api_key_env) or "no-key"
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)


def transcribe(c, audio: str | Path, model: str = "steermoe") -> str:
    """``POST /v1/audio/transcriptions`` with a file, like OpenAI's Whisper API."""
    with open(audio, "rb") as fh:
        return c.audio.transcriptions.create(model=model, file=fh).text


def chat_with_audio(
    c,
    audio: str | Path,
    text: str,
    *,
    tools: list[dict[str, Any]] | None = None,
    model: str = "steermoe",
    max_tokens: int = 48,
):
    """``POST /v1/chat/completions`` with an ``input_audio`` part; returns the message."""
    data = base64.b64encode(Path(audio).read_bytes()).decode()
    content = [
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
        {"type": "text", "text": text},
    ]
    kwargs: dict[str, Any] = {"tools": tools} if tools else {}
    response = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        **kwargs,
    )
    return response.choices[0].message

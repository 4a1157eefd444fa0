"""HTTP-level guards: bearer key, content types, bounded body reading, multipart parsing."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from steermoe.serve.errors import APIError, bad_request

# Multipart limits: one file plus a handful of short text fields.
MAX_FORM_FIELDS = 32
MAX_FORM_FILES = 2
MAX_FIELD_BYTES = 64 * 1024


def authorize(request: Request, key_sha256: str | None) -> None:
    """Check ``Authorization: Bearer <key>`` against the key's digest (no-op without a key).

    Raises:
        APIError: 401 ``invalid_api_key`` when the header is missing or the key is wrong.
    """
    if key_sha256 is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(
            401,
            "Missing bearer API key (send 'Authorization: Bearer <key>').",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
    if not hmac.compare_digest(digest, key_sha256):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, expected: str) -> None:
    """415 unless the body is of media type ``expected``."""
    got = media_type(request)
    if got != expected:
        raise APIError(
            415,
            f"Content-Type must be {expected}, got {got[:60] or 'none'!r}",
            code="unsupported_media_type",
        )


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The whole body, refusing (413) as soon as it exceeds ``limit_bytes``.

    A declared ``Content-Length`` over the limit is refused before anything is read.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _too_large(limit_bytes)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit_bytes:
                raise _too_large(limit_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise bad_request("client disconnected while sending the body") from None
    return b"".join(chunks)


def _too_large(limit_bytes: int) -> APIError:
    return APIError(
        413,
        f"Request body is larger than the limit of {limit_bytes / 2**20:g} MiB.",
        code="request_too_large",
    )


async def parse_multipart(request: Request, body: bytes) -> dict[str, Any]:
    """Multipart form fields: text fields as ``str``, the file as ``(bytes, filename)``.

    ``body`` is the request body already read (and size-checked) by :func:`read_body`; it is
    handed to Starlette's public ``Request.form()`` through a request that replays it.

    Raises:
        APIError: 400 for a malformed form, repeated fields or too many parts.
    """
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:  # never asked twice: the single message says there is no more body
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=MAX_FORM_FILES,
            max_fields=MAX_FORM_FIELDS,
            max_part_size=MAX_FIELD_BYTES,
        )
    except HTTPException as exc:  # inside an app Starlette turns a bad form into a 400
        raise bad_request(f"malformed multipart form: {str(exc.detail)[:200]}") from None
    except MultiPartException as exc:  # ...and outside one it raises the parser's error
        raise bad_request(f"malformed multipart form: {str(exc.message)[:200]}") from None
    except Exception:  # python-multipart raises its own errors on broken input
        raise bad_request("malformed multipart form") from None
    fields: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if name.endswith("[]") and isinstance(value, str):  # list fields repeat by design
                fields.setdefault(name, []).append(value)
                continue
            if name in fields:
                raise bad_request(f"form field {name[:40]!r} is repeated", param=name[:40])
            if isinstance(value, UploadFile):
                fields[name] = (await value.read(), value.filename or "")
            else:
                fields[name] = value
    finally:
        await form.close()
    return fields

"""OpenAI-style error objects: ``{"error": {"message", "type", "param", "code"}}``.

Every client mistake becomes an :class:`APIError` with a 4xx status and a reason; a model
replica lost while it held the request is :func:`unavailable` (a 503 with ``Retry-After``);
anything else is answered with :func:`server_error` (a generic 500 that never shows a traceback).
"""

from __future__ import annotations

from typing import Any

INVALID = "invalid_request_error"
AUTH = "authentication_error"
SERVER = "server_error"


class APIError(Exception):
    """A request the server refuses, with its HTTP status and OpenAI-style error fields.

    Args:
        status: HTTP status code (4xx for client mistakes).
        message: human-readable reason (no internals, no traceback).
        type: OpenAI error type, e.g. ``invalid_request_error``.
        param: the request field at fault, if any.
        code: machine-readable code, e.g. ``model_not_found``.
        retry_after_s: seconds to wait before retrying (sent as ``Retry-After``), if any.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,  # noqa: A002 - the OpenAI field is called `type`
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str] | None:
        """HTTP headers the response carries (``WWW-Authenticate``, ``Retry-After``)."""
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        if self.retry_after_s is not None:
            return {"Retry-After": str(self.retry_after_s)}
        return None

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str = INVALID,  # noqa: A002
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """``{"error": {...}}`` as OpenAI returns it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


def server_error() -> APIError:
    """The generic 500 answer to an unexpected fault (details are logged server-side only)."""
    return APIError(500, "The server had an error processing your request.", type=SERVER)


def unavailable(retry_after_s: int, waited_s: float | None = None) -> APIError:
    """The 503 answer when no model replica could finish the request: the one serving it was
    lost, or (``waited_s``) none took it within that many seconds."""
    message = (
        "The model replica serving this request was lost; please retry."
        if waited_s is None
        else f"No model replica could take this request within {waited_s:g} s; please retry."
    )
    return APIError(
        503,
        message,
        type=SERVER,
        code="replica_unavailable",
        retry_after_s=retry_after_s,
    )

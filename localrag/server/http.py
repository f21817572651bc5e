"""Errors in OpenAI's shape, ``{"error": {"message", "type", "code"}}``, for every failure.

A ``LocalragError`` answers with its class's ``http_status`` and its message (plus its hint); a
malformed request is a 400 naming the field; anything unexpected is a 500 that says only that,
the traceback going to the server's log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging

from localrag.errors import LocalragError

log = logging.getLogger("localrag.server")

TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error", 415: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error", 503: "server_overloaded", 507: "server_error",
}


DRAIN_BYTES = 64 * 2**20
"""How much of a refused request body is read and dropped before the answer. A client that sends
its whole body before reading (urllib, many scripts) gets the 4xx and its reason this way, not a
broken pipe; a body larger still is refused unread and the connection closed."""
DRAIN_IDLE_S = 2.0  # a client that declared more than it sends is not waited for longer than this
DRAIN_TOTAL_S = 60.0


async def drain(receive, limit: int = DRAIN_BYTES) -> None:
    """Read and drop an ASGI request body, up to ``limit`` bytes and ``DRAIN_TOTAL_S`` seconds."""
    seen = 0
    deadline = asyncio.get_running_loop().time() + DRAIN_TOTAL_S
    while seen <= limit:
        left = deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(receive(), timeout=min(DRAIN_IDLE_S, max(left, 0.0)))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return  # the client went away
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class ApiError(Exception):
    """An HTTP error the server answers with (status, message, code, extra headers)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or TYPES.get(status, "error")
        self.headers = headers or {}


def body(status: int, message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                      "code": code}}


def from_localrag(exc: LocalragError) -> ApiError:
    message = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return ApiError(exc.http_status, message, exc.code)


def install(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(err: ApiError) -> JSONResponse:
        return JSONResponse(body(err.status, err.message, err.code), status_code=err.status, headers=err.headers)

    @app.exception_handler(ApiError)
    async def _api(request, exc: ApiError):
        return respond(exc)

    @app.exception_handler(LocalragError)
    async def _localrag(request, exc: LocalragError):
        return respond(from_localrag(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return respond(ApiError(400, validation_message(exc.errors()), "invalid_request"))

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return respond(ApiError(exc.status_code, message, None, dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return respond(ApiError(500, "internal server error (see the server's log)", "internal_error"))


def validation_message(errors: list) -> str:
    """One readable line from pydantic's error list: 'messages.0.content: Field required'."""
    parts = []
    for err in errors[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        msg = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        parts.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return "invalid request: " + "; ".join(parts)

"""The JSON error shape every branch of every route ends with: `{success: false, error, code}`."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra or {}


def error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": message, "code": code}
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(exc: ValidationError) -> str:
    """First validation problem as one readable sentence, e.g. "webinarId: Input should be a
    valid integer"."""
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return "Malformed JSON body"
    location = ".".join(str(p) for p in first["loc"])
    message = first["msg"]
    if first["type"] == "value_error" and "error" in first.get("ctx", {}):
        message = str(first["ctx"]["error"])  # our validator's own words, without "Value error, "
    if first["type"] == "missing":
        return f"{location}: field required"
    return f"{location}: {message}" if location else message


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers, extra=exc.extra)

"""Errors of the API and how they look on the wire.

Every error but a validation error is ``{"error": {"code": ..., "message": ...}}``
(:class:`ErrorBody`); a 422 is FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``
naming the field and the reason, including refusals the order-manager classed as
``invalid_request`` (``"symbol: XYZ is not a known, enabled instrument"`` becomes
``loc: ["body", "symbol"]``).

A command's failure maps to a status by its code (:data:`STATUS_OF_CODE`): a refusal
is 409, a bad request 422, an unready gateway or an absent service 503, a timeout 504.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ibflow.bus.errors import RequestError

log = logging.getLogger("ibflow.api")

STATUS_OF_CODE: Final = {
    "invalid_request": 422,
    "not_found": 404,
    "refused": 409,
    "conflict": 409,
    "not_ready": 503,
    "no_responders": 503,
    "unavailable": 503,
    "timeout": 504,
    "invalid_reply": 502,
    "internal": 502,
}
"""HTTP status of each command error code (:mod:`ibflow.contracts.replies`, ``ibflow.bus.rpc``)."""

_FIELD_PREFIX: Final = re.compile(r"^([a-z_][a-z0-9_.]*): ")


class ErrorDetail(BaseModel):
    """A machine-readable code and a message for people."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error response except 422: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class ApiError(Exception):
    """An error answered with ``status`` and ``{"error": {"code", "message"}}`` (or, for
    422, a validation-style ``detail`` naming ``field``)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    @classmethod
    def from_command(cls, exc: RequestError, subject: str) -> ApiError:
        """The API error for a failed command on ``subject``."""
        status = STATUS_OF_CODE.get(exc.code, 502)
        message = exc.message
        if exc.code == "timeout":
            message = f"no answer from {subject} in time; the outcome is unknown: {exc.message}"
        elif exc.code == "no_responders":
            message = f"the service behind {subject} is not running"
        return cls(status, exc.code, message)


def validation_detail(message: str, *, location: str = "body") -> list[dict[str, Any]]:
    """A 422 ``detail`` list for ``message``; a ``field: reason`` message names the field."""
    match = _FIELD_PREFIX.match(message)
    if match is None:
        return [{"loc": [location], "msg": message, "type": "invalid_request"}]
    loc: list[str] = [location, *match.group(1).split(".")]
    return [{"loc": loc, "msg": message[match.end() :], "type": "invalid_request"}]


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON response of an error."""
    if status == 422:
        return JSONResponse({"detail": validation_detail(message)}, 422, headers=headers)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


_UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
)
"""Failures that mean "PostgreSQL is not reachable now" (503), not a bug (500)."""

_HTTP_CODES: Final = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def install_handlers(app: FastAPI) -> None:
    """Render :class:`ApiError`, HTTP errors and unexpected failures as JSON errors."""

    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:  # FastAPI's "error parsing the body": a bad body is a 422
            detail = [
                {"loc": ["body"], "msg": f"{exc.detail} (not UTF-8 JSON)", "type": "json_invalid"}
            ]
            return JSONResponse({"detail": detail}, 422)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, 422)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, _UNAVAILABLE):
            log.warning("%s %s: database unavailable: %r", request.method, request.url.path, exc)
            return error_response(503, "unavailable", "the database is not reachable; retry")
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route may answer."""
    described = {
        401: "No API key, or not a valid one",
        403: "The key's scope does not allow this",
        404: "No such resource",
        409: "Refused (halted, a risk limit, a terminal order, an idempotency conflict)",
        413: "Request body too large",
        502: "A service answered with an internal error",
        503: "Not ready (gateway disconnected, service absent, broker state unknown)",
        504: "No answer in time; the outcome is unknown",
    }
    return {status: {"model": ErrorBody, "description": described[status]} for status in statuses}

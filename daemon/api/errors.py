"""One error shape for every answer of the API: ``{"error": {"code", "message", "field"}}``.

Routes raise :class:`ApiError`; the handlers installed by :func:`install` also turn
FastAPI's own refusals (a malformed path parameter, the tus router's HTTPException) into
the same shape, so a client needs one parser for every failure.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 410: "gone", 412: "precondition_failed", 413: "too_large", 415: "unsupported_media_type",
          422: "invalid", 429: "rate_limited", 500: "internal_error", 503: "unavailable"}

# the OpenAPI description of the error body, referenced by every route's responses
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "machine-readable reason, e.g. not_found, too_large, bad_media"},
        "message": {"type": "string", "description": "what was wrong, naming the file or field"},
        "field": {"type": ["string", "null"], "description": "the request field at fault, when there is one"},
        "problems": {"type": "array", "description": "every problem, when several were found at once",
                     "items": {"type": "object"}},
    }}},
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.problems: list[dict[str, Any]] = []  # every problem, when several were found at once

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, field=self.field, headers=self.headers,
                              problems=self.problems)


def error_response(status: int, code: str, message: str, *, field: str | None = None,
                   headers: dict[str, str] | None = None, problems: list[dict[str, Any]] | None = None
                   ) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if problems and len(problems) > 1:
        body["problems"] = problems
    return JSONResponse({"error": body}, status_code=status, headers=headers or None)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status with the error body."""
    return {s: {"description": _CODES.get(s, "error").replace("_", " "),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for s in statuses}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), message,
                              headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                             for e in exc.errors())
        return error_response(400, "bad_request", problems or "invalid request", field=where)

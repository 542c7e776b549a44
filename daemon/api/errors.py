"""One error shape for every answer of the API: ``{"error": {"code", "message", "field"}}``.

Routes raise :class:`ApiError`; the handlers installed by :func:`install` also turn the
framework's own refusals (an unknown route, a method not allowed, a malformed parameter,
a form over its limits) and any unexpected exception into the same shape, so a client
needs one parser for every failure. An unexpected exception answers 500 with a message
that says nothing of the server; the log keeps the details.

No answer shows a server path: :class:`daemon.confine.PathScrubber` replaces the configured
folders (inbox, outbox, template library, ...) by what users call them, as a last line
behind messages that are written without paths in the first place.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from daemon.confine import NameRefused
from daemon.logsetup import get_logger

log = get_logger(__name__)

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


def bad_name(field: str, value: object, refused: NameRefused) -> ApiError:
    """The 400 for a name :func:`daemon.confine.confine` refused (the value shown short)."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:40] + "..." + shown[-12:]
    return ApiError(400, "bad_name", f"{field}: {shown} {refused.reason}", field=field)


def _scrubbed(request: Request, response: JSONResponse) -> JSONResponse:
    scrub = getattr(request.app.state, "scrub_paths", None)
    body = bytes(response.body).decode()
    cleaned = scrub(body) if scrub is not None else body
    if cleaned == body:
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse(json.loads(cleaned), status_code=response.status_code, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this path (asked of the router method by method:
    the router itself names only the first route's)."""
    found = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            found.append(method)
    return found


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _scrubbed(request, exc.response())

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # the framework's own: unknown routes, methods not allowed, forms over their limits
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.url.path[:100]!r}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allow = _allowed_methods(request)
            headers["Allow"] = ", ".join(allow)
            message = f"{request.method} is not allowed here; allowed: {', '.join(allow)}"
        return _scrubbed(request, error_response(exc.status_code, _CODES.get(exc.status_code, "error"), message,
                                                 headers=headers))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                             for e in errors[:10])
        return _scrubbed(request, error_response(400, "bad_request", problems[:2000] or "invalid request",
                                                 field=where))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a bug, not the caller's fault: the log has the traceback, the answer nothing of the server
        log.error("request failed", method=request.method, path=request.url.path[:200],
                  error=f"{type(exc).__name__}: {exc}"[:500])
        return error_response(500, "internal_error", "the server failed on this request; the error was logged")

"""Who may do what: the one layer every request passes before it reaches a route.

:class:`AccessGate` is ASGI middleware in front of the router. For each request it finds
the rule of its path and method, identifies the caller (an API key, a console session,
or nobody), applies the rate limit and authorises -- and only then hands the request on.
A refused request never reaches routing: no handler runs, no body is read, nothing
touches disk. Handlers learn who is calling from :func:`daemon.api.deps.caller`.

Rules, first match wins (``RULES``):

=====================================================  ==================  ===========
path                                                   methods             rule
=====================================================  ==================  ===========
``/healthz``, ``/l/…``, ``/static/…``,                 GET, HEAD           public
``/api/v1/openapi.json``, ``/api/v1/docs``
``/signin``                                            GET, HEAD, POST     public
``/signout``, ``/language`` (the language switch)      POST                public
``/new`` (the console's New job page)                  GET, HEAD           console, full
``/``, ``/jobs/…``, ``/templates`` (console pages)     GET, HEAD           console
anything else                                          GET, HEAD, OPTIONS  read
anything else                                          any other           write
=====================================================  ==================  ===========

``public`` needs nothing. ``open`` needs nothing either, but a caller who sends a valid key
is known to the route (``/readyz`` shows its details to a key only: probes carry none).
``console``: a signed-in session (or anonymous reading where
``api.console_read_only_without_key`` allows it); without one the browser is sent to the
sign-in page. ``read``: a read-only or full key, or a session. ``write``: a full key; a
write signed in by cookie must also carry ``X-Lipsyncd-Console: 1``, a header only the
console's own scripts send (a cookie rides along with requests other sites trigger).
Unknown paths fall under ``read``/``write``: nothing is public by omission.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from daemon.api.auth import SESSION_COOKIE, KeyRing, Principal, RateLimiter, Sessions, retry_after_header
from daemon.config import Config

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

CONSOLE_HEADER = "X-Lipsyncd-Console"
ANONYMOUS = "anonymous"
READ_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    methods: tuple[str, ...]
    kind: str  # public | open | console | console_full | read | write


def _rule(pattern: str, methods: tuple[str, ...], kind: str) -> Rule:
    return Rule(re.compile(pattern), methods, kind)


RULES: tuple[Rule, ...] = (
    _rule(r"/healthz|/l/.*|/static/.*|/api/v1/openapi\.json|/api/v1/docs", ("GET", "HEAD"), "public"),
    _rule(r"/readyz", ("GET", "HEAD"), "open"),
    _rule(r"/signin", ("GET", "HEAD", "POST"), "public"),
    _rule(r"/signout", ("POST",), "public"),
    _rule(r"/language", ("POST",), "public"),  # a preference cookie, before signing in too
    _rule(r"/new", ("GET", "HEAD"), "console_full"),
    _rule(r"/|/jobs/.*|/templates", ("GET", "HEAD"), "console"),
)


def rule_for(method: str, path: str) -> str:
    for rule in RULES:
        if method in rule.methods and rule.pattern.fullmatch(path):
            return rule.kind
    return "read" if method in READ_METHODS else "write"


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Gatekeeper:
    """The decisions, apart from ASGI: who is calling, and may they do this."""

    def __init__(self, cfg: Config, keys: KeyRing, sessions: Sessions, limiter: RateLimiter | None):
        self.cfg, self.keys, self.sessions, self.limiter = cfg, keys, sessions, limiter

    def viewer(self, cookies: dict[str, str]) -> Principal | None:
        """Who a browser is without an API key: everyone with ``auth = "none"``, else the
        console session's key, else an anonymous reader where that is allowed; or None."""
        if self.cfg.api.auth == "none":
            return Principal(ANONYMOUS, "full")
        who = self.sessions.check(cookies.get(SESSION_COOKIE))
        if who is None and self.cfg.api.console_read_only_without_key:
            return Principal(ANONYMOUS, "read")
        return who

    def admit(self, kind: str, method: str, headers: dict[str, str], cookies: dict[str, str],
              client: str) -> Principal | None:
        """The caller, when the rule ``kind`` admits them; Refused otherwise (None: public)."""
        if kind == "public":
            return None
        if kind == "open":
            try:
                return self._identify(headers, cookies, method)[0]
            except Refused:
                return None  # a bad key on an open route: answered as to anyone
        write = kind == "write"
        who, by_cookie = self._identify(headers, cookies, method)
        if kind in ("console", "console_full"):
            return who  # the caller sends the browser to sign in when None
        if who is None:
            raise Refused(401, "unauthorized", "send an API key: Authorization: Bearer KEY",
                          {"WWW-Authenticate": "Bearer"})
        if self.limiter is not None:
            bucket = f"key:{who.name}" if who.name != ANONYMOUS else f"addr:{client}"
            wait = self.limiter.take(bucket)
            if wait > 0:
                raise Refused(429, "rate_limited", f"more than api.rate_limit ({self.cfg.api.rate_limit}) requests; "
                              f"retry in {math.ceil(wait)} s", {"Retry-After": retry_after_header(wait)})
        if write and not who.can_write:
            raise Refused(403, "forbidden", f"the key {who.name!r} is read-only" if who.name != ANONYMOUS
                          else "sign in with an API key to change jobs")
        if write and by_cookie and headers.get(CONSOLE_HEADER.lower()) != "1":
            raise Refused(403, "forbidden", f"requests signed in by cookie must carry {CONSOLE_HEADER}: 1")
        if write and who.name == ANONYMOUS and _cross_site(headers, self.cfg):
            raise Refused(403, "forbidden", "a change requested by another web site is refused")
        return who

    def _identify(self, headers: dict[str, str], cookies: dict[str, str], method: str
                  ) -> tuple[Principal | None, bool]:
        """(the caller or None, signed in by cookie)."""
        header = headers.get("authorization")
        if header is not None and self.cfg.api.auth != "none":
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Refused(401, "unauthorized", "the Authorization header must be: Bearer KEY",
                              {"WWW-Authenticate": 'Bearer error="invalid_request"'})
            who = self.keys.lookup(token.strip())
            if who is None:
                raise Refused(401, "unauthorized", "the API key is not valid (revoked or mistyped)",
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return who, False
        who = self.viewer(cookies)
        if who is not None and who.name == ANONYMOUS and not who.can_write and method not in ("GET", "HEAD"):
            return None, False  # anonymous reading covers reading only
        return who, who is not None and who.name != ANONYMOUS


def _cross_site(headers: dict[str, str], cfg: Config) -> bool:
    """A browser's request another site made (``auth = "none"`` has no cookie to guard)."""
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"
    own = {urlsplit(cfg.api_base_url).netloc, headers.get("host", "")}
    return urlsplit(origin).netloc not in own


class AccessGate:
    """ASGI middleware: :class:`Gatekeeper`'s decision before routing; the principal in
    ``scope["state"]["principal"]``."""

    def __init__(self, app: ASGIApp, gatekeeper: Gatekeeper):
        self.app = app
        self.gatekeeper = gatekeeper

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = _headers(scope)
        cookies = _cookies(headers.get("cookie", ""))
        client = (scope.get("client") or ("?", 0))[0]
        kind = rule_for(method, path)
        try:
            who = self.gatekeeper.admit(kind, method, headers, cookies, client)
        except Refused as r:
            await _send_json(send, r.status, {"error": {"code": r.code, "message": r.message, "field": None}},
                             r.headers)
            return
        if kind in ("console", "console_full"):
            if who is None:
                query = scope.get("query_string", b"").decode("latin-1")
                target = quote(path, safe="/") + (f"?{query}" if query else "")
                await _send_redirect(send, f"/signin?{urlencode({'next': target})}")
                return
            if kind == "console_full" and not who.can_write:
                await _send_redirect(send, "/")  # a read-only session has no New job page
                return
        scope.setdefault("state", {})["principal"] = who
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        if key not in out:  # the first of repeated headers counts
            out[key] = value.decode("latin-1")
    return out


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


async def _send_json(send: Callable[[Any], Awaitable[None]], status: int, body: dict[str, Any],
                     headers: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


async def _send_redirect(send: Callable[[Any], Awaitable[None]], location: str) -> None:
    # a relative Location: never built from the Host header
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})

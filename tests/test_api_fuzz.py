"""Every route of the app (the OpenAPI document's and the console's), sent a table of
hostile inputs: names with NUL, control characters, ``..``, slashes and 300 bytes in path
parameters; the same in query parameters; deep JSON, huge multipart names and garbage as
bodies; methods no route has. Sent as a full key, a console session and nobody.

Whatever arrives: no 5xx, every error of the API in the documented shape
``{"error": {"code", "message", "field"}}``, and no server path in any answer.

Requests go out through ``http.client`` so that the request target is sent byte for byte
(an HTTP library would normalise ``/./`` and ``/../`` away).
"""

from __future__ import annotations

import collections
import http.client
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute

from daemon.api.console.routes import router as console_router
from tests.api_harness import ThreadApi, new_key, object_store, share_config
from tests.hostile_requests import BODIES, NAMES, QUERIES, RAW
from tests.daemon_harness import Share

STATUSES: collections.Counter = collections.Counter()
EXTRA_METHODS = ("PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "POST", "TRACE")


@pytest.fixture(scope="module")
def server(tmp_path_factory, store):
    root = tmp_path_factory.mktemp("fuzz")
    share = Share(root / "share")
    library = root / "library"
    library.mkdir()
    (library / "nap.jpg").write_bytes(b"not a picture")  # a non-picture: its errors must not name its path
    (share.outbox.parent / "canary.json").write_text(json.dumps({"job": "canary", "state": "done"}))
    cfg = share_config(root, share, store, paths={"templates": str(library)}, api={"rate_limit": ""},
                       limits={"max_file_size": 256 * 1024})
    with ThreadApi(cfg, object_store(cfg, store)) as api:
        api.root = root
        api.key = new_key(cfg, "fuzzer")
        yield api


def _session(server) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/signin", body=f"key={server.key}&next=/",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    cookie = resp.getheader("set-cookie", "")
    assert resp.status == 303 and cookie, resp.status
    return cookie.split(";", 1)[0]


def _routes(server) -> list[tuple[str, set[str]]]:
    """The OpenAPI document's routes, the console's, the static files and a route that is not."""
    doc = json.loads(_send(server, "GET", "/api/v1/openapi.json", {})[2])
    routes = [(path, {m.upper() for m in ops}) for path, ops in doc["paths"].items()]
    routes += [(r.path, set(r.methods)) for r in console_router.routes if isinstance(r, APIRoute)]
    routes.append(("/static/{path}", {"GET", "HEAD"}))
    routes.append(("/api/v1/nope/{x}", {"GET"}))  # no such route
    return routes


def _fill(template: str, value: str, *, raw: bool = False) -> str:
    encoded = value if raw or value in (".", "..") else quote(value, safe="")
    return re.sub(r"\{[^}]+\}", lambda _m: encoded, template)


def _send(server, method: str, target: str, headers: dict[str, str], body: bytes | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    # an answer that does not end (a stream that never closes) is a failure, not a wait
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read() if method != "HEAD" else b""
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def _check(server, method: str, target: str, status: int, headers: dict[str, str], body: bytes) -> list[str]:
    STATUSES[status] += 1
    where = f"{method} {target[:120]!r}"
    problems = []
    if status >= 500:
        problems.append(f"{where}: {status} {body[:200]!r}")
    for secret in (str(server.root), str(Path(server.root).resolve())):
        if secret.encode() in body or secret in headers.get("location", ""):
            problems.append(f"{where}: the answer shows a server path: {body[:300]!r}")
    if "location" in headers and "evil.example" in headers["location"]:
        problems.append(f"{where}: Location built from the Host header: {headers['location']}")
    api = not target.startswith(("/static/", "/jobs/", "/signin", "/templates", "/new", "/?")) and target != "/"
    if status >= 400 and api and method != "HEAD":
        try:
            error = json.loads(body)["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str) and "field" in error
        except (ValueError, KeyError, TypeError, AssertionError):
            problems.append(f"{where}: {status} is not the error shape: {body[:200]!r}")
    return problems


def test_no_input_gets_a_5xx_a_foreign_error_shape_or_a_server_path(server):
    key = {"Authorization": f"Bearer {server.key}", "Tus-Resumable": "1.0.0", "Host": "evil.example"}
    session = {"Cookie": _session(server), "X-Lipsyncd-Console": "1", "Host": "evil.example"}
    callers = [key, session, {"Host": "evil.example"}]
    problems: list[str] = []
    sent = 0
    routes = _routes(server)
    assert len(routes) > 25 and any(p == "/jobs/{name}" for p, _m in routes)
    for template, methods in routes:
        targets = [_fill(template, v) for v in NAMES] + [_fill(template, v, raw=True) for v in RAW] \
            if "{" in template else [template]
        for target in targets:
            for method in sorted(methods | set(EXTRA_METHODS)):
                for who in callers:
                    body = b"" if method in ("POST", "PATCH", "PUT") else None
                    status, headers, data = _send(server, method, target, who, body)
                    problems += _check(server, method, target, status, headers, data)
                    sent += 1
        for value in [quote(v, safe="") for v in QUERIES] + RAW:  # every query parameter the app knows, at once
            query = "&".join(f"{p}={value}" for p in ("name", "cursor", "state", "q", "limit",
                                                                       "next", "download", "index"))
            target = f"{_fill(template, 'x')}?{query}"
            for who in callers:
                status, headers, data = _send(server, "GET", target, who)
                problems += _check(server, "GET", target, status, headers, data)
                sent += 1
        if "POST" in methods or "PATCH" in methods:
            for method in methods & {"POST", "PATCH"}:
                target = _fill(template, "x" if "upload" not in template else "0" * 32)
                for ctype, body in BODIES:
                    for who in callers:
                        status, headers, data = _send(server, method, target,
                                                      {**who, "Content-Type": ctype, "Upload-Offset": "0",
                                                       "Upload-Length": "16"}, body)
                        problems += _check(server, method, target, status, headers, data)
                        sent += 1
    assert sent > 5000
    # most hostile inputs got past the gate and were refused by the handlers, by name
    assert STATUSES[400] > 300 and STATUSES[200] > 100 and STATUSES[401] > 1000, STATUSES
    assert not problems, f"{len(problems)} of {sent} answers were wrong:\n" + "\n".join(problems[:40])
    assert not (server.cfg.paths.outbox.parent / "canary.json").read_text().count("fuzz")

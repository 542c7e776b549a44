"""The HTTP front door under attack, case by case (the route fuzz test in test_api_fuzz.py
sweeps every route; the tus limits are in test_tus.py):

1. nothing is written, and no body read, before the key is checked;
2. no name from a request leads out of its folder;
4. inputs that crashed handlers are 4xx errors naming the field;
5. answers never show server paths;
6. one error shape, the framework's own errors included;
7. no redirect is built from the request's Host;
8. what is open without a key, and why.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import httpx
import pytest

from daemon.api.auth import KeyRing
from tests.api_harness import ThreadApi, auth, multipart, new_key, share_config
from tests.daemon_harness import Share

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, media):
    root = tmp_path_factory.mktemp("security")
    share = Share(root / "share")
    library = root / "library"
    library.mkdir()
    (library / "nap.jpg").write_bytes(b"not a picture at all")
    cfg = share_config(root, share, None, paths={"templates": str(library)}, api={"rate_limit": ""})
    with ThreadApi(cfg) as api:
        api.root, api.share, api.library, api.media = root, share, library, media
        api.full = new_key(cfg, "full")
        api.reader = new_key(cfg, "reader", read_only=True)
        revoked = new_key(cfg, "revoked")
        KeyRing(cfg.api_keys_file).revoke("revoked")
        api.revoked = revoked
        yield api


def raw(server, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as written (no normalisation of the target)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read() if method != "HEAD" else b""
    finally:
        conn.close()


def error_of(body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert set(error) >= {"code", "message", "field"}, error
    return error


def session_cookie(server, key: str) -> str:
    r = httpx.post(f"{server.url}/signin", data={"key": key, "next": "/"})
    assert r.status_code == 303
    return r.headers["set-cookie"].split(";", 1)[0]


# --------------------------------------------------------------------------- 1. the key first

BAD_CALLERS = {
    "no key": ({}, 401),
    "malformed header": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    "bearer without a key": ({"Authorization": "Bearer"}, 401),
    "mistyped key": ({"Authorization": "Bearer lsk_not-a-key"}, 401),
}


@pytest.mark.parametrize("who", [*BAD_CALLERS, "revoked key", "read-only key"])
def test_a_patch_without_a_valid_full_key_writes_nothing(server, who):
    created = httpx.post(f"{server.url}/api/v1/uploads", headers={**auth(server.full), **TUS, "Upload-Length": "64"})
    url = created.headers["location"]
    data = server.cfg.paths.inbox / ".lipsyncd" / "uploads" / url.rsplit("/", 1)[1]
    info = data.with_name(data.name + ".info")
    before = (data.stat().st_size, info.stat().st_mtime_ns)
    headers, status = BAD_CALLERS.get(who, ({"Authorization": f"Bearer {server.revoked}"}, 401))
    if who == "read-only key":
        headers, status = auth(server.reader), 403
    r = httpx.patch(url, content=b"EVIL", headers={**headers, **TUS, "Upload-Offset": "0",
                                                    "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == status and error_of(r.content)["code"] in ("unauthorized", "forbidden")
    assert (data.stat().st_size, info.stat().st_mtime_ns) == before
    assert httpx.head(url, headers={**auth(server.full), **TUS}).headers["upload-offset"] == "0"


def test_the_answer_comes_before_the_body_is_read(server):
    """A 100 MB submission without a key is refused at once: the server never waits for,
    reads or stores the body, and no staging folder appears."""
    api_dir = server.cfg.paths.inbox / ".lipsyncd" / "api"
    before = sorted(p.name for p in api_dir.iterdir()) if api_dir.exists() else []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 100000000\r\n\r\n--b\r\n")
        started = time.monotonic()
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401") and time.monotonic() - started < 5
    assert (sorted(p.name for p in api_dir.iterdir()) if api_dir.exists() else []) == before
    library_before = sorted(p.name for p in server.library.iterdir())
    body, ctype = multipart([("file", "evil.jpg", b"x" * 1000)])
    r = httpx.post(f"{server.url}/api/v1/templates", content=body, headers={**auth(server.reader),
                                                                           "Content-Type": ctype})
    assert r.status_code == 403 and sorted(p.name for p in server.library.iterdir()) == library_before


def test_a_console_session_changes_things_only_with_the_console_header(server):
    cookie = session_cookie(server, server.full)
    r = httpx.delete(f"{server.url}/api/v1/jobs/whatever", headers={"Cookie": cookie})
    assert r.status_code == 403 and "X-Lipsyncd-Console" in error_of(r.content)["message"]
    r = httpx.delete(f"{server.url}/api/v1/jobs/whatever", headers={"Cookie": cookie, "X-Lipsyncd-Console": "1"})
    assert r.status_code == 404  # admitted; there is just no such job


def test_a_read_only_session_has_no_new_job_page(server):
    cookie = session_cookie(server, server.reader)
    r = httpx.get(f"{server.url}/new", headers={"Cookie": cookie})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert httpx.get(f"{server.url}/new", headers={"Cookie": session_cookie(server, server.full)}).status_code == 200


# --------------------------------------------------------------------------- 2. names stay in their folders


def test_no_name_leads_out_of_its_folder(server):
    canary = server.share.outbox.parent / "canary.json"
    canary.write_text(json.dumps({"job": "canary", "state": "done", "secret": "CANARY"}))
    h = auth(server.full)
    for target in ("/api/v1/events?name=../canary", "/api/v1/events?name=..%2Fcanary", "/api/v1/jobs/..%2Fcanary",
                   "/api/v1/jobs/..%2Fcanary/events", "/api/v1/jobs/%2e%2e%2fcanary",
                   "/api/v1/templates/..%2F..%2Fshare%2Foutbox%2F..%2Fcanary.json/thumbnail"):
        status, _headers, body = raw(server, "GET", target, h)
        assert status in (400, 404) and b"CANARY" not in body, (target, status, body)
        assert error_of(body)["field"] in ("name", None)
    status, _h, body = raw(server, "GET", "/api/v1/events?name=../canary", h)
    assert status == 400 and error_of(body) == {"code": "bad_name", "field": "name",
                                                 "message": "name: '../canary' contains '/' or '\\'; give a plain name"}
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=h, json={"text": "hi", "template_name": "../../etc/passwd"})
    assert r.status_code == 400 and error_of(r.content)["field"] == "template_name"


# --------------------------------------------------------------------------- 4. no 500 from input


@pytest.mark.parametrize("method,target,field", [
    ("GET", "/api/v1/jobs/a%00b", "name"), ("DELETE", "/api/v1/jobs/a%00b", "name"),
    ("GET", "/api/v1/jobs/a%00b/events", "name"), ("POST", "/api/v1/jobs/a%00b/retry", "name"),
    ("GET", "/api/v1/jobs/" + "a" * 300, "name"), ("DELETE", "/api/v1/templates/" + "x" * 255 + ".jpg", "name"),
    ("GET", "/api/v1/templates/" + "x" * 260 + ".jpg/thumbnail", "name"),
    ("HEAD", "/api/v1/uploads/%00", None), ("DELETE", "/api/v1/uploads/.", None),
    ("GET", "/jobs/%00", "name"),
])
def test_hostile_names_are_400s_naming_the_field(server, method, target, field):
    headers = {**auth(server.full), **TUS}
    if target.startswith("/jobs/"):
        headers = {"Cookie": session_cookie(server, server.full)}
    status, _h, body = raw(server, method, target, headers)
    assert 400 <= status < 500, (target, status, body)
    if method != "HEAD":
        error = error_of(body)
        assert field is None or error["field"] == field, error


def test_hostile_bodies_are_400s(server):
    h = auth(server.full)
    r = httpx.post(f"{server.url}/api/v1/jobs", headers={**h, "Content-Type": "application/json"},
                   content=b"[" * 10000 + b"]" * 10000)
    assert r.status_code == 400 and "JSON" in error_of(r.content)["message"]
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=h, json={"text": "hi", "template_name": "a\x00.mp4"})
    assert r.status_code == 400 and error_of(r.content)["field"] == "template_name"
    for field, filename in (("f" * (1 << 20), "a.wav"), ("audio", "f" * (1 << 20) + ".wav")):
        body = (f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n\r\nx\r\n'
                "--b--\r\n").encode()
        for path in ("/api/v1/jobs", "/api/v1/templates"):
            r = httpx.post(server.url + path, content=body,
                           headers={**h, "Content-Type": "multipart/form-data; boundary=b"})
            assert r.status_code == 400 and error_of(r.content)["code"] == "bad_request", (path, r.text[:200])
    import base64

    deep = base64.urlsafe_b64encode(b"[" * 700 + b"]" * 700).decode().rstrip("=")
    for path in ("/api/v1/jobs", "/"):
        headers = h if path != "/" else {"Cookie": session_cookie(server, server.full)}
        r = httpx.get(server.url + path, params={"cursor": deep}, headers=headers)
        assert r.status_code in (200, 400), r.status_code  # the console shows the first page instead
    r = httpx.get(f"{server.url}/api/v1/jobs", params={"cursor": deep}, headers=h)
    assert r.status_code == 400 and error_of(r.content)["field"] == "cursor"


# --------------------------------------------------------------------------- 5. no server paths


def test_answers_name_files_as_users_know_them(server):
    h = auth(server.full)
    r = httpx.get(f"{server.url}/api/v1/templates/nap.jpg/thumbnail", headers=h)
    assert r.status_code == 404 and str(server.root) not in r.text and "nap.jpg" in r.text
    r = httpx.get(f"{server.url}/api/v1/templates/{'y' * 254}.jpg/thumbnail", headers=h)
    assert r.status_code == 400 and str(server.root) not in r.text
    r = httpx.get(f"{server.url}/readyz", headers=h)
    assert str(server.root) not in r.text
    body, ctype = multipart([("file", "picture.jpg", b"not a jpeg")])
    r = httpx.post(f"{server.url}/api/v1/templates", content=body, headers={**h, "Content-Type": ctype})
    assert r.status_code == 422 and str(server.root) not in r.text and "picture.jpg" in r.text
    assert not (server.library / "picture.jpg").exists()  # a file that is no picture never joins the library
    assert not [p for p in server.library.iterdir() if p.name.startswith(".")]  # nor stays half-way


# --------------------------------------------------------------------------- 6. one error shape


def test_the_frameworks_own_errors_have_the_shape_too(server, monkeypatch):
    h = auth(server.full)
    r = httpx.get(f"{server.url}/api/v1/nope", headers=h)
    assert r.status_code == 404 and error_of(r.content)["code"] == "not_found"
    r = httpx.put(f"{server.url}/api/v1/jobs", headers=h)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert error_of(r.content)["code"] == "method_not_allowed"
    parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nx\r\n' for _ in range(1100))
    r = httpx.post(f"{server.url}/api/v1/jobs", content=parts + b"--b--\r\n",
                   headers={**h, "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code in (400, 413) and error_of(r.content)["code"]

    def crash(*_a, **_kw):
        raise RuntimeError(f"bug near {server.root}/secret")
    monkeypatch.setattr(server.app.state.services.desk, "find", crash)
    r = httpx.get(f"{server.url}/api/v1/jobs/anything", headers=h)
    assert r.status_code == 500 and error_of(r.content)["code"] == "internal_error"
    assert "secret" not in r.text and str(server.root) not in r.text and "Traceback" not in r.text


# --------------------------------------------------------------------------- 7. redirects


def test_no_redirect_is_built_from_the_request(server):
    for target in ("/l/%2e%2e%2f", "/l/..%2F", "/api/v1/jobs/", "/api/v1/uploads/abc/", "/l/"):
        status, headers, body = raw(server, "GET", target, {**auth(server.full), "Host": "evil.example"})
        assert status == 404 and "location" not in headers, (target, status, headers)
        assert error_of(body)["code"] == "not_found"
    status, headers, _b = raw(server, "GET", "/jobs/x", {"Host": "evil.example"})
    assert status == 303 and headers["location"].startswith("/signin?")  # relative


def test_locations_come_from_the_configuration_not_the_host_header(tmp_path, media):
    share = Share(tmp_path / "share")
    cfg = share_config(tmp_path, share, None, api={"public_url": "", "rate_limit": ""})
    base = f"http://127.0.0.1:{cfg.api.port}"  # api.bind and api.port, as no public_url is set
    with ThreadApi(cfg) as api:
        key = new_key(cfg, "k")
        r = httpx.post(f"{api.url}/api/v1/uploads", headers={**auth(key), **TUS, "Upload-Length": "4",
                                                             "Host": "evil.example"})
        assert r.status_code == 201 and r.headers["location"].startswith(f"{base}/api/v1/uploads/")
        with open(media.audio, "rb") as a, open(media.template, "rb") as t:
            r = httpx.post(f"{api.url}/api/v1/jobs", headers={**auth(key), "Host": "evil.example"},
                           files=[("audio", ("talk.wav", a)), ("template", ("anna.mp4", t))])
        assert r.status_code == 202 and r.headers["location"] == f"{base}/api/v1/jobs/talk", r.text
        assert "evil.example" not in r.text


# --------------------------------------------------------------------------- 8. what is open


def test_only_health_links_signin_static_and_the_api_description_are_open(server):
    # /readyz answers probes, which carry no key: whether ready, never why
    probe = httpx.get(f"{server.url}/readyz")
    assert probe.status_code == 503 and probe.json()["checks"]["storage"] == {"ok": False}
    detailed = httpx.get(f"{server.url}/readyz", headers=auth(server.full)).json()["checks"]["storage"]
    assert detailed["ok"] is False and detailed["error"]
    for path in ("/healthz", "/api/v1/openapi.json", "/api/v1/docs", "/signin", "/static/console.css"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert httpx.get(f"{server.url}/l/not-a-token").status_code == 404  # public, and a forged token is nothing
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    open_ops = sorted(op["operationId"] for item in doc["paths"].values() for op in item.values()
                      if op.get("security") == [])
    assert open_ops == ["healthz", "openLink", "readyz"]
    assert doc["security"] == [{"bearerAuth": []}]
    for method, path in [("GET", "/metrics"), ("GET", "/api/v1/status"),
                         ("GET", "/api/v1/templates"), ("OPTIONS", "/api/v1/uploads"), ("GET", "/api/v1/nope")]:
        assert httpx.request(method, server.url + path).status_code == 401, (method, path)


def test_auth_none_refuses_changes_another_site_asks_for(tmp_path):
    share = Share(tmp_path / "share")
    cfg = share_config(tmp_path, share, None, api={"auth": "none", "rate_limit": ""})
    with ThreadApi(cfg) as api:
        r = httpx.delete(f"{api.url}/api/v1/jobs/x", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = httpx.delete(f"{api.url}/api/v1/jobs/x", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        assert httpx.delete(f"{api.url}/api/v1/jobs/x").status_code == 404  # a script on this machine
        assert httpx.delete(f"{api.url}/api/v1/jobs/x", headers={"Origin": api.url}).status_code == 404

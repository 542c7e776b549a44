"""The HTTP API's front door without a daemon: keys, rate limits, size limits, hostile file
names, URLs into the private network, validation, withdrawal, the OpenAPI document.

Each test runs the real app on uvicorn on a free port with a share of its own; what a
request leaves on disk is checked file by file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from daemon.api.auth import KeyRing
from tests.api_harness import ThreadApi, auth, multipart, new_key, share_config
from tests.daemon_harness import Share, free_port


@pytest.fixture
def share(tmp_path) -> Share:
    return Share(tmp_path / "share")


def api(tmp_path, share, **sections) -> ThreadApi:
    return ThreadApi(share_config(tmp_path, share, None, **sections))


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def post_job(server: ThreadApi, key: str | None, media, **data) -> httpx.Response:
    headers = auth(key) if key else {}
    with open(media.audio, "rb") as a, open(media.template, "rb") as t:
        return httpx.post(f"{server.url}/api/v1/jobs", headers=headers, data=data, timeout=30,
                          files=[("audio", ("talk.wav", a)), ("template", ("anna.mp4", t))])


def published(share: Share) -> dict:
    (manifest,) = share.inbox.glob("*.job.json")
    return json.loads(manifest.read_text())


# --------------------------------------------------------------------------- keys


def test_every_route_but_health_and_links_needs_a_valid_key(tmp_path, share, media):
    with api(tmp_path, share) as server:
        full = new_key(server.cfg, "ci")
        reader = new_key(server.cfg, "dashboard", read_only=True)
        for method, path in [("GET", "/api/v1/jobs"), ("GET", "/api/v1/jobs/x"), ("POST", "/api/v1/jobs"),
                             ("DELETE", "/api/v1/jobs/x"), ("GET", "/metrics"),
                             ("POST", "/api/v1/uploads")]:
            r = httpx.request(method, server.url + path)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
            wrong = httpx.request(method, server.url + path, headers=auth("lsk_not-a-key"))
            assert wrong.status_code == 401
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/l/abc.def").status_code == 404  # no key needed, just not a link

        assert httpx.get(f"{server.url}/api/v1/jobs", headers=auth(reader)).status_code == 200
        denied = post_job(server, reader, media)
        assert denied.status_code == 403 and "read-only" in denied.json()["error"]["message"]
        assert post_job(server, full, media).status_code == 202

        # revoking works at once on the running server
        assert KeyRing(server.cfg.api_keys_file).revoke("ci")
        assert httpx.get(f"{server.url}/api/v1/jobs", headers=auth(full)).status_code == 401
    ring = json.loads(server.cfg.api_keys_file.read_text())
    assert full not in json.dumps(ring) and reader not in json.dumps(ring)  # hashes only
    assert os.stat(server.cfg.api_keys_file).st_mode & 0o777 == 0o600


def test_api_key_command_creates_lists_and_revokes(tmp_path, share, capsys):
    from daemon.cli import main

    cfg = share_config(tmp_path, share, None)
    assert main(["api-key", "create", "github-actions", "-c", str(cfg.source)]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("lsk_") and len(key) > 40
    assert main(["api-key", "-c", str(cfg.source), "list"]) == 0
    listing = capsys.readouterr().out
    assert "github-actions" in listing and key not in listing
    assert main(["api-key", "create", "github-actions", "-c", str(cfg.source)]) == 1  # names are unique
    assert "exists already" in capsys.readouterr().err
    assert main(["api-key", "revoke", "github-actions", "-c", str(cfg.source)]) == 0
    assert main(["api-key", "revoke", "github-actions", "-c", str(cfg.source)]) == 1


def test_rate_limit_answers_429_with_retry_after(tmp_path, share):
    with api(tmp_path, share, api={"rate_limit": "3/min"}) as server:
        key, other = new_key(server.cfg, "busy"), new_key(server.cfg, "calm")
        codes = [httpx.get(f"{server.url}/api/v1/jobs", headers=auth(key)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = httpx.get(f"{server.url}/api/v1/jobs", headers=auth(key))
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 20
        assert r.json()["error"]["code"] == "rate_limited"
        assert httpx.get(f"{server.url}/api/v1/jobs", headers=auth(other)).status_code == 200  # per key


def test_auth_none_is_refused_on_a_public_bind(tmp_path, share):
    from daemon.errors import ConfigError

    with pytest.raises(ConfigError, match="api.auth"):
        share_config(tmp_path, share, None, api={"auth": "none", "bind": "0.0.0.0"})


# --------------------------------------------------------------------------- submitting


def test_submitted_job_is_published_whole_into_the_inbox(tmp_path, share, media):
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        r = post_job(server, key, media, name="Quarterly update", engine="warp", link_lifetime="3d", priority="5",
                     output_name="q3")
    assert r.status_code == 202, r.text
    assert r.json()["name"] == "Quarterly update"
    manifest = published(share)
    assert manifest == {"audio": "Quarterly update/talk.wav", "templates": ["Quarterly update/anna.mp4"],
                        "engine": "warp", "link_lifetime": 259200.0, "priority": 5, "output_name": "q3"}
    assert (share.inbox / "Quarterly update" / "talk.wav").read_bytes() == media.audio.read_bytes()
    assert (share.inbox / "Quarterly update" / "anna.mp4").read_bytes() == media.template.read_bytes()
    # nothing else: no staging leftovers, no partial files
    assert files_under(share.inbox) == {"Quarterly update.job.json", "Quarterly update/talk.wav",
                                        "Quarterly update/anna.mp4"}


def test_every_option_problem_is_reported_at_once(tmp_path, share, media):
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth(key),
                       json={"engine": "magic", "priority": "999", "link_lifetime": "30d"})
    assert r.status_code == 400
    err = r.json()["error"]
    fields = [p["field"] for p in err["problems"]]
    assert fields == ["engine", "link_lifetime", "priority", "audio", "template"], err
    assert err["field"] == "engine" and "magic" in err["message"]
    assert files_under(share.inbox) == set()


def test_bad_media_is_refused_at_once_naming_the_file(tmp_path, share, media):
    body, ctype = multipart([("audio", "speech.wav", b"RIFF not really a wave file at all" * 10),
                             ("template", "anna.mp4", media.template.read_bytes())])
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={**auth(key), "Content-Type": ctype}, content=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "audio" and err["message"].startswith("speech.wav:")
    assert files_under(share.inbox) == set()  # the staging folder went with the refusal


def test_wrong_kind_and_unknown_fields_are_refused(tmp_path, share, media):
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        body, ctype = multipart([("audio", "notes.txt", b"hello"), ("template", "anna.mp4", b"x")])
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={**auth(key), "Content-Type": ctype}, content=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_file"
        assert "'notes.txt'" in r.json()["error"]["message"] and r.json()["error"]["field"] == "audio"
        r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth(key), json={"audio_url": "x", "colour": "red"})
        assert r.status_code == 400 and r.json()["error"] == {
            "code": "unknown_field", "field": "colour",
            "message": "colour: unknown field; allowed: audio_url, audio_upload, template_url, template_name, "
                       "template_upload, name, engine, link_lifetime, callback_url, output_name, priority, "
                       "resolution, aspect, fps, watermark, watermark_position, watermark_margin, "
                       "watermark_opacity, watermark_scale, intro, outro, subtitles, subtitle_url, text, voice"}
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={**auth(key), "Content-Type": "text/plain"}, content=b"x")
        assert r.status_code == 415
    assert files_under(share.inbox) == set()


@pytest.mark.parametrize("filename", [
    "../../../../tmp/evil.wav",                 # traversal
    "/etc/cron.d/evil.wav",                     # absolute
    "C:\\Windows\\System32\\evil.wav",          # a Windows path
    "ev\x00il.wav",                             # NUL
    "evil\u202ev.wav",                          # right-to-left override
    "\uff0e\uff0e\uff0fescape.wav",             # full-width dots and solidus (NFKC: ../)
    "..\u2215..\u2215escape.wav",               # division slash
    "\u200bzero\u200dwidth.wav",                # zero-width characters
    ".hidden.wav",                              # a dot-file the daemon would ignore
])
def test_hostile_file_names_land_inside_the_job_folder_or_nowhere(tmp_path, share, media, filename):
    outside_before = files_under(tmp_path)
    body, ctype = multipart([("audio", filename, media.audio.read_bytes()),
                             ("template", "anna.mp4", media.template.read_bytes())], {"name": filename})
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={**auth(key), "Content-Type": ctype}, content=body)
    created = files_under(tmp_path) - outside_before
    created -= {p for p in created if p.startswith("state-") or p == "api.toml"}  # config, key file, link secret
    if r.status_code != 202:
        assert r.status_code == 400 and created == set(), (r.text, created)
        return
    name = r.json()["name"]
    manifest = published(share)
    audio = manifest["audio"]
    folder, file = audio.split("/")
    assert folder == name and "/" not in name and "\\" not in name and "\x00" not in name + file
    assert not name.startswith(".") and not file.startswith(".")
    assert all(ch.isprintable() and ch not in "\u202e\u200b\u200d" for ch in name + file)
    assert created == {f"share/inbox/{name}.job.json", f"share/inbox/{audio}", f"share/inbox/{name}/anna.mp4"}


def test_oversized_requests_answer_413_and_leave_nothing(tmp_path, share, media):
    with api(tmp_path, share, limits={"max_file_size": 8192, "max_templates_per_job": 2}) as server:
        key = new_key(server.cfg, "k")
        body, ctype = multipart([("audio", "talk.wav", b"\0" * 20000), ("template", "a.mp4", b"x")])
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={**auth(key), "Content-Type": ctype}, content=body)
        assert r.status_code == 413 and r.json()["error"]["field"] == "audio", r.text
        # a declared length beyond every limit is refused before a byte is read
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                      f"Content-Type: {ctype}\r\nContent-Length: {10**12}\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 413")
        templates = [("template", f"t{i}.mp4", b"x") for i in range(3)]
        body, ctype = multipart([("audio", "talk.wav", b"x"), *templates])
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={**auth(key), "Content-Type": ctype}, content=body)
        assert r.status_code == 413 and "max_templates_per_job" in r.json()["error"]["message"]
        r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth(key), json={"name": "x" * 300_000})
        assert r.status_code == 413
        # a tus upload larger than the limit is refused at creation... or at the byte that crosses it
        r = httpx.post(f"{server.url}/api/v1/uploads", headers={**auth(key), "Tus-Resumable": "1.0.0",
                                                                "Upload-Length": "100000"})
        if r.status_code == 201:
            patch = httpx.patch(r.headers["location"], content=b"\0" * 100000, headers={
                **auth(key), "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream"})
            assert patch.status_code == 413
        else:
            assert r.status_code == 413
    assert not [f for f in files_under(share.inbox) if not f.startswith(".lipsyncd/uploads/")]


def test_urls_into_the_private_network_are_refused(tmp_path, share, media):
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        for field, url in [("audio_url", f"http://127.0.0.1:{free_port()}/talk.wav"),
                           ("audio_url", "http://169.254.169.254/latest/meta-data/"),
                           ("audio_url", "http://[::ffff:10.0.0.1]/a.wav"),
                           ("audio_url", "http://localhost/a.wav"),
                           ("audio_url", "file:///etc/passwd"),
                           ("template_url", "http://192.168.1.10/anna.mp4"),
                           ("callback_url", "http://10.1.2.3/hook")]:
            body = {"audio_url": "http://unused.invalid/a.wav", "template_name": "x", field: url}
            r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth(key), json=body)
            assert r.status_code == 400, (field, url, r.text)
            err = r.json()["error"]
            problems = err.get("problems") or [err]
            assert any(p["field"] == field and p["code"] in ("url_refused", "bad_url") for p in problems), err
    assert files_under(share.inbox) == set()


def test_a_waiting_job_is_withdrawn_by_delete(tmp_path, share, media):
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        name = post_job(server, key, media, name="oops").json()["name"]
        state = httpx.get(f"{server.url}/api/v1/jobs/{name}", headers=auth(key)).json()
        assert state["state"] == "waiting"
        r = httpx.delete(f"{server.url}/api/v1/jobs/{name}", headers=auth(key))
        assert r.status_code == 200 and r.json()["action"] == "withdrawn"
        assert httpx.get(f"{server.url}/api/v1/jobs/{name}", headers=auth(key)).status_code == 404
    assert files_under(share.inbox) == set()


def test_job_list_pages_newest_first_with_a_cursor(tmp_path, share):
    from tests.outbox_files import new_document, sidecar_path, write

    for i in range(7):
        doc = new_document(job=f"job-{i}", job_id=f"job-{i}-20261120T100000Z-abcdef", host="h", inputs={},
                           engine="warp", state="failed")
        doc.update(created_at=f"2026-11-2{i}T10:00:00Z", error={"code": "x", "message": "y", "retryable": False})
        if i % 2:
            doc["state"] = "expired"
        write(sidecar_path(share.outbox, f"job-{i}"), doc)
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        seen, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = httpx.get(f"{server.url}/api/v1/jobs", headers=auth(key), params=params).json()
            seen += [j["job"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [f"job-{i}" for i in reversed(range(7))]
        done = httpx.get(f"{server.url}/api/v1/jobs", headers=auth(key), params={"state": "expired"}).json()
        assert [j["job"] for j in done["jobs"]] == ["job-5", "job-3", "job-1"]
        bad = httpx.get(f"{server.url}/api/v1/jobs", headers=auth(key), params={"state": "finished"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "state"


def test_readyz_says_what_is_not_ready(tmp_path, share):
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        r = httpx.get(f"{server.url}/readyz", headers=auth(key))
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["inbox"]["ok"] is True and checks["storage"]["ok"] is False
        shutil.rmtree(share.inbox)
        share.inbox.write_text("not a folder")
        r = httpx.get(f"{server.url}/readyz", headers=auth(key))
        assert r.status_code == 503 and r.json()["checks"]["inbox"]["ok"] is False


# --------------------------------------------------------------------------- the document


def test_openapi_document_validates_and_suits_a_workflow_tool_import(tmp_path, share):
    from openapi_spec_validator import validate

    with api(tmp_path, share) as server:
        doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
        page = httpx.get(f"{server.url}/api/v1/docs")
    validate(doc)
    assert doc["servers"] == [{"url": server.cfg.api_base_url}]
    ops = {op["operationId"]: (method, path, op) for path, item in doc["paths"].items() for method, op in item.items()}
    assert len(ops) == sum(len(item) for item in doc["paths"].values())  # unique ids
    for name in ("submitJob", "getJob", "listJobs", "jobEvents", "deleteJob", "retryJob", "openLink", "healthz",
                 "readyz", "metrics", "createUpload", "appendToUpload", "uploadOffset", "deleteUpload"):
        assert name in ops, name
        _method, _path, op = ops[name]
        assert op.get("summary"), name
        for p in op.get("parameters", []):
            if not p["name"].lower().startswith(("upload-", "tus-", "content-", "uuid")):
                assert p.get("description"), (name, p["name"])
    body = ops["submitJob"][2]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert "bearerAuth" in json.dumps(doc["components"]["securitySchemes"]) or doc["components"]["securitySchemes"]
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert all(f"id='{op}'" in page.text for op in ops) and "<script" not in page.text


def test_doctor_reports_the_apis_keys_and_link_secret(tmp_path, share, capsys):
    from daemon.cli import main

    cfg = share_config(tmp_path, share, None)
    main(["doctor", "-c", str(cfg.source)])
    out = capsys.readouterr().out
    assert "WARN api keys: none yet" in out and "WARN link secret" in out
    new_key(cfg, "ci")
    with api(tmp_path, share):  # the first start makes the secret
        pass
    main(["doctor", "-c", str(cfg.source)])
    out = capsys.readouterr().out
    assert "ok   api keys: 1 in" in out and f"ok   link secret: {cfg.link_secret_file}" in out


def test_the_consoles_advice_is_the_readmes_error_table():
    """The console tells a failed job's owner what to do with the README's own words."""
    import re

    from daemon.reporting.advice import ERROR_ADVICE
    from tests.daemon_harness import REPO

    readme = (REPO / "README.md").read_text()
    start = readme.index("`error.code` is one of the codes below")
    rows = dict((code, (meaning, todo)) for code, meaning, todo in
                re.findall(r"^\| `(\w+)` \| (.+?) \| (.+?) \|$", readme[start:start + 12000], re.M))
    assert rows == ERROR_ADVICE


def test_finishing_options_text_and_subtitles_are_published_as_manifest_keys(tmp_path, share, media):
    srt = b"1\n00:00:00,200 --> 00:00:01,000\nHello\n"
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        with open(media.template, "rb") as t:
            r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth(key), timeout=30,
                           data={"text": "Hello and welcome", "voice": "en-us", "resolution": "720p", "aspect": "9:16",
                                 "fps": "30", "watermark": "logo.png", "watermark_position": "top-left",
                                 "watermark_opacity": "0.5", "subtitles": "burn", "intro": "intro.mp4"},
                           files=[("template", ("anna.mp4", t)), ("subtitle_file", ("captions.srt", srt))])
    assert r.status_code == 202, r.text
    manifest = published(share)
    name = r.json()["name"]
    assert manifest == {"templates": [f"{name}/anna.mp4"], "text": "Hello and welcome", "voice": "en-us",
                        "resolution": "720p", "aspect": "9:16", "fps": 30.0, "subtitles": "burn",
                        "intro": "intro.mp4", "subtitle_file": f"{name}/captions.srt",
                        "watermark": {"image": "logo.png", "position": "top-left", "opacity": 0.5}}
    assert (share.inbox / name / "captions.srt").read_bytes() == srt


def test_bad_finishing_options_are_all_reported(tmp_path, share, media):
    with api(tmp_path, share) as server:
        key = new_key(server.cfg, "k")
        r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth(key),
                       json={"resolution": "huge", "aspect": "3:7", "fps": "fast", "watermark": "logo.gif",
                             "subtitles": "loud", "text": "hi", "audio_url": "https://example.com/a.wav",
                             "template_name": "x.png"})
    assert r.status_code == 400
    fields = [p["field"] for p in r.json()["error"]["problems"]]
    for want in ("resolution", "aspect", "fps", "watermark", "subtitles", "audio"):
        assert want in fields, fields  # audio: text and audio_url both given
    assert files_under(share.inbox) == set()

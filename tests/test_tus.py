"""The tus 1.0 server (``/api/v1/uploads``) on its own: the protocol's answers, its limits,
uploads owned by their key, and two independent clients -- tuspy (Python) and
tus-js-client (what web pages use, run under Node.js) -- uploading and resuming.

The end-to-end path (an interrupted upload resumed and fed into a rendered job) is in
test_api_clients.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.api_harness import ThreadApi, auth, new_key, share_config
from tests.daemon_harness import REPO, Share

TUS = {"Tus-Resumable": "1.0.0"}
MAX = 64 * 1024  # limits.max_file_size of this module's server
OCTETS = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tus")
    share = Share(root / "share")
    cfg = share_config(root, share, None, limits={"max_file_size": MAX}, api={"rate_limit": ""})
    with ThreadApi(cfg) as api:
        api.full = new_key(cfg, "uploader")
        api.other = new_key(cfg, "someone-else")
        api.reader = new_key(cfg, "reader", read_only=True)
        yield api


def uploads(server) -> Path:
    return server.cfg.paths.inbox / ".lipsyncd" / "uploads"


def create(server, length: int | str, *, key: str | None = None, **headers) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/uploads", headers={
        **auth(key or server.full), **TUS, "Upload-Length": str(length), **headers})


def head(server, url: str, key: str | None = None) -> httpx.Response:
    return httpx.head(url, headers={**auth(key or server.full), **TUS})


def patch(server, url: str, offset: int, data: bytes, key: str | None = None, **headers) -> httpx.Response:
    return httpx.patch(url, content=data, headers={**auth(key or server.full), **TUS, **OCTETS,
                                                    "Upload-Offset": str(offset), **headers})


def test_discovery_answers_with_and_without_the_slash(server):
    for path in ("/api/v1/uploads", "/api/v1/uploads/"):
        r = httpx.options(server.url + path, headers={**auth(server.full), **TUS})
        assert r.status_code == 204, (path, r.text)
        assert r.headers["tus-version"] == "1.0.0" and r.headers["tus-max-size"] == str(MAX)
        assert set(r.headers["tus-extension"].split(",")) == {"creation", "creation-with-upload", "termination",
                                                             "expiration"}
    assert httpx.options(f"{server.url}/api/v1/uploads").status_code == 401  # discovery needs a key too


def test_create_send_in_pieces_and_resume_from_the_servers_offset(server):
    meta = "filename " + base64.b64encode("take one.mp4".encode()).decode()
    r = create(server, 10000, **{"Upload-Metadata": meta})
    assert r.status_code == 201 and r.headers["upload-offset"] == "0" and "upload-expires" in r.headers
    url = r.headers["location"]
    assert url.startswith(server.cfg.api.public_url)  # built from api.public_url, never the Host header
    assert patch(server, url, 0, b"a" * 4000).headers["upload-offset"] == "4000"
    wrong = patch(server, url, 3000, b"b" * 10)
    assert wrong.status_code == 409 and "4000" in wrong.json()["error"]["message"]
    h = head(server, url)
    assert (h.status_code, h.headers["upload-offset"], h.headers["upload-length"]) == (200, "4000", "10000")
    assert h.headers["upload-metadata"] == meta and h.headers["cache-control"] == "no-store"
    assert patch(server, url, 4000, b"c" * 6000).headers["upload-offset"] == "10000"
    assert (uploads(server) / url.rsplit("/", 1)[1]).read_bytes() == b"a" * 4000 + b"c" * 6000
    assert httpx.delete(url, headers={**auth(server.full), **TUS}).status_code == 204
    assert head(server, url).status_code == 404


@pytest.mark.parametrize("length", ["-1", "-1000", str(10 ** 20), "1e6", "", "0x10", "12+"])
def test_a_length_that_is_not_a_size_is_refused(server, length):
    r = create(server, length)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("Upload-Length")


def test_a_length_over_the_limit_is_413_with_the_limit(server):
    before = set(os.listdir(uploads(server))) if uploads(server).exists() else set()
    r = create(server, MAX + 1)
    assert r.status_code == 413 and r.headers["tus-max-size"] == str(MAX)
    assert "limits.max_file_size" in r.json()["error"]["message"]
    assert (set(os.listdir(uploads(server))) if uploads(server).exists() else set()) == before


def test_nothing_is_ever_written_past_the_declared_length(server):
    # creation-with-upload: 16 declared, 3 MiB sent
    before = set(os.listdir(uploads(server))) if uploads(server).exists() else set()
    r = httpx.post(f"{server.url}/api/v1/uploads", content=b"x" * (3 << 20),
                   headers={**auth(server.full), **TUS, **OCTETS, "Upload-Length": "16"})
    assert r.status_code == 413
    assert set(os.listdir(uploads(server))) == before  # the refused upload is gone entirely

    # a PATCH whose body runs past the length (declared, and without Content-Length)
    url = create(server, 100).headers["location"]
    assert patch(server, url, 0, b"y" * 60).headers["upload-offset"] == "60"
    assert patch(server, url, 60, b"z" * 41).status_code == 413

    def chunks():
        yield b"z" * 30
        yield b"z" * 30
    r = httpx.patch(url, content=chunks(), headers={**auth(server.full), **TUS, **OCTETS, "Upload-Offset": "60"})
    assert r.status_code == 413
    assert head(server, url).headers["upload-offset"] == "60"
    assert (uploads(server) / url.rsplit("/", 1)[1]).stat().st_size == 60


def test_an_upload_belongs_to_the_key_that_created_it(server):
    url = create(server, 100).headers["location"]
    patch(server, url, 0, b"mine")
    for key in (server.other, server.reader):
        assert head(server, url, key).status_code == 404
    assert patch(server, url, 4, b"theirs", server.other).status_code == 404
    assert httpx.delete(url, headers={**auth(server.other), **TUS}).status_code == 404
    assert patch(server, url, 4, b"ro", server.reader).status_code == 403
    assert head(server, url).headers["upload-offset"] == "4"
    # and a submission by another key cannot use it either
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth(server.other),
                   json={"audio_upload": url, "template_name": "x.mp4"})
    assert r.status_code in (400, 404) and "audio_upload" in r.text


def test_protocol_errors_are_named(server):
    url = create(server, 10).headers["location"]
    r = httpx.patch(url, content=b"x", headers={**auth(server.full), **TUS, "Upload-Offset": "0",
                                                 "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = httpx.patch(url, content=b"x", headers={**auth(server.full), **OCTETS, "Upload-Offset": "0"})
    assert r.status_code == 412 and r.headers["tus-version"] == "1.0.0"
    r = patch(server, url, 0, b"x", **{"Upload-Offset": "-5"})
    assert r.status_code == 400 and "Upload-Offset" in r.json()["error"]["message"]
    r = create(server, 10, **{"Upload-Metadata": "filename not-base64!"})
    assert r.status_code == 400 and "Upload-Metadata" in r.json()["error"]["message"]
    for bad in ("%00", "..", "0" * 31, "g" * 32, "x" * 300):
        r = head(server, f"{server.url}/api/v1/uploads/{bad}")
        assert r.status_code in (400, 404), (bad, r.status_code)


def test_tuspy_uploads_and_resumes(server, tmp_path):
    from tusclient import client as tus_client

    data = os.urandom(50_000)
    (tmp_path / "clip.mp4").write_bytes(data)
    tus = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=auth(server.full))
    first = tus.uploader(str(tmp_path / "clip.mp4"), chunk_size=8192, metadata={"filename": "clip.mp4"})
    first.upload_chunk()
    resumed = tus.uploader(str(tmp_path / "clip.mp4"), url=first.url, chunk_size=16384)
    assert resumed.offset == 8192
    resumed.upload()
    assert (uploads(server) / first.url.rsplit("/", 1)[1]).read_bytes() == data


def _node_modules() -> Path | None:
    folder = REPO / ".venv" / "js" / "node_modules"
    return folder if (folder / "tus-js-client").is_dir() and shutil.which("node") else None


@pytest.mark.skipif(_node_modules() is None, reason="tus-js-client is installed by scripts/setup --dev "
                    "(node and npm); neither is here")
def test_tus_js_client_uploads_and_resumes(server, tmp_path):
    data = os.urandom(40_000)
    (tmp_path / "clip.mp4").write_bytes(data)
    done = subprocess.run(["node", str(REPO / "tests" / "js" / "tus_upload.mjs"), f"{server.url}/api/v1/uploads",
                           server.full, str(tmp_path / "clip.mp4"), "10000"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TUS_JS_MODULES": str(_node_modules())})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["resumedFrom"] == 10000  # the first piece was kept; the rest followed it
    assert (uploads(server) / result["url"].rsplit("/", 1)[1]).read_bytes() == data

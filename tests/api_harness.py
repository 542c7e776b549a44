"""Real HTTP API servers for the tests: ``lipsyncd serve`` as a process, or the same app on
uvicorn in a thread of the test (still real HTTP on a free port, for tests that need many
small servers with different settings).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from daemon import config as config_mod
from daemon.api.app import create_app
from daemon.api.auth import KeyRing
from daemon.config import Config
from daemon.storage import ObjectStore
from tests.daemon_harness import LOGGED, REPO, Daemon, Media, Share, Store, config_text, free_port


def wait_http(url: str, timeout: float = 30.0, *, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError(f"the server for {url} exited")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout}s")


class ApiProcess:
    """``python -m daemon serve -c CONFIG``, exactly as systemd/lipsyncd-api.service runs it."""

    def __init__(self, config: Path, log: Path, *, env: dict[str, str] | None = None):
        self.config = config
        self.cfg = config_mod.load(config)
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.host = "api"
        LOGGED.add(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.api.port}"

    def start(self) -> ApiProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIPSYNCD_", "AWS_", "NOTIFY_"))}
        env.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **self.env})
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "serve", "-c", str(self.config)], cwd=REPO,
                                         env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"{self.url}/healthz", alive=lambda: self.proc.poll() is None)
        return self

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- {self.host} log tail:\n" + "\n".join(self.log_text().splitlines()[-lines:])


class ThreadApi:
    """The app on uvicorn in a thread; ``store`` is an ObjectStore of the test's store or None."""

    def __init__(self, cfg: Config, store: Any = None):
        self.cfg = cfg
        self.port = cfg.api.port
        self.app = create_app(cfg, store=self._provider(store))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @staticmethod
    def _provider(store: Any) -> Callable[[], Any]:
        from daemon.errors import StorageError

        def provide() -> Any:
            if store is None:
                raise StorageError("no store in this test", code="storage_setup")
            return store
        return provide

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadApi:
        self.thread.start()
        wait_http(f"{self.url}/healthz", alive=self.thread.is_alive)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def share_config(root: Path, share: Share, store: Store | None, host: str = "api", **sections: dict[str, Any]) -> Config:
    """A config for ``share`` with an [api] on a free port (sections override/extend it)."""
    port = free_port()
    extra: dict[str, dict[str, Any]] = {"api": {"port": port, "public_url": f"http://127.0.0.1:{port}"}}
    for name, values in sections.items():
        extra.setdefault(name, {}).update(values)
    path = root / f"{host}.toml"
    path.write_text(config_text(share, store, host, extra=extra))
    return config_mod.load(path)


def object_store(cfg: Config, store: Store) -> ObjectStore:
    return ObjectStore(cfg, credentials=store.credentials, endpoint=store.endpoint)


def new_key(cfg: Config, name: str, *, read_only: bool = False) -> str:
    return KeyRing(cfg.api_keys_file).create(name, scope="read" if read_only else "full")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse(url: str, headers: dict[str, str], *, timeout: float = 60.0) -> Iterator[tuple[str, dict]]:
    """(event, data) of a Server-Sent Events stream until the server ends it."""
    from daemon.api.client import parse_sse

    with httpx.stream("GET", url, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        yield from parse_sse(resp.iter_lines())


def multipart(files: list[tuple[str, str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart body built by hand, so that a test can send any file name at all
    (NUL bytes, slashes, unicode tricks) -- HTTP client libraries clean some of them."""
    boundary = "lipsyncd-test-boundary-7f3a"
    out = bytearray()
    for name, value in (fields or {}).items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").encode() + \
            value.encode() + b"\r\n"
    for field, filename, data in files:
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"".encode() + \
            filename.encode("utf-8", "surrogatepass") + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + \
            data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- a whole stack


@dataclass
class Stack:
    share: Share
    daemon: Daemon
    api: ApiProcess
    key: str
    media: Media
    store: Store

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def h(self) -> dict[str, str]:
        return auth(self.key)

    def submit(self, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/jobs", headers=self.h, timeout=60, **kw)

    def upload_job(self, name: str | None = None, **fields) -> httpx.Response:
        data = {k: v for k, v in {"name": name, **fields}.items() if v is not None}
        with open(self.media.audio, "rb") as a, open(self.media.template, "rb") as t:
            return self.submit(files=[("audio", ("speech.wav", a, "audio/wav")),
                                      ("template", ("presenter.mp4", t, "video/mp4"))], data=data)

    def follow(self, name: str) -> list[dict]:
        return [doc for _kind, doc in sse(f"{self.url}/api/v1/jobs/{name}/events", self.h)]


class MediaServer:
    """A plain HTTP file server on a free port (where audio_url / template_url point)."""

    def __init__(self, folder: Path):
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()


class Receiver:
    """Records the JSON POSTed to it (a job's callback_url)."""

    def __init__(self):
        self.bodies: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook?token=s3cret"


@contextlib.contextmanager
def make_stack(root: Path, store: Store, media: Media, *, failpoints: str = "",
               render: dict[str, Any] | None = None) -> Iterator[Stack]:
    """``lipsyncd run`` and ``lipsyncd serve`` as two processes on one share and store."""
    share = Share(root / "share")
    library = root / "library"
    library.mkdir()
    shutil.copy(media.template, library / "anna.mp4")
    port = free_port()
    daemon = Daemon(root, share, store, "h1", extra={
        "paths": {"templates": str(library)},
        "api": {"port": port, "public_url": f"http://127.0.0.1:{port}", "fetch_private_urls": True,
                "rate_limit": ""},
        "render": render or {}})
    daemon.start(failpoints=failpoints)
    # the API is its own process on the daemon's config: the same share, state and link secret
    api = ApiProcess(daemon.config, root / "api.log", env=store.env()).start()
    key = new_key(api.cfg, "tests")
    try:
        yield Stack(share, daemon, api, key, media, store)
    finally:
        api.stop()
        daemon.terminate()

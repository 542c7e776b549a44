"""Running the API on uvicorn: on its own (``lipsyncd serve``) or beside the daemon.

``lipsyncd serve`` runs uvicorn in the main thread (uvicorn then handles SIGTERM/SIGINT:
in-flight requests finish, then it exits). Inside ``lipsyncd run`` the same app runs in a
thread of the daemon with the daemon's open store, started and stopped as one of its
services.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from daemon.api.app import StoreProvider, create_app
from daemon.config import Config
from daemon.logsetup import get_logger
from daemon.reporting.metrics import Metrics
from daemon.storage import Store, connect

log = get_logger(__name__)


def lazy_store(cfg: Config) -> StoreProvider:
    """A provider that connects to the store on first use (and again after a failure)."""
    lock = threading.Lock()
    held: list[Store] = []

    def provide() -> Store:
        with lock:
            if not held:
                held.append(connect(cfg))  # StorageError goes to the caller; the next call tries again
            return held[0]
    return provide


def uvicorn_config(cfg: Config, app, *, port: int | None = None) -> uvicorn.Config:
    # log_config=None: our structlog setup stays the only one; access logs are off because
    # paths carry tokens (/l/<token>) that must not reach the journal
    return uvicorn.Config(app, host=cfg.api.bind, port=cfg.api.port if port is None else port, log_config=None,
                          access_log=False, proxy_headers=True, forwarded_allow_ips="127.0.0.1",
                          timeout_keep_alive=30, timeout_graceful_shutdown=10, server_header=False)


def serve(cfg: Config, *, ready=None) -> int:
    """``lipsyncd serve``: serve until SIGTERM/SIGINT; the exit status."""
    app = create_app(cfg, store=lazy_store(cfg))
    server = uvicorn.Server(uvicorn_config(cfg, app))
    if ready is not None:
        threading.Thread(target=_when_started, args=(server, ready), daemon=True).start()
    server.run()
    return 0 if server.started else 1


def _when_started(server: uvicorn.Server, ready) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        ready()


class BackgroundServer:
    """The API in a thread of ``lipsyncd run`` (``[api] enabled = true``)."""

    def __init__(self, cfg: Config, store: Store, metrics: Metrics | None = None):
        self.cfg = cfg
        self.app = create_app(cfg, store=lambda: store, metrics=metrics)
        self.server = uvicorn.Server(uvicorn_config(cfg, self.app))
        self.thread = threading.Thread(target=self.server.run, name="http-api", daemon=True)

    def start(self, timeout: float = 15.0) -> BackgroundServer:
        _check_free(self.cfg.api.bind, self.cfg.api.port)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the HTTP API did not start on {self.cfg.api.bind}:{self.cfg.api.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def _check_free(bind: str, port: int) -> None:
    """Fail with a clear message, not a uvicorn traceback, when the port is taken."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError as e:
            raise OSError(f"api.port {port} on {bind} is not available: {e.strerror}") from None

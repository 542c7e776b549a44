"""What this daemon tells the world about itself, from the main loop: systemd (watchdog
pings and a STATUS= line), its presence on the share (``<work>/.daemon-HOST.json``: alive,
engine, what each render slot does -- for the console's health strip, ``lipsyncd status``
and ``lipsyncd healthcheck`` on any host), and the remote renderers as it sees them
(``<work>/.servers-HOST.json``). Each is rewritten when it changes, and the presence at
least every heartbeat interval: its mtime is the daemon's heartbeat."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from lipsync import __version__

from daemon.atomic import write_atomic
from daemon.config import Config
from daemon.logsetup import get_logger
from daemon.pipeline.slots import Slot
from daemon.sdnotify import Notifier

log = get_logger(__name__)
STATUS_INTERVAL = 1.0  # seconds between STATUS= lines at most


class Presence:
    def __init__(self, cfg: Config, notifier: Notifier, remote_servers: Callable[[], list[dict]]):
        self.cfg = cfg
        self.sd = notifier
        self.remote_servers = remote_servers
        self._last_ping = 0.0
        self._last_status = ("", 0.0)
        self._published: dict | None = None
        self._published_at = 0.0
        self._servers_published: list[dict] = []

    def tick(self, slots: list[Slot], *, stopping: bool, status: str) -> None:
        """Called every turn of the main loop."""
        self._systemd(status)
        self._publish_servers()
        self._publish_presence(slots, stopping)

    def _systemd(self, status: str) -> None:
        now = time.monotonic()
        interval = self.sd.watchdog_interval
        if interval is not None and now - self._last_ping >= interval:
            self.sd.watchdog()
            self._last_ping = now
        last_text, last_time = self._last_status
        if status != last_text and now - last_time >= STATUS_INTERVAL:
            self.sd.status(status)
            self._last_status = (status, now)

    def _publish_presence(self, slots: list[Slot], stopping: bool) -> None:
        now = time.monotonic()
        doc = {"host": self.cfg.host_id, "engine": self.cfg.render.engine,
               "slots": [{"slot": s.label, "job": s.job} for s in slots], "stopping": stopping,
               "version": __version__}
        if doc == self._published and now - self._published_at < float(self.cfg.cluster.heartbeat_interval):
            return
        self._published, self._published_at = doc, now
        try:
            write_atomic(self.cfg.work_dir / f".daemon-{self.cfg.host_id}.json", json.dumps(doc).encode())
        except OSError as e:
            log.warning("could not publish this daemon's presence", error=f"{type(e).__name__}: {e}")

    def _publish_servers(self) -> None:
        rows = self.remote_servers()
        if not rows or rows == self._servers_published:
            return
        self._servers_published = rows
        try:
            write_atomic(self.cfg.work_dir / f".servers-{self.cfg.host_id}.json",
                         json.dumps({"host": self.cfg.host_id, "at": time.time(), "servers": rows}).encode())
        except OSError as e:
            log.warning("could not publish the state of the remote servers", error=f"{type(e).__name__}: {e}")

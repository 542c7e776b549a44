"""Waking the worker when the inbox changes.

The watcher never decides anything: it sets a flag, and the worker's next inbox scan
decides what is ready. Local folders use the operating system's change notification
(inotify); network mounts (NFS, SMB/CIFS, sshfs, ...) do not report changes made by other
machines, so there the inbox is polled every ``watch.poll_interval``. The filesystem type
comes from ``/proc/mounts`` (the longest mount point that contains the inbox);
``watch.mode`` forces either way. Whatever the mode, ``wait`` also returns when a full
rescan is due (``watch.rescan_interval``), which catches events that were missed, and
shortly after the last change has had ``watch.settle_seconds`` to settle.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.logsetup import get_logger
from daemon.names import is_temporary_name

log = get_logger(__name__)

MOUNTS_FILE = Path("/proc/mounts")
_OCTAL = re.compile(r"\\([0-7]{3})")
# our own manifest reads show up as open/close events; they are not changes
_NOT_CHANGES = frozenset({"opened", "closed_no_write"})
_SETTLE_SLACK = 0.05  # wake just after the settle window, not just before it


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """``(mount point, filesystem type)`` per line of /proc/mounts text, in order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # the kernel writes blanks in mount points as octal escapes (\040 = space)
        point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[1])
        mounts.append((point, fields[2]))
    return mounts


def detect_fs_type(path: Path, mounts_text: str | None = None) -> str:
    """Filesystem type holding ``path`` ("nfs4", "ext4", ...), or "unknown"."""
    if mounts_text is None:
        try:
            mounts_text = MOUNTS_FILE.read_text(errors="replace")
        except OSError:
            return "unknown"
    target = os.path.realpath(path)
    best, fs_type = -1, "unknown"
    for point, kind in parse_mounts(mounts_text):
        inside = point == "/" or target == point or target.startswith(point.rstrip("/") + "/")
        # ">=": a later mount on the same point hides the earlier one
        if inside and len(point) >= best:
            best, fs_type = len(point), kind
    return fs_type


def choose_mode(cfg: Config, fs_type: str) -> str:
    """"native" or "polling" for ``watch.mode`` and the inbox's filesystem type."""
    if cfg.watch.mode != "auto":
        return cfg.watch.mode
    network = {t.lower() for t in cfg.watch.network_fs_types}
    return "polling" if fs_type.lower() in network else "native"


class _Wake(FileSystemEventHandler):
    def __init__(self, watcher: InboxWatcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _NOT_CHANGES:
            return
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append(os.fsdecode(event.dest_path))
        if event.is_directory and all(os.path.realpath(p) == self.watcher.root_real for p in paths):
            return  # the inbox's own mtime: the file event beside it says what changed
        if all(is_temporary_name(os.path.basename(p)) for p in paths):
            return  # a copy tool writing its temp file; the rename to the real name counts
        self.watcher.notify()


class InboxWatcher:
    """``start()``, then ``wait(timeout)`` in the worker loop; ``stop()`` at shutdown."""

    def __init__(self, cfg: Config, *, mounts_text: str | None = None, coalesce: float = 0.2):
        self.cfg = cfg
        self.root = cfg.paths.inbox
        self.root_real = os.path.realpath(self.root)
        self.fs_type = detect_fs_type(self.root, mounts_text)
        self.mode = choose_mode(cfg, self.fs_type)
        self.coalesce = coalesce  # a big copy fires many events; wake at most this often for them
        self._changed = threading.Event()
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._next_rescan = 0.0
        self._settle_due: float | None = None
        self._last_wake = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> InboxWatcher:
        if self._observer is not None:
            return self
        if not self.root.is_dir():
            raise ConfigError([f"paths.inbox: {self.root} does not exist or is not a folder (is the share mounted?)"])
        try:
            self._observer = self._start_observer(self.mode)
        except OSError as e:
            if self.mode != "native":
                raise
            # e.g. the inotify watch limit: polling is slower but works everywhere
            log.warning("native inbox watching unavailable, polling instead", error=str(e))
            self.mode = "polling"
            self._observer = self._start_observer("polling")
        self._next_rescan = time.monotonic() + float(self.cfg.watch.rescan_interval)
        self._changed.set()  # the first wait returns at once: scan what is already there
        log.info("watching inbox", inbox=str(self.root), mode=self.mode, fs_type=self.fs_type)
        return self

    def _start_observer(self, mode: str) -> BaseObserver:
        if mode == "polling":
            observer: BaseObserver = PollingObserver(timeout=float(self.cfg.watch.poll_interval))
        else:
            observer = Observer()
        observer.schedule(_Wake(self), str(self.root), recursive=False)
        observer.daemon = True
        observer.start()
        return observer

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)
        self._changed.set()  # release a worker blocked in wait()

    def __enter__(self) -> InboxWatcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ waking

    def notify(self) -> None:
        """Something changed: wake the worker (also usable by signal handlers, tests)."""
        now = time.monotonic()
        with self._lock:
            self._settle_due = now + float(self.cfg.watch.settle_seconds) + _SETTLE_SLACK
        self._changed.set()

    def wait(self, timeout: float | None) -> bool:
        """Block until something changed or a rescan is due (True), or ``timeout`` (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self._changed.is_set() and now >= self._last_wake + self.coalesce:
                self._changed.clear()
                self._last_wake = now
                return True
            with self._lock:
                if self._settle_due is not None and now >= self._settle_due:
                    self._settle_due = None
                    self._last_wake = now
                    return True
                if now >= self._next_rescan:
                    self._next_rescan = now + float(self.cfg.watch.rescan_interval)
                    self._last_wake = now
                    return True
                wake = [self._next_rescan]
                if self._settle_due is not None:
                    wake.append(self._settle_due)
            if self._changed.is_set():
                wake.append(self._last_wake + self.coalesce)
            if deadline is not None:
                if now >= deadline:
                    return False
                wake.append(deadline)
            pause = max(0.0, min(wake) - now)
            if self._changed.is_set():
                time.sleep(min(pause, self.coalesce))
            else:
                self._changed.wait(pause)

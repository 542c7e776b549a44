"""Leases on claimed jobs, so that several daemons can share one inbox and survive each other.

Every claimed job folder ``<work>/<host>/<job id>/`` holds a small file ``lease`` naming the
owning host and the job. The owner renews it by bumping its mtime every
``cluster.heartbeat_interval`` (:class:`Heartbeat`). A daemon that dies stops renewing; once
a lease is older than ``cluster.lease_timeout`` any other daemon may take the job over
(:func:`find_stale_jobs`, :func:`take_over`): one atomic rename moves the whole folder into
the taker's own work area, so of several takers exactly one wins and the others get
``FileNotFoundError``.

Time is judged by the share, not by the hosts: the heartbeat sets the mtime with
``utime(path, None)`` (on NFS the server stamps it), and "now" is the mtime of a probe file
this host touches on the same share (:func:`share_now`). Hosts whose clocks disagree
therefore still agree on a lease's age. Files are opened before they are stat'ed because
NFS revalidates attributes on open (close-to-open consistency), where a bare stat may
answer from the attribute cache. docs/multihost.md describes the limits of this design.

A daemon that wakes up after its job was taken over finds its folder gone; it must call
:func:`still_owner` before every write other people can see (sidecar, upload, moving the
inputs) and abandon the job silently when that says False.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon import failpoints
from daemon.atomic import write_atomic
from daemon.config import Config
from daemon.logsetup import get_logger

LEASE_FILE = "lease"
_TEMP_PREFIX = f".{LEASE_FILE}."  # write_atomic names its temp files ".<name>.<random>.tmp"

log = get_logger(__name__)


@dataclass(frozen=True)
class Lease:
    host: str | None  # None when the file is unreadable (a half-written lease of a crashed host)
    job_id: str
    renewed_at: float  # mtime by the share's clock
    taken_over_from: str | None = None
    generation: int = 1  # 1 at the claim, +1 per takeover: fences the sidecar writes of earlier owners


@dataclass(frozen=True)
class StaleJob:
    job_dir: Path
    host: str  # the host folder the job lies in
    job_id: str
    age: float  # seconds since the last renewal, by the share's clock


class LeaseHeldError(RuntimeError):
    """The lease was renewed after the job was found stale: its owner is alive after all."""


# --------------------------------------------------------------------------- one lease


def write_lease(job_dir: Path, *, host: str, job_id: str, generation: int = 1,
                taken_over_from: str | None = None) -> Path:
    """Create or replace the lease of ``job_dir`` atomically (temp file + rename); renews it.

    FileNotFoundError when ``job_dir`` is gone (another daemon took the job over).
    """
    path = job_dir / LEASE_FILE
    body = {"host": host, "job_id": job_id, "pid": os.getpid(), "generation": generation}
    if taken_over_from:
        body["taken_over_from"] = taken_over_from
    _remove_temps(job_dir)  # left by a kill -9 during an earlier write
    write_atomic(path, (json.dumps(body) + "\n").encode(), mode=0o644)
    return path


def read_lease(job_dir: Path) -> Lease | None:
    """The lease of ``job_dir``, or None when the folder has none (or is gone)."""
    try:
        fd = os.open(job_dir / LEASE_FILE, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        renewed_at = os.fstat(fd).st_mtime
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        body = json.loads(raw)
        host = body["host"] if isinstance(body.get("host"), str) else None
        previous = body.get("taken_over_from")
        generation = body.get("generation", 1)
    except (ValueError, AttributeError, KeyError):
        host, previous, generation = None, None, 1
    return Lease(host=host, job_id=job_dir.name, renewed_at=renewed_at,
                 taken_over_from=previous if isinstance(previous, str) else None,
                 generation=generation if isinstance(generation, int) and generation >= 1 else 1)


def renew(job_dir: Path) -> bool:
    """Bump the lease's mtime to the share's "now"; False when the lease is gone (taken over)."""
    try:
        os.utime(job_dir / LEASE_FILE, None)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def still_owner(job_dir: Path, host_id: str) -> bool:
    """True while ``job_dir`` exists and its lease names ``host_id``.

    Call it right before any write other people see; False means another daemon has taken
    the job over, and this one must drop it without writing anything.
    """
    lease = read_lease(job_dir)
    return lease is not None and lease.host == host_id


def _remove_temps(job_dir: Path) -> None:
    try:
        names = os.listdir(job_dir)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(_TEMP_PREFIX) and name.endswith(".tmp"):
            try:
                os.unlink(job_dir / name)
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------- the share's clock


def share_now(cfg: Config) -> float:
    """The share's current time: the mtime of a probe file this host has just touched."""
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    probe = cfg.work_dir / f".clock-{cfg.host_id}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.utime(fd, None)
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def _renewed_at(job_dir: Path) -> float | None:
    """When the job was last known alive: its lease's mtime, else the folder's own.

    A job folder without a lease belongs to a host that died between claiming the job and
    writing the lease; the claim's renames stamped the folder, which then serves as lease.
    """
    lease = read_lease(job_dir)
    if lease is not None:
        return lease.renewed_at
    try:
        return job_dir.stat().st_mtime
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- takeover


def find_stale_jobs(cfg: Config, *, now: float | None = None) -> list[StaleJob]:
    """Jobs of *other* hosts whose lease is older than ``cluster.lease_timeout``, oldest first."""
    root = cfg.work_dir
    if now is None:
        now = share_now(cfg)
    stale: list[StaleJob] = []
    for host_dir in _subdirs(root):
        if host_dir.name == cfg.host_id:
            continue  # our own jobs are resumed by our own start-up recovery
        for job_dir in _subdirs(host_dir):
            renewed = _renewed_at(job_dir)
            if renewed is None:
                continue
            age = now - renewed
            if age > cfg.cluster.lease_timeout:
                stale.append(StaleJob(job_dir=job_dir, host=host_dir.name, job_id=job_dir.name, age=age))
    stale.sort(key=lambda s: -s.age)
    return stale


def take_over(job: StaleJob | Path, cfg: Config) -> Path:
    """Move a stale job into this host's work area and make its lease ours; the new folder.

    Raises FileNotFoundError when another daemon took it first (or it finished), and
    :class:`LeaseHeldError` when its owner renewed the lease since it was found stale.
    """
    job_dir = job.job_dir if isinstance(job, StaleJob) else Path(job)
    previous_host = job_dir.parent.name
    renewed = _renewed_at(job_dir)
    if renewed is None:
        raise FileNotFoundError(f"{job_dir}: job is gone (taken over or finished)")
    age = share_now(cfg) - renewed
    if age <= cfg.cluster.lease_timeout:
        raise LeaseHeldError(f"{job_dir}: lease renewed {age:.0f}s ago; its owner is alive")
    # Touch the old lease first: other scanners now see it alive and back off, which
    # shrinks the window in which two takers race for the rename below.
    _touch(job_dir)
    target = cfg.host_work_dir / job_dir.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(job_dir, target)  # atomic: exactly one taker succeeds, the others get ENOENT
    # From here on the old owner cannot write the sidecar (its writes are renamed out of the
    # folder that just moved: daemon.outbox); the new generation also fences it logically.
    old = read_lease(target)
    generation = (old.generation if old is not None else 1) + 1
    write_lease(target, host=cfg.host_id, job_id=target.name, generation=generation, taken_over_from=previous_host)
    log.warning("job taken over", job_id=target.name, from_host=previous_host, lease_age=round(age, 1),
                generation=generation)
    return target


def _touch(job_dir: Path) -> None:
    try:
        os.utime(job_dir / LEASE_FILE, None)
    except FileNotFoundError:
        os.utime(job_dir, None)  # no lease yet: the folder's mtime stands in for it


def _subdirs(folder: Path) -> list[Path]:
    """Real sub-folders, not dot-named ones (probe files, temp files) and never symlinks."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries
                  if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))


# --------------------------------------------------------------------------- heartbeat


class Heartbeat:
    """A background thread that renews the leases of this daemon's jobs.

    ``add``/``discard`` keep the set of job folders; ``lost(job_dir)`` reports a job whose
    lease vanished (taken over while this host stalled). ``on_lost`` is called once per
    lost job from the heartbeat thread.
    """

    def __init__(self, interval: float, *, on_lost: Callable[[Path], None] | None = None) -> None:
        self.interval = interval
        self.on_lost = on_lost
        self._jobs: set[Path] = set()
        self._lost: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def add(self, job_dir: Path) -> None:
        with self._lock:
            self._jobs.add(job_dir)
            self._lost.discard(job_dir)

    def discard(self, job_dir: Path) -> None:
        with self._lock:
            self._jobs.discard(job_dir)
            self._lost.discard(job_dir)

    def lost(self, job_dir: Path) -> bool:
        with self._lock:
            return job_dir in self._lost

    @property
    def jobs(self) -> frozenset[Path]:
        with self._lock:
            return frozenset(self._jobs)

    def beat(self) -> list[Path]:
        """One renewal round; returns the job folders found lost in it."""
        failpoints.failpoint("heartbeat")
        newly_lost: list[Path] = []
        for job_dir in self.jobs:
            try:
                alive = renew(job_dir)
            except OSError as e:
                # a share hiccup is not a takeover; try again next round
                log.warning("lease renewal failed", job_id=job_dir.name, error=f"{type(e).__name__}: {e}")
                continue
            if not alive:
                with self._lock:
                    if job_dir in self._jobs:
                        self._jobs.discard(job_dir)
                        self._lost.add(job_dir)
                        newly_lost.append(job_dir)
        self.rounds += 1
        for job_dir in newly_lost:
            log.warning("lease lost: job was taken over by another daemon", job_id=job_dir.name)
            if self.on_lost is not None:
                self.on_lost(job_dir)
        return newly_lost

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any one failure
                log.exception("heartbeat round failed")

    def start(self) -> "Heartbeat":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


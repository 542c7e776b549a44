"""Cancelling a job, and a job whose work folder is removed by hand: real daemons, real store.

A render is slowed down by a failpoint (a pause at every progress report) so that the
test can act while it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.daemon_harness import REPO, Daemon, Media, Share, wait_until

SLOW = "render_progress=sleep:0.4"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return Media(tmp_path_factory.mktemp("cancel-media"), seconds=6.0)


def lipsyncd(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def rendering(share: Share, name: str) -> bool:
    doc = share.sidecar(name)
    return bool(doc) and doc["state"] == "rendering" and doc["progress"] > 0.1


def test_cancel_stops_the_render_and_files_the_inputs_as_cancelled(tmp_path, store, media):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "canceller", extra={"render": {"chunk_frames": 8}})
    with daemon.start(failpoints=SLOW):
        share.drop_job("long", media)
        wait_until(lambda: rendering(share, "long"), 60, "the render under way", daemons=[daemon])
        started = time.monotonic()
        r = lipsyncd("cancel", "long", "-c", str(daemon.config))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "long: failed (cancelled)" in r.stdout
        assert time.monotonic() - started < 10  # at the next chunk, not at the end of the render
        doc = share.sidecar("long")
        assert doc["error"]["code"] == "cancelled" and doc["outputs"][0]["state"] == "failed"
        assert sorted(p.name for p in (share.root / "failed" / "long").iterdir()) == ["job.json", "long.mp4",
                                                                                     "long.wav"]
        assert share.work_jobs() == [] and not any("/long-" in k for k in store.objects())
        # a finished job cannot be cancelled; the daemon carries on with the next job
        again = lipsyncd("cancel", "long", "-c", str(daemon.config))
        assert again.returncode == 1 and "already failed" in again.stderr
        share.drop_job("next", Media(tmp_path / "short", seconds=1.0))
        share.wait_for(["next"], ("done",), timeout=60, daemons=[daemon])


def test_a_work_folder_removed_by_hand_ends_the_job_with_one_line_not_a_flood(tmp_path, store, media):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "victim", extra={"render": {"chunk_frames": 8}})
    with daemon.start(failpoints=SLOW):
        share.drop_job("doomed", media)
        wait_until(lambda: rendering(share, "doomed"), 60, "the render under way", daemons=[daemon])
        (folder,) = share.work_jobs()
        shutil.rmtree(folder)  # what a person "cancelling" by hand does
        doc = share.wait_for(["doomed"], ("failed",), timeout=30, daemons=[daemon])["doomed"]
        assert doc["error"]["code"] == "input_changed" and "removed" in doc["error"]["message"]
        time.sleep(1.5)
        events = [e.get("event", "") for e in daemon.log_events()]
        assert events.count("the job's work folder vanished; recorded as failed") == 1
        assert len(events) < 60, events  # no line per frame
        assert daemon.alive and not folder.exists()  # and nothing recreated it


def test_a_record_whose_folder_vanished_while_no_daemon_ran_is_failed_at_the_next_start(tmp_path, store, media):
    share = Share(tmp_path / "share")
    fast = {"cluster": {"lease_timeout": 2, "heartbeat_interval": 0.5}, "watch": {"rescan_interval": 0.5},
            "render": {"chunk_frames": 8}}
    daemon = Daemon(tmp_path, share, store, "sleepy", extra=fast)
    daemon.start(failpoints=SLOW)
    share.drop_job("ghost", media)
    wait_until(lambda: rendering(share, "ghost"), 60, "the render under way", daemons=[daemon])
    daemon.kill()
    for folder in share.work_jobs():
        shutil.rmtree(folder)
    with daemon.start():
        doc = share.wait_for(["ghost"], ("failed",), timeout=30, daemons=[daemon])["ghost"]
    assert doc["error"]["code"] == "input_changed"

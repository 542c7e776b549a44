"""The store goes away (stopped, or hanging) while the daemon works: nothing is dropped.

Rendering goes on, finished videos wait in the work area with the sidecar saying
"uploading", the last error and the next retry time; once the store is back every upload
resumes and every job ends done with a working link.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests import outbox_files as sidecar
from tests.daemon_harness import Daemon, FlakyProxy, Media, Share, Store, download, wait_until


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of this module's own: the tests stop it (each leaves it running again)."""
    s = Store(tmp_path_factory.mktemp("outage-store")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return Media(tmp_path_factory.mktemp("outage-media"), seconds=1.0)


def waiting_for_store(share: Share, job: str) -> dict | None:
    doc = share.sidecar(job)
    if doc and doc["state"] == "uploading" and (doc.get("upload") or {}).get("last_error"):
        return doc
    return None


def rendered_file(share: Share, job: str) -> Path | None:
    found = [p for p in share.work.glob(f"*/{job}-*/out/{job}.mp4")]
    return found[0] if found else None


def assert_done_with_working_link(share: Share, jobs: list[str], daemon: Daemon) -> None:
    docs = share.wait_for(jobs, ("done",), timeout=60, daemons=[daemon])
    for job, doc in docs.items():
        assert sidecar.validate(doc) == []
        assert "upload" not in doc  # the retry bookkeeping is gone once done
        (out,) = doc["outputs"]
        assert hashlib.sha256(download(out["url"])).hexdigest() == out["sha256"], job
        assert (share.root / "done" / job / f"{job}.wav").exists()
    wait_until(lambda: not share.work_jobs(), 20, "work area emptied", daemons=[daemon])
    assert share.leftovers() == []


def test_store_down_renders_wait_and_resume(tmp_path, store, media, request):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "outage")
    with daemon.start():
        share.drop_job("before", media)
        share.wait_for(["before"], ("done",), timeout=60, daemons=[daemon])
        request.addfinalizer(store.start)  # back up for the next test, whatever happens here
        store.stop()
        share.drop_job("first", media)
        doc = wait_until(lambda: waiting_for_store(share, "first"), 60, "first waiting for the store",
                         daemons=[daemon])
        assert sidecar.validate(doc) == []
        upload = doc["upload"]
        assert upload["attempts"] >= 1
        assert sidecar.parse_time(upload["next_retry_at"]) >= sidecar.parse_time(doc["updated_at"])
        assert doc["outputs"][0]["state"] == "rendered"
        assert rendered_file(share, "first") is not None  # the finished video waits in the work area

        # the daemon stays responsive: a new job is claimed and rendered meanwhile
        share.drop_job("second", media)
        wait_until(lambda: waiting_for_store(share, "second"), 60, "second rendered and waiting",
                   daemons=[daemon])
        # retries keep going, spaced by the capped backoff (retry_backoff_max = 2s)
        attempts = share.sidecar("first")["upload"]["attempts"]
        wait_until(lambda: share.sidecar("first")["upload"]["attempts"] > attempts + 1, 20, "more retries",
                   daemons=[daemon])

        store.start()
        assert_done_with_working_link(share, ["before", "first", "second"], daemon)


def test_hanging_store_does_not_stall_the_daemon(tmp_path, store, media):
    """A store that accepts connections and never answers: uploads time out and retry."""
    proxy = FlakyProxy(store.port)
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "hang", extra={"storage": {"endpoint": proxy.endpoint, "read_timeout": 1}})
    try:
        with daemon.start():
            proxy.set_mode("hang")
            share.drop_job("slow-1", media)
            doc = wait_until(lambda: waiting_for_store(share, "slow-1"), 60, "slow-1 waiting for the store",
                             daemons=[daemon])
            assert doc["upload"]["next_retry_at"]
            started = time.monotonic()
            share.drop_job("slow-2", media)
            wait_until(lambda: waiting_for_store(share, "slow-2"), 60, "slow-2 rendered meanwhile",
                       daemons=[daemon])
            assert time.monotonic() - started < 30
            proxy.set_mode("forward")
            assert_done_with_working_link(share, ["slow-1", "slow-2"], daemon)
    finally:
        proxy.close()

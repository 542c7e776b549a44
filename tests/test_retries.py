"""Transient failures are retried, permanent ones are not -- end to end, with real daemons.

A failpoint raises a real transient render error (what a GPU out of memory or a busy
remote renderer raises) inside the daemon; the job must fail twice, say so in its
sidecar in between, and then succeed on the third attempt.
"""

from __future__ import annotations

import time


from tests import outbox_files as sidecar
from tests.daemon_harness import Daemon, Share, download


def watch_states(share: Share, job: str, timeout: float) -> list[dict]:
    """Every distinct version of the job's sidecar until it is final."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = share.sidecar(job)
        if doc is not None and (not seen or doc != seen[-1]):
            seen.append(doc)
            if doc["state"] in ("done", "failed"):
                return seen
        time.sleep(0.05)
    raise AssertionError(f"{job} not final after {timeout}s: {[d['state'] for d in seen]}")


def test_two_transient_failures_then_success(tmp_path, store, media):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "retrier",
                    extra={"render": {"max_attempts": 3, "retry_delay": 1, "retry_delay_max": 2}})
    with daemon.start(failpoints="before_render=transient*2"):
        share.drop_job("flaky", media)
        versions = watch_states(share, "flaky", 90)
    final = versions[-1]
    assert final["state"] == "done" and final["error"] is None, final
    assert download(final["outputs"][0]["url"])  # the link plays
    waiting = [v for v in versions if v["state"] == "queued" and v.get("error")]
    assert waiting, [v["state"] for v in versions]
    for v in waiting:  # in between: queued, with a retryable error and the attempt count
        assert v["error"]["code"] == "render_transient" and v["error"]["retryable"] is True
        assert sidecar.validate(v) == []
    notes = " ".join(final["notes"])
    assert "attempt 1 of 3 failed (render_transient: failpoint before_render" in notes
    assert "attempt 2 of 3 failed" in notes
    failures = [e for e in daemon.log_events() if e.get("event") == "render failed, will retry"]
    assert [e["attempt"] for e in failures] == [1, 2]


def test_a_transient_failure_on_every_attempt_fails_the_job_as_retryable(tmp_path, store, media):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "unlucky",
                    extra={"render": {"max_attempts": 2, "retry_delay": 0.5, "retry_delay_max": 1}})
    with daemon.start(failpoints="before_render=transient"):
        share.drop_job("doomed", media)
        doc = share.wait_for(["doomed"], ("failed",), timeout=60, daemons=[daemon])["doomed"]
    assert doc["error"]["code"] == "render_transient" and doc["error"]["retryable"] is True
    assert (share.root / "failed" / "doomed" / "doomed.wav").is_file()  # inputs kept to drop again

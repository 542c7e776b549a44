"""Soak: a few hundred jobs, two daemons on one share, one of them killed and restarted,
the store down for a while in the middle. Afterwards every job is done exactly once.

Runs in the default suite and in CI; deselect locally with ``-m "not soak"``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.daemon_harness import Daemon, Media, Share, Store, download, wait_until

pytestmark = [pytest.mark.soak, pytest.mark.timeout(420)]

JOBS = 300
DROP_BATCH = 30  # jobs dropped at once, like a script copying a folder
OUTAGE_SECONDS = 8
LEASE_TIMEOUT = 5  # the harness's cluster.lease_timeout


def test_soak_two_daemons_kills_and_a_storage_outage(tmp_path: Path) -> None:
    store = Store(tmp_path / "store").start()
    share = Share(tmp_path / "share")
    media = Media(tmp_path / "media", seconds=0.4, size=(32, 32))
    names = [f"soak-{i:03d}" for i in range(JOBS)]
    # the victim gets killed again and again; the steady one keeps going
    steady = Daemon(tmp_path, share, store, "steady")
    victim = Daemon(tmp_path, share, store, "victim")
    started = time.monotonic()
    events: list[str] = []

    def event(text: str) -> None:
        events.append(f"{time.monotonic() - started:.1f}s {text}")

    def drop_all() -> None:
        for i in range(0, JOBS, DROP_BATCH):
            for name in names[i:i + DROP_BATCH]:
                share.drop_job(name, media)
            time.sleep(1.0)

    def done_count() -> int:
        return sum(1 for d in share.sidecars().values() if d.get("state") == "done")

    try:
        steady.start()
        # 1. killed in the middle of a render, and down long enough for the steady daemon to
        #    take its job over
        victim.start(failpoints="render_progress=kill")
        dropper = threading.Thread(target=drop_all, name="dropper")
        dropper.start()
        victim.wait_exit(60)
        event("victim killed itself mid-render")
        wait_until(lambda: any(e.get("event") == "job taken over" for e in steady.log_events()), 3 * LEASE_TIMEOUT,
                   "the takeover", daemons=[steady])
        event("steady took its job over")
        # 2. killed between its upload and its sidecar write, restarted at once: it resumes
        #    its own job and finds the video already stored
        victim.start(failpoints="after_upload=kill")
        victim.wait_exit(60)
        event("victim killed itself after an upload")
        victim.start()
        # 3. the store goes down, and the victim is killed -9 from outside meanwhile
        wait_until(lambda: done_count() >= JOBS // 2, 120, f"{JOBS // 2} jobs done", daemons=[steady, victim])
        store.stop()
        event(f"store stopped at {done_count()} done")
        wait_until(lambda: any(d.get("state") == "uploading" and (d.get("upload") or {}).get("last_error")
                               for d in share.sidecars().values()),
                   30, "a job waiting for the store", daemons=[steady, victim])
        victim.kill()
        event("victim killed -9 during the outage")
        time.sleep(OUTAGE_SECONDS)
        victim.start()
        store.start()
        event("store back, victim restarted")

        dropper.join()
        docs = share.wait_for(names, ("done",), timeout=150, daemons=[steady, victim])
        elapsed = time.monotonic() - started
        # temp files of a daemon killed mid-write are swept once clearly abandoned (~2 s here)
        wait_until(lambda: not share.work_jobs() and not share.leftovers(), 20, "work areas and temp files cleared",
                   daemons=[steady, victim])
    finally:
        steady.terminate(20)
        victim.terminate(20)

    # every job: exactly one sidecar, done, with a link that downloads the stored bytes
    assert sorted(share.sidecars()) == sorted(names)
    hosts = Counter(d["host"] for d in docs.values())
    keys = Counter()
    for name, doc in docs.items():
        assert doc["error"] is None, (name, doc["error"])
        (out,) = doc["outputs"]
        keys[out["key"]] += 1
        body = download(out["url"])
        assert len(body) == out["size"] and hashlib.sha256(body).hexdigest() == out["sha256"], name

    # the counts add up: one object per job, one done/ folder per job, nothing elsewhere
    assert max(keys.values()) == 1
    stored = store.objects()
    assert set(stored) == set(keys), f"objects without a job: {set(stored) - set(keys)}"
    done = sorted(p.name for p in (share.root / "done").iterdir())
    assert done == sorted(names)
    assert list((share.root / "failed").iterdir()) == []
    assert [p.name for p in share.inbox.iterdir() if not p.name.startswith(".")] == []
    assert share.work_jobs() == []
    assert share.leftovers() == []
    for name in names:  # no job in two places: its inputs are in done/NAME and only there
        assert sorted(p.name for p in (share.root / "done" / name).rglob("*") if p.is_file()) == \
            sorted(["job.json", f"{name}.mp4", f"{name}.wav"]), name

    store.stop()
    logged = Counter(e.get("event") for d in (steady, victim) for e in d.log_events())
    counts = {what: logged[what] for what in ("job taken over", "job recovered", "upload skipped: identical object already stored")}
    assert all(counts.values()), counts  # each kind of recovery really happened
    print(f"\nsoak: {JOBS} jobs in {elapsed:.1f}s by host {dict(hosts)}; {counts}; " + "; ".join(events))

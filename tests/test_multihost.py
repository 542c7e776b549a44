"""Two daemons, one share, one store: each job done once; a frozen host's job is taken over.

"Frozen" is SIGSTOP: every thread of the daemon stops, heartbeat included, exactly as
when a VM is paused or a host hangs on a dead driver. SIGCONT later wakes it up.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections import Counter


from tests import outbox_files as sidecar
from tests.daemon_harness import Daemon, Share, download, wait_until


def test_two_daemons_share_the_work_without_doing_any_job_twice(tmp_path, store, media):
    share = Share(tmp_path / "share")
    names = [f"pair-{i:02d}" for i in range(16)]
    with Daemon(tmp_path, share, store, "host-a").start() as a, Daemon(tmp_path, share, store, "host-b").start() as b:
        for name in names:
            share.drop_job(name, media)
        docs = share.wait_for(names, ("done",), timeout=120, daemons=[a, b])
        wait_until(lambda: not share.work_jobs(), 20, "work areas emptied", daemons=[a, b])
    keys = Counter(d["outputs"][0]["key"] for d in docs.values())
    assert len(keys) == len(names) and max(keys.values()) == 1
    assert set(d["host"] for d in docs.values()) <= {"host-a", "host-b"}
    claimed = Counter(e["job"] for d in (a, b) for e in d.log_events() if e.get("event") == "job claimed")
    assert claimed == Counter({n: 1 for n in names})  # nobody claimed a job twice
    assert sorted(p.name for p in (share.root / "done").iterdir()) == names
    assert share.leftovers() == []


def test_frozen_host_is_taken_over_and_abandons_when_it_wakes(tmp_path, store, media):
    share = Share(tmp_path / "share")
    sleeper = Daemon(tmp_path, share, store, "sleeper")
    taker = Daemon(tmp_path, share, store, "taker")
    try:
        # the sleeper claims and renders, then stalls right before its upload
        sleeper.start(failpoints="before_upload=sleep:4")
        share.drop_job("frozen", media)
        wait_until(lambda: (d := share.sidecar("frozen")) and d["state"] == "uploading", 60,
                   "the sleeper about to upload", daemons=[sleeper])
        os.kill(sleeper.pid, signal.SIGSTOP)  # a paused VM: no heartbeat from here on
        (job_dir,) = share.work_jobs()
        assert job_dir.parent.name == "sleeper"

        taker.start()
        doc = share.wait_for(["frozen"], ("done",), timeout=60, daemons=[taker])["frozen"]
        assert doc["host"] == "taker"
        assert not job_dir.exists()
        final = (share.outbox / "frozen.json").read_bytes()

        # the sleeper wakes up: its sleep is over, its job folder is gone
        os.kill(sleeper.pid, signal.SIGCONT)
        wait_until(lambda: "taken over" in sleeper.log_text(), 30, "the sleeper noticing", daemons=[sleeper])
        time.sleep(3)  # time to do any damage it would do: it must do none
        assert (share.outbox / "frozen.json").read_bytes() == final
        assert sleeper.alive  # it dropped the job and carries on serving
        share.drop_job("after", media)
        share.wait_for(["after"], ("done",), timeout=60, daemons=[sleeper, taker])
    finally:
        if sleeper.alive:
            os.kill(sleeper.pid, signal.SIGCONT)
        sleeper.terminate(20)
        taker.terminate(20)

    assert sidecar.validate(doc) == []
    (out,) = doc["outputs"]
    assert hashlib.sha256(download(out["url"])).hexdigest() == out["sha256"]
    assert [k for k in store.objects() if "/frozen-" in k] == [out["key"]]
    # the woken sleeper finished nothing of the job it had lost
    assert not [e for e in sleeper.log_events() if e.get("job") == "frozen" and "finished" in e.get("event", "")]
    assert sorted(p.name for p in (share.root / "done").iterdir()) == ["after", "frozen"]
    assert list((share.root / "failed").iterdir()) == []
    assert share.work_jobs() == []
    assert share.leftovers() == []

"""Nothing lost, nothing twice: a daemon that lost its job can no longer write anything for it.

The first tests drive :mod:`daemon.outbox` directly (a takeover is the rename of the work
folder, exactly what :func:`daemon.cluster.lease.take_over` does). The daemon tests freeze
a real daemon with SIGSTOP at chosen phases of a job -- a failpoint that stops the whole
process, heartbeat included -- let a second real daemon take the job over and finish it,
then wake the first one: the finished record, its link and the bucket must be untouched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from daemon.errors import PermanentJobError
from daemon.jobs import ClaimedJob
from daemon.outbox import Outbox, RecordFenced, Sidecar, State, read_document
from tests.daemon_harness import Daemon, Share, frozen, wait_until

HOST_A, HOST_B = "host-a", "host-b"


def claimed_job(work: Path, name: str = "talk") -> ClaimedJob:
    job_id = f"{name}-20260101T000000Z-abcdef"
    work_dir = work / HOST_A / job_id
    (work_dir / "inputs").mkdir(parents=True)
    return ClaimedJob(name=name, id=job_id, host=HOST_A, claimed_at="2026-01-01T00:00:00Z", work_dir=work_dir,
                      audio=work_dir / "inputs" / f"{name}.wav", templates=[work_dir / "inputs" / f"{name}.mp4"],
                      audio_name=f"{name}.wav", template_names=[f"{name}.mp4"])


def take_over(job: ClaimedJob, work: Path) -> Path:
    target = work / HOST_B / job.id
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(job.work_dir, target)
    return target


def test_a_write_after_the_takeover_fails_and_changes_nothing(tmp_path):
    outbox, work = Outbox(tmp_path / "outbox"), tmp_path / "work"
    job = claimed_job(work)
    stale, _ = Sidecar.open(outbox, job, host=HOST_A, engine="warp", generation=1, fence=job.work_dir)
    stale.queued()
    assert read_document(outbox.path_for("talk"))["state"] == "queued"

    moved = take_over(job, work)  # from here on host A's folder does not exist
    new, _ = Sidecar.open(outbox, job, host=HOST_B, engine="warp", generation=2, fence=moved)
    assert new.doc["id"] == job.id and new.doc["host"] == HOST_B  # the record found, now the taker's
    new.rendering(engine="warp", outputs=[("talk.mp4", "talk.mp4")])
    before = outbox.path_for("talk").read_bytes()

    with pytest.raises(RecordFenced, match="taken over"):
        stale.rendering(engine="warp", outputs=[("talk.mp4", "talk.mp4")])
    with pytest.raises(RecordFenced):
        stale.failed(PermanentJobError("x", code="bad_media"), retryable=False)
    assert outbox.path_for("talk").read_bytes() == before
    assert not job.work_dir.exists()  # the stale writer did not recreate its folder either
    assert [p.name for p in moved.iterdir()] == ["inputs"]  # its temp file did not stay behind either


def test_an_older_generation_is_refused_even_where_the_folder_fence_leaks(tmp_path):
    # on a network filesystem a cached path could let a stale rename through; the
    # generation stamped into the record still refuses it
    outbox, work = Outbox(tmp_path / "outbox"), tmp_path / "work"
    job = claimed_job(work)
    moved = take_over(job, work)
    new, _ = Sidecar.open(outbox, job, host=HOST_B, engine="warp", generation=2, fence=moved)
    new.queued()
    job.work_dir.mkdir(parents=True)  # the leak: host A's path exists again
    stale, _ = Sidecar.open(outbox, job, host=HOST_A, engine="warp", generation=1, fence=job.work_dir)
    with pytest.raises(RecordFenced, match="generation 2"):
        stale.queued()
    assert read_document(outbox.path_for("talk"))["host"] == HOST_B


def test_a_final_record_never_goes_back(tmp_path):
    outbox, work = Outbox(tmp_path / "outbox"), tmp_path / "work"
    job = claimed_job(work)
    rec, _ = Sidecar.open(outbox, job, host=HOST_A, engine="warp", generation=1, fence=job.work_dir)
    rec.failed(PermanentJobError("talk.wav is empty", code="bad_media", file="talk.wav"), retryable=False)
    again, resumed = Sidecar.open(outbox, job, host=HOST_A, engine="warp", generation=1, fence=job.work_dir)
    assert resumed and again.state is State.FAILED
    with pytest.raises(RecordFenced, match="final"):
        again.queued()
    # nor through the housekeeping door
    entry = outbox.read("talk")
    assert not outbox.replace_if_unchanged(entry, {**entry.doc, "state": "queued", "error": None})
    assert read_document(outbox.path_for("talk"))["state"] == "failed"


# --------------------------------------------------------------------------- real daemons


def dropped_lines(daemon: Daemon) -> int:
    return sum(1 for e in daemon.log_events() if e.get("event", "").startswith("job taken over by another daemon"))


FAST_CLUSTER = {"lease_timeout": 2, "heartbeat_interval": 0.5}
FAST_WATCH = {"rescan_interval": 0.5}
# phases to freeze at, and how many rounds each: 20 rounds in all
PHASES = [("before_lease", 4), ("claimed", 4), ("render_progress", 4), ("after_upload", 4),
          ("before_sidecar_done", 4)]


@pytest.mark.slow
def test_a_woken_host_never_rolls_back_a_job_another_host_finished(tmp_path, store, media):
    share = Share(tmp_path / "share")
    # B never claims from the inbox (its files never settle for it): it only takes over
    taker = Daemon(tmp_path, share, store, HOST_B,
                   extra={"cluster": FAST_CLUSTER, "watch": {**FAST_WATCH, "settle_seconds": 3600}})
    sleeper = Daemon(tmp_path, share, store, HOST_A, extra={"cluster": FAST_CLUSTER, "watch": FAST_WATCH})
    taker.start()
    finals: dict[str, bytes] = {}
    try:
        for phase, rounds in PHASES:
            sleeper.start(failpoints=f"{phase}=stop@job")
            for r in range(rounds):
                name = f"{phase.replace('_', '-')}-{r}"
                share.drop_job(name, media)
                wait_until(lambda: frozen(sleeper.pid), 60, f"{name}: the sleeper frozen at {phase}",
                           daemons=[sleeper])
                doc = share.wait_for([name], ("done",), timeout=60, daemons=[taker])[name]
                assert doc["host"] == HOST_B and doc["generation"] >= 2, doc
                finals[name] = (share.outbox / f"{name}.json").read_bytes()
                seen = dropped_lines(sleeper)
                os.kill(sleeper.pid, signal.SIGCONT)
                wait_until(lambda: dropped_lines(sleeper) > seen, 30, f"{name}: the sleeper noticing",
                           daemons=[sleeper])
                assert sleeper.alive, sleeper.log_tail()
            sleeper.terminate(20)
        time.sleep(1.0)  # room for any late damage
        for name, data in finals.items():  # every record exactly as its finisher left it
            assert (share.outbox / f"{name}.json").read_bytes() == data, name
        keys = {share.sidecar(n)["outputs"][0]["key"] for n in finals}
        assert set(store.objects("videos/")) == keys  # no object that no sidecar names
        assert share.work_jobs() == []  # no frozen host's folder left to bounce between daemons
        texts = sleeper.log_text() + taker.log_text()
        assert "work folder without a job record" not in texts
        assert "Traceback" not in texts
        assert "lease lost" not in taker.log_text()  # its own normal finishes are no takeovers
        assert sorted(p.name for p in (share.root / "done").iterdir()) == sorted(finals)
    finally:
        for d in (sleeper, taker):
            if d.alive:
                os.kill(d.pid, signal.SIGCONT)
                d.terminate(20)


@pytest.mark.slow
def test_a_host_frozen_after_its_final_record_wakes_to_find_the_job_filed_and_drops_it_quietly(
        tmp_path, store, media):
    # the sleeper finished the job -- its "done" record stands -- and froze before filing the
    # inputs; the taker finds the record final and files them; the sleeper, woken, must see
    # the job gone to another host, not crash over the folder that is no longer there
    share = Share(tmp_path / "share")
    taker = Daemon(tmp_path, share, store, HOST_B,
                   extra={"cluster": FAST_CLUSTER, "watch": {**FAST_WATCH, "settle_seconds": 3600}})
    sleeper = Daemon(tmp_path, share, store, HOST_A, extra={"cluster": FAST_CLUSTER, "watch": FAST_WATCH})
    taker.start()
    sleeper.start(failpoints="after_sidecar_done=stop@job")
    try:
        share.drop_job("filed-by-b", media)
        wait_until(lambda: frozen(sleeper.pid), 60, "the sleeper frozen after its final record", daemons=[sleeper])
        doc = share.wait_for(["filed-by-b"], ("done",), timeout=60, daemons=[taker])["filed-by-b"]
        assert doc["host"] == HOST_A and doc["generation"] == 1, doc  # the finisher's record, as it wrote it
        final = (share.outbox / "filed-by-b.json").read_bytes()
        assert sorted(p.name for p in (share.root / "done" / "filed-by-b").iterdir()) == \
            sorted(["filed-by-b.mp4", "filed-by-b.wav", "job.json"])
        seen = dropped_lines(sleeper)
        os.kill(sleeper.pid, signal.SIGCONT)
        wait_until(lambda: dropped_lines(sleeper) > seen, 30, "the sleeper noticing", daemons=[sleeper])
        time.sleep(1.0)  # room for any late damage
        assert (share.outbox / "filed-by-b.json").read_bytes() == final
        assert sleeper.alive
        assert share.work_jobs() == []
        texts = sleeper.log_text() + taker.log_text()
        assert "Traceback" not in texts and "crashed" not in texts
        # announced once (webhooks hang off the same "job finished"), by the host that filed it
        finished = [e for d in (sleeper, taker) for e in d.log_events() if e.get("event") == "job finished"]
        assert [(e["job"], e["state"]) for e in finished] == [("filed-by-b", "done")]
    finally:
        for d in (sleeper, taker):
            if d.alive:
                os.kill(d.pid, signal.SIGCONT)
                d.terminate(20)


CLAIM_PHASES = ["claim_record", "claim_moved", "before_lease", "claimed"]


@pytest.mark.slow
@pytest.mark.parametrize("phase", CLAIM_PHASES)
def test_a_claim_whose_folder_is_pulled_away_never_ends_the_daemon(tmp_path, store, media, phase):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, HOST_A, extra={"cluster": FAST_CLUSTER, "watch": FAST_WATCH})
    daemon.start(failpoints=f"{phase}=stop*1")
    try:
        share.drop_job("pulled", media)
        wait_until(lambda: frozen(daemon.pid), 60, f"frozen at {phase}", daemons=[daemon])
        (job_dir,) = share.work_jobs()
        ghost = share.work / "ghost" / job_dir.name  # what another daemon's takeover does
        ghost.parent.mkdir(parents=True)
        os.rename(job_dir, ghost)
        os.kill(daemon.pid, signal.SIGCONT)
        # nothing is lost: the files come back to this daemon (rolled back, or taken over
        # from the "ghost" host once its lease is stale) and the job is done
        share.wait_for(["pulled"], ("done",), timeout=60, daemons=[daemon])
        share.drop_job("next", media)  # and it carries on with other jobs
        share.wait_for(["next"], ("done",), timeout=60, daemons=[daemon])
        assert daemon.alive
        assert "Traceback" not in daemon.log_text()
        wait_until(lambda: not share.work_jobs(), 20, "work area emptied", daemons=[daemon])
    finally:
        if daemon.alive:
            os.kill(daemon.pid, signal.SIGCONT)
        daemon.terminate(20)

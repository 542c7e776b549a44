"""kill -9 at every awkward moment of a job, then a restart: the job finishes exactly once.

The daemon runs as a real subprocess; ``LIPSYNCD_FAILPOINTS`` makes it SIGKILL itself at a
named phase (daemon/failpoints.py), so "between the upload and the sidecar write" is hit
every time, not by luck.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from daemon import failpoints
from tests import outbox_files as sidecar
from tests.daemon_harness import REPO, Daemon, NotifySocket, Share, Store, download, frozen, wait_until

JOB = "crash"


def job_objects(store: Store) -> dict[str, int]:
    return {k: v for k, v in store.objects().items() if f"/{JOB}-" in k}


# (phase, what the job's sidecar says while the daemon lies dead, whether the video is stored by then)
PHASES = [
    ("claimed", "queued", False),  # inputs renamed into the work area; the claim wrote the first record
    ("render_progress", "rendering", False),
    ("after_render", "rendering", False),
    ("before_upload", "uploading", False),
    ("after_upload", "uploading", True),  # the object is stored; the sidecar does not know
    ("before_sidecar_done", "uploading", True),
    ("after_sidecar_done", "done", True),  # sidecar done, inputs not yet in done/
    ("after_finish", "done", True),
]


@pytest.mark.parametrize("phase,state_when_dead,stored_before_crash", PHASES, ids=[p[0] for p in PHASES])
def test_kill_9_then_restart_finishes_exactly_once(tmp_path, store, media, phase, state_when_dead,
                                                   stored_before_crash):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, f"crash-{phase.replace('_', '-')}")
    before = set(store.objects())
    daemon.start(failpoints=f"{phase}=kill")
    share.drop_job(JOB, media)
    assert daemon.wait_exit(60) == -signal.SIGKILL, daemon.log_tail()

    dead = share.sidecar(JOB)
    assert (dead or {}).get("state") == state_when_dead
    stored_when_dead = {k: v for k, v in store.objects().items() if k not in before}
    assert bool(stored_when_dead) == stored_before_crash
    head_when_dead = {k: store.client().head_object(Bucket=store.bucket, Key=k) for k in stored_when_dead}

    daemon.start()  # no failpoints this time
    try:
        (doc,) = share.wait_for([JOB], ("done",), timeout=60, daemons=[daemon]).values()
        wait_until(lambda: not share.work_jobs(), 20, "work area emptied", daemons=[daemon])
    finally:
        daemon.terminate()

    assert sidecar.validate(doc) == []
    (out,) = doc["outputs"]
    # exactly one object, and the link serves exactly the bytes the sidecar describes
    new_objects = {k: v for k, v in store.objects().items() if k not in before}
    assert new_objects == {out["key"]: out["size"]}
    body = download(out["url"])
    assert hashlib.sha256(body).hexdigest() == out["sha256"]
    # an object stored before the crash was not uploaded a second time
    for key, head in head_when_dead.items():
        again = store.client().head_object(Bucket=store.bucket, Key=key)
        assert (again["ETag"], again["LastModified"]) == (head["ETag"], head["LastModified"])
    if phase in ("after_upload", "before_sidecar_done"):
        # found by key + size + sha256 after the restart instead of being sent again
        assert "upload skipped: identical object already stored" in daemon.log_text()
    # inputs kept, exactly once, in done/; nothing left in the inbox, work area or as temp files
    assert sorted(p.name for p in (share.root / "done" / JOB).iterdir()) == ["crash.mp4", "crash.wav", "job.json"]
    assert (share.root / "done" / JOB / "crash.wav").read_bytes() == media.audio.read_bytes()
    assert [p.name for p in (share.root / "done").iterdir()] == [JOB]
    assert list((share.root / "failed").iterdir()) == []
    assert [p for p in share.inbox.iterdir() if not p.name.startswith(".")] == []
    assert share.work_jobs() == []
    assert share.leftovers() == []
    assert sorted(share.sidecars()) == [JOB]


# --------------------------------------------------------------------------- the hook itself


def run_python(code: str, spec: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV_VAR}
    if spec is not None:
        env[failpoints.ENV_VAR] = spec
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)


def test_failpoint_kill_is_a_real_sigkill():
    code = "from daemon.failpoints import failpoint\nfailpoint('before_render')\nprint('reached')\n" \
           "failpoint('after_upload')\nprint('survived')"
    r = run_python(code, "after_upload=kill")
    assert r.returncode == -signal.SIGKILL
    assert r.stdout.split() == ["reached"]


def test_failpoints_do_nothing_unless_configured():
    code = "from daemon import failpoints as f\nfor p in f.PHASES: f.failpoint(p)\nprint(f.ARMED)"
    r = run_python(code, None)
    assert (r.returncode, r.stdout.strip()) == (0, "False")


def test_failpoint_sleep_raise_and_exit():
    code = ("import time\nfrom daemon.failpoints import failpoint, FailpointError\nt = time.monotonic()\n"
            "failpoint('before_upload')\nprint(round(time.monotonic() - t, 1))\n"
            "try:\n    failpoint('after_render')\nexcept FailpointError as e:\n    print(e)\n"
            "failpoint('after_finish')\nprint('not here')")
    r = run_python(code, "before_upload=sleep:0.3, after_render=raise, after_finish=exit:7")
    assert r.returncode == 7
    lines = r.stdout.splitlines()
    assert float(lines[0]) >= 0.3
    assert lines[1] == "failpoint after_render triggered"
    assert "not here" not in r.stdout


# A worker thread reaches the failpoint while the main thread waits, both on one CPU, the main
# thread as SCHED_BATCH, which never preempts a running thread when it wakes: the thread that
# would start a process-wide stop waits for the worker's time slice to end -- a busy machine,
# made certain. The marker file is the write the stop must come before (in the daemon: the
# final sidecar).
STOP_CHILD = """
import os, sys, threading
from daemon.failpoints import failpoint
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
go = threading.Event()
def worker():
    go.wait()
    failpoint("before_sidecar_done", "job-1")
    open(sys.argv[1], "w").close()
thread = threading.Thread(target=worker)
thread.start()
os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
go.set()
thread.join()
print("resumed")
"""


def test_failpoint_stop_freezes_the_thread_that_reached_it_before_it_runs_on(tmp_path):
    marker = tmp_path / "written-after-the-stop"
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV_VAR}
    env[failpoints.ENV_VAR] = "before_sidecar_done=stop@job"
    child = subprocess.Popen([sys.executable, "-c", STOP_CHILD, str(marker)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: frozen(child.pid) or child.poll() is not None, 30, "the child stopped")
        assert child.poll() is None, child.communicate()[0]
        time.sleep(0.3)  # a thread that ran on past the stop would have written by now
        assert not marker.exists(), "the thread ran on past its stop failpoint"
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
        assert (child.returncode, out.strip()) == (0, "resumed")
        assert marker.exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("spec,complaint", [
    ("after_uplaod=kill", "after_uplaod"),  # a typo must not silently test nothing
    ("after_upload=explode", "unknown action"),
    ("after_upload", "PHASE=ACTION"),
    ("after_upload=sleep:x", "after_upload=sleep:x"),
])
def test_bad_failpoint_specs_are_refused_at_start(spec, complaint):
    with pytest.raises(ValueError, match=complaint):
        failpoints.parse(spec)


def test_abandoned_sidecar_temp_files_are_swept_and_nothing_else(tmp_path):
    from daemon import config as config_mod
    from daemon.cluster import leftovers

    cfg = config_mod.from_dict({"paths": {"inbox": "inbox", "outbox": "outbox"}}, base=tmp_path)
    cfg.paths.outbox.mkdir()
    (tmp_path / "inbox").mkdir()

    def temp_like_sidecar_write(job: str) -> Path:  # the same naming as daemon.atomic.write_atomic gives a sidecar
        fd, name = tempfile.mkstemp(prefix=f".{job}.json.", suffix=".tmp", dir=cfg.paths.outbox)
        os.close(fd)
        return Path(name)

    old, fresh = temp_like_sidecar_write("talk"), temp_like_sidecar_write("intro")
    keep = [cfg.paths.outbox / "talk.json", cfg.paths.outbox / ".notes.tmp", cfg.paths.outbox / "x.json.tmp"]
    for p in keep:
        p.write_text("{}")
    past = time.time() - 120
    for p in [old, *keep]:
        os.utime(p, (past, past))
    assert leftovers.sweep_outbox(cfg, older_than=60) == [old]
    assert sorted(p.name for p in cfg.paths.outbox.iterdir()) == sorted([fresh.name, *(p.name for p in keep)])


# --------------------------------------------------------------------------- a hung main loop


def test_a_hung_main_loop_stops_the_watchdog_pings_while_the_lease_stays_fresh(tmp_path, store, media):
    """systemd restarts a daemon whose loop hangs: pings come from the loop only. The lease
    heartbeat runs in its own thread and would keep the job from other hosts, which is why
    the watchdog, not the lease, is what recovers a hung (not dead) host."""
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "hung-loop")
    path = f"/tmp/lipsyncd-test-{uuid.uuid4().hex[:12]}.sock"
    systemd = NotifySocket(path)
    try:
        # the loop claims jobs itself; the failpoint hangs it right after a claim for 3 s
        daemon.start(failpoints="claimed=sleep:3", extra_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        wait_until(lambda: systemd.with_key("READY", "1"), 60, "READY=1", daemons=[daemon])
        wait_until(lambda: len(systemd.times("WATCHDOG")) >= 5, 10, "regular pings", daemons=[daemon])
        share.drop_job(JOB, media)
        (job_dir,) = wait_until(lambda: [j for j in share.work_jobs() if (j / "lease").exists()], 30, "a claim",
                                daemons=[daemon])
        claimed_at = time.monotonic()
        first_renewal = (job_dir / "lease").stat().st_mtime
        time.sleep(2.5)
        silent = [t for t in systemd.times("WATCHDOG") if t > claimed_at]
        assert silent == [] or silent[0] - claimed_at > 2.0, "the loop pinged while it was hung"
        assert (job_dir / "lease").stat().st_mtime > first_renewal  # the heartbeat thread went on
        share.wait_for([JOB], ("done",), timeout=60, daemons=[daemon])
        assert systemd.times("WATCHDOG")[-1] > claimed_at + 2.5  # pinging again once the loop runs
    finally:
        daemon.terminate()
        systemd.close()
        os.unlink(path)

"""Leases on a shared work area: two "hosts" (two configs, one share) on real files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.cluster import lease


def host_config(share: Path, host: str, *, timeout: float = 10, interval: float = 1) -> config_mod.Config:
    return config_mod.from_dict({
        "paths": {"inbox": "inbox", "outbox": "outbox", "done": "done", "failed": "failed", "state": f"state-{host}"},
        "cluster": {"host_id": host, "lease_timeout": timeout, "heartbeat_interval": interval},
    }, base=share)


def claimed_job(cfg: config_mod.Config, job_id: str) -> Path:
    """A job folder as a claim leaves it: inputs renamed in, lease written."""
    job_dir = cfg.host_work_dir / job_id
    job_dir.mkdir(parents=True)
    (job_dir / "talk.wav").write_bytes(b"RIFF-audio")
    lease.write_lease(job_dir, host=cfg.host_id, job_id=job_id)
    return job_dir


def age_lease(job_dir: Path, seconds: float) -> None:
    """Make the lease look as if its last renewal was ``seconds`` ago."""
    past = time.time() - seconds
    os.utime(job_dir / lease.LEASE_FILE, (past, past))


@pytest.fixture
def share(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    return tmp_path


def test_lease_names_owner_and_job(share):
    a = host_config(share, "gpu-a")
    job_dir = claimed_job(a, "talk-1")
    got = lease.read_lease(job_dir)
    assert got.host == "gpu-a" and got.job_id == "talk-1"
    assert lease.still_owner(job_dir, "gpu-a")
    assert not lease.still_owner(job_dir, "gpu-b")
    assert oct((job_dir / "lease").stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in job_dir.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_renew_moves_lease_time_to_share_now(share):
    a = host_config(share, "gpu-a")
    job_dir = claimed_job(a, "talk-1")
    age_lease(job_dir, 100)
    assert a.cluster.lease_timeout < share_age(a, job_dir)
    assert lease.renew(job_dir)
    assert share_age(a, job_dir) < 2


def share_age(cfg, job_dir):
    return lease.share_now(cfg) - lease.read_lease(job_dir).renewed_at


def test_share_clock_probe_is_per_host_and_hidden_from_scans(share):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    before = time.time()
    now = lease.share_now(a)
    lease.share_now(b)
    assert before - 2 <= now <= time.time() + 2
    assert sorted(p.name for p in a.work_dir.iterdir()) == [".clock-gpu-a", ".clock-gpu-b"]
    assert lease.find_stale_jobs(a) == []


def test_fresh_leases_are_left_alone(share):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    claimed_job(a, "talk-1")
    job_dir = claimed_job(a, "talk-2")
    age_lease(job_dir, 5)  # older than a heartbeat, younger than the timeout
    assert lease.find_stale_jobs(b) == []


def test_stale_lease_is_found_and_taken_over(share):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    job_dir = claimed_job(a, "talk-1")
    claimed_job(a, "talk-2")
    age_lease(job_dir, 60)
    stale = lease.find_stale_jobs(b)
    assert [(s.host, s.job_id) for s in stale] == [("gpu-a", "talk-1")]
    assert 55 < stale[0].age < 70
    # a host never takes over its own jobs: it resumes them when it restarts
    assert lease.find_stale_jobs(a) == []

    new_dir = lease.take_over(stale[0], b)
    assert new_dir == b.host_work_dir / "talk-1"
    assert not job_dir.exists()
    assert (new_dir / "talk.wav").read_bytes() == b"RIFF-audio"
    got = lease.read_lease(new_dir)
    assert got.host == "gpu-b" and got.taken_over_from == "gpu-a"
    assert share_age(b, new_dir) < 2  # fresh lease: nobody takes it from the taker
    assert lease.find_stale_jobs(a) == []


def test_woken_host_finds_it_is_no_longer_owner(share):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    job_dir = claimed_job(a, "talk-1")
    beat = lease.Heartbeat(a.cluster.heartbeat_interval)
    beat.add(job_dir)
    age_lease(job_dir, 60)  # host a "stalled": no renewal for a minute
    lease.take_over(lease.find_stale_jobs(b)[0], b)
    # host a wakes up: its heartbeat cannot renew and its pre-write check says no
    assert beat.beat() == [job_dir]
    assert beat.lost(job_dir)
    assert not lease.still_owner(job_dir, "gpu-a")
    assert not lease.renew(job_dir)
    assert lease.still_owner(b.host_work_dir / "talk-1", "gpu-b")


def test_only_one_of_several_takers_wins(share):
    a = host_config(share, "gpu-a")
    takers = [host_config(share, f"gpu-{n}") for n in "bcdef"]
    job_dir = claimed_job(a, "talk-1")
    age_lease(job_dir, 60)
    found = [lease.find_stale_jobs(t)[0] for t in takers]  # all saw it stale
    go = threading.Barrier(len(takers))
    results: dict[str, object] = {}

    def take(cfg, stale):
        go.wait()
        try:
            results[cfg.host_id] = lease.take_over(stale, cfg)
        except (FileNotFoundError, lease.LeaseHeldError) as e:
            results[cfg.host_id] = e

    threads = [threading.Thread(target=take, args=(t, s)) for t, s in zip(takers, found)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = {h: r for h, r in results.items() if isinstance(r, Path)}
    assert len(winners) == 1
    (host, path), = winners.items()
    assert lease.still_owner(path, host)
    assert sum(1 for t in takers if (t.host_work_dir / "talk-1").exists()) == 1
    assert not job_dir.exists()


def test_take_over_refuses_a_lease_renewed_meanwhile(share):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    job_dir = claimed_job(a, "talk-1")
    age_lease(job_dir, 60)
    stale = lease.find_stale_jobs(b)[0]
    lease.renew(job_dir)  # the owner was only slow, and is back
    with pytest.raises(lease.LeaseHeldError):
        lease.take_over(stale, b)
    assert lease.still_owner(job_dir, "gpu-a")


def test_take_over_of_a_finished_job_is_file_not_found(share):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    job_dir = claimed_job(a, "talk-1")
    age_lease(job_dir, 60)
    stale = lease.find_stale_jobs(b)[0]
    for p in job_dir.iterdir():
        p.unlink()
    job_dir.rmdir()  # its owner finished it after all
    with pytest.raises(FileNotFoundError):
        lease.take_over(stale, b)


def test_job_without_lease_ages_by_its_folder(share):
    """A host that died between claim and lease write must not orphan the job."""
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    job_dir = a.host_work_dir / "talk-1"
    job_dir.mkdir(parents=True)
    (job_dir / "talk.wav").write_bytes(b"x")
    assert lease.find_stale_jobs(b) == []
    past = time.time() - 60
    os.utime(job_dir, (past, past))
    new_dir = lease.take_over(lease.find_stale_jobs(b)[0], b)
    assert lease.still_owner(new_dir, "gpu-b")


def test_unreadable_lease_is_nobodys(share):
    a = host_config(share, "gpu-a")
    job_dir = claimed_job(a, "talk-1")
    (job_dir / "lease").write_bytes(b"")  # a crash mid-write on a share without atomic rename
    assert lease.read_lease(job_dir).host is None
    assert not lease.still_owner(job_dir, "gpu-a")


def test_scans_ignore_symlinks_and_stray_files(share, tmp_path_factory):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "job").mkdir()
    a.host_work_dir.mkdir(parents=True)
    (a.host_work_dir / "evil").symlink_to(outside / "job")
    (a.host_work_dir / "notes.txt").write_text("x")
    (a.work_dir / "evil-host").symlink_to(outside)
    past = time.time() - 600
    os.utime(outside / "job", (past, past))
    assert lease.find_stale_jobs(b) == []


def test_heartbeat_thread_keeps_a_lease_fresh(share):
    a, b = host_config(share, "gpu-a", timeout=5, interval=1), host_config(share, "gpu-b", timeout=5, interval=1)
    job_dir = claimed_job(a, "talk-1")
    age_lease(job_dir, 4)
    with lease.Heartbeat(0.2) as beat:
        beat.add(job_dir)
        deadline = time.time() + 5
        while beat.rounds < 2 and time.time() < deadline:
            time.sleep(0.05)
    assert beat.rounds >= 2
    assert share_age(b, job_dir) < 1
    assert lease.find_stale_jobs(b) == []


def test_lost_callback_fires_once(share):
    a, b = host_config(share, "gpu-a"), host_config(share, "gpu-b")
    job_dir = claimed_job(a, "talk-1")
    calls: list[Path] = []
    beat = lease.Heartbeat(1, on_lost=calls.append)
    beat.add(job_dir)
    age_lease(job_dir, 60)
    lease.take_over(job_dir, b)
    beat.beat()
    beat.beat()
    assert calls == [job_dir]
    assert beat.jobs == frozenset()


@pytest.mark.parametrize("bad", ["../other", "a/b", ".hidden", "x" * 65, "gpu 01"])
def test_host_ids_that_are_not_safe_folder_names_are_refused(share, bad):
    with pytest.raises(config_mod.ConfigError, match="cluster.host_id"):
        host_config(share, bad)


def test_a_lease_write_cut_short_leaves_nothing_behind_after_the_next_one(share):
    a = host_config(share, "gpu-a")
    job_dir = claimed_job(a, "talk-1")
    (job_dir / ".lease.k3j2h1g0.tmp").write_text('{"host": "gpu-a"')  # kill -9 mid-write
    lease.write_lease(job_dir, host="gpu-a", job_id="talk-1")
    assert sorted(p.name for p in job_dir.iterdir()) == ["lease", "talk.wav"]
    assert lease.still_owner(job_dir, "gpu-a")

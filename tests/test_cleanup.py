"""Cleanup: exactly what is older than its retention goes, nothing in progress, dry-run keeps all."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests import outbox_files as sidecar
from daemon.intake import claims
from daemon.housekeeping.cleanup import run_cleanup
from daemon.cli import main
from daemon.jobs import JobSpec
from tests.test_status import make_config, make_sidecar, write_config_file

DAY = 86400.0


def age_tree(path: Path, days: float) -> Path:
    """Set the mtime of ``path`` and everything below it to ``days`` ago."""
    t = time.time() - days * DAY
    for root, dirs, files in os.walk(path, topdown=False):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (t, t), follow_symlinks=False)
    os.utime(path, (t, t))
    return path


def job_folder(root: Path, name: str, days: float, files: tuple[str, ...] = ("talk.wav", "face.mp4")) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for f in files:
        (folder / f).write_bytes(b"x" * 100)
    return age_tree(folder, days)


def claim_job(cfg, name: str) -> Path:
    inbox = cfg.paths.inbox
    (inbox / f"{name}.wav").write_bytes(b"RIFF")
    (inbox / f"{name}.mp4").write_bytes(b"\0" * 10)
    job = claims.claim(JobSpec(name=name, audio=inbox / f"{name}.wav", templates=[inbox / f"{name}.mp4"],
                               files=[inbox / f"{name}.wav", inbox / f"{name}.mp4"]), cfg)
    assert job is not None
    return job.work_dir


@pytest.fixture
def share(tmp_path: Path):
    """Every area with entries older and younger than retention, and jobs in progress."""
    cfg = make_config(tmp_path, paths={"outputs": "videos"},
                      cleanup={"done_retention": "14d", "failed_retention": "30d", "outputs_retention": "7d",
                               "work_retention": "7d"})
    p = cfg.paths
    expect_gone = [
        job_folder(p.done, "old-talk", 20),
        job_folder(p.done, "old-talk.talk-20240101T000000Z-aa11", 40),  # an earlier run moved aside
        job_folder(p.failed, "old-broken", 45),
    ]
    expect_kept = [
        job_folder(p.done, "recent-talk", 3),
        job_folder(p.failed, "recent-broken", 20),
    ]
    # old inputs, but one file was added yesterday: the folder is young
    mixed = job_folder(p.done, "mixed", 20)
    (mixed / "late.txt").write_text("added later")
    expect_kept.append(mixed)
    # a job named like an old done/ folder is rendering again right now
    make_sidecar(p.outbox, "again", "rendering", job_id="again-20250102T000000Z-cc33")
    expect_kept.append(job_folder(p.done, "again", 20))

    # local copies: <outputs>/<job id>/<name>.mp4
    old_id, new_id, busy_id = "old-20250101T000000Z-dd44", "new-20250101T000000Z-ee55", "busy-20250101T000000Z-ff66"
    old_copy = job_folder(p.outputs, old_id, 10, files=("old.mp4",)) / "old.mp4"
    expect_kept.append(job_folder(p.outputs, new_id, 2, files=("new.mp4",)) / "new.mp4")
    make_sidecar(p.outbox, "busy", "uploading", job_id=busy_id)
    expect_kept.append(job_folder(p.outputs, busy_id, 10, files=("busy.mp4",)) / "busy.mp4")
    expect_gone.append(old_copy)
    sc = make_sidecar(p.outbox, "old", "done", job_id=old_id)
    doc = sidecar.read(sc)
    doc["outputs"][0]["local_path"] = str(old_copy)
    sidecar.write(sc, doc)

    # work area: an abandoned folder without a claim record, a finished job's leftover,
    # an unfinished claim waiting for its daemon, and a job being rendered
    host = cfg.host_work_dir
    expect_gone.append(job_folder(host, "junk-20250101T000000Z-0001", 9, files=("partial.mp4",)))
    # a claim of another host whose job finished (its sidecar is final) but whose folder stayed
    finished = claim_job(cfg, "gone")
    leftover = cfg.work_dir / "gpu-02" / finished.name
    leftover.parent.mkdir()
    finished.rename(leftover)
    make_sidecar(p.outbox, "gone", "done", job_id=finished.name)
    expect_gone.append(age_tree(leftover, 9))
    unfinished = age_tree(claim_job(cfg, "unfinished"), 9)
    rendering = claim_job(cfg, "rendering")
    make_sidecar(p.outbox, "rendering", "rendering", job_id=rendering.name)
    age_tree(rendering, 9)
    expect_kept += [unfinished, rendering]
    in_use = {p.done / "again", p.outputs / busy_id / "busy.mp4", unfinished, rendering}
    return cfg, expect_gone, expect_kept, old_copy, sc, in_use


def test_cleanup_removes_exactly_what_is_older_than_retention(share):
    cfg, gone, kept, old_copy, sc, in_use = share
    with capture_logs() as logs:
        report = run_cleanup(cfg)
    assert sorted(r.target for r in report.removed) == sorted(map(str, gone))
    for path in gone:
        assert not path.exists(), path
    for path in kept:
        assert path.exists(), path
    assert not old_copy.parent.exists()  # the emptied <job id> folder goes too
    assert "local_path" not in sidecar.read(sc)["outputs"][0]  # no pointer to a deleted file
    assert report.ok and report.errors == []
    # every deletion: one line saying what, how old, and why
    deleted = [e for e in logs if e["event"] == "deleted"]
    assert sorted(e["path"] for e in deleted) == sorted(map(str, gone))
    old_talk = next(e for e in deleted if e["path"].endswith("done/old-talk"))
    assert old_talk["age"] == "20d0h" and old_talk["retention"] == "14d0h"
    assert "done_retention" in old_talk["reason"]
    # what was old enough but in use is reported, with the reason
    assert sorted(report.kept_in_progress) == sorted(map(str, in_use))
    # an unfinished claim is kept: its first record (written by the claim) says it is queued
    assert any(e["event"] == "kept" and "/unfinished-" in e.get("path", "") and "in progress" in e["reason"]
               for e in logs)
    assert any(e["event"] == "kept" and "in progress" in e["reason"] for e in logs)


def test_dry_run_lists_the_same_and_deletes_nothing(share):
    cfg, gone, kept, _old_copy, sc, _in_use = share
    before = sidecar.read(sc)
    with capture_logs() as logs:
        report = run_cleanup(cfg, dry_run=True)
    assert report.dry_run
    assert sorted(r.target for r in report.removed) == sorted(map(str, gone))
    for path in gone + kept:
        assert path.exists(), path
    assert sidecar.read(sc) == before
    assert [e for e in logs if e["event"] == "deleted"] == []
    assert len([e for e in logs if e["event"] == "would delete"]) == len(gone)


def test_retention_zero_keeps_an_area_forever(share):
    cfg, *_ = share
    cfg.cleanup.done_retention = 0
    cfg.cleanup.failed_retention = 0
    report = run_cleanup(cfg)
    assert (cfg.paths.done / "old-talk").exists() and (cfg.paths.failed / "old-broken").exists()
    assert {r.area for r in report.removed} == {"outputs", "work"}


def test_config_dry_run_is_honoured_and_cli_flag_forces_it(tmp_path, capsys):
    cfgfile = write_config_file(tmp_path, "\n[cleanup]\ndone_retention = \"1d\"\n")
    old = job_folder(tmp_path / "done", "old", 3)
    assert main(["cleanup", "-c", str(cfgfile), "--dry-run", "--log-level", "warning"]) == 0
    out = capsys.readouterr().out
    assert f"would delete done: {old} (age 3d0h, retention 1d0h)" in out
    assert old.exists()
    assert main(["cleanup", "-c", str(cfgfile), "--log-level", "warning"]) == 0
    assert f"deleted done: {old}" in capsys.readouterr().out
    assert not old.exists()


def test_cleanup_of_an_empty_share_creates_nothing(tmp_path):
    cfg = make_config(tmp_path)
    report = run_cleanup(cfg)
    assert report.removed == [] and report.ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inbox"]


# --------------------------------------------------------------------------- the bucket (real SeaweedFS)


@pytest.fixture
def remote(seaweed, bucket, tmp_path):
    """Objects uploaded ~2 s apart: "old" ones, and "new" ones; cleanup runs at a fixed moment."""
    from tests.test_links import done_sidecar, s3_config, upload

    cfg = s3_config(tmp_path, seaweed, bucket)
    cfg.cleanup.remote_retention = 1.5
    store = seaweed.store(cfg)
    store.ensure_bucket()
    old_id, busy_id, new_id = ("old-20250101T000000Z-0a01", "busy-20250101T000000Z-0b02",
                               "new-20250101T000000Z-0c03")
    old_key = upload(store, cfg, tmp_path, old_id, "old.mp4")
    busy_key = upload(store, cfg, tmp_path, busy_id, "busy.mp4")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not ours")
    store.upload_file(outside, "elsewhere/outside.bin", sha256=sha256_hex(outside))
    time.sleep(2.1)  # S3 times have one-second resolution
    new_key = upload(store, cfg, tmp_path, new_id, "new.mp4")
    old_sc = done_sidecar(cfg, store, "old", {"old.mp4": old_key}, lifetime=3600)
    new_sc = done_sidecar(cfg, store, "new", {"new.mp4": new_key}, lifetime=3600)
    busy_sc = done_sidecar(cfg, store, "busy", {"busy.mp4": busy_key}, lifetime=3600)
    doc = sidecar.read(busy_sc)
    doc["state"] = "uploading"  # a retry of the job is uploading its video again right now
    sidecar.write(busy_sc, doc)
    now = store.head(new_key).last_modified.timestamp() + 0.5  # new: 0.5 s old; old: > 2 s
    return cfg, store, now, {"old": old_key, "busy": busy_key, "new": new_key}, {"old": old_sc, "new": new_sc,
                                                                                   "busy": busy_sc}


def sha256_hex(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_remote_cleanup_deletes_old_videos_and_marks_their_sidecars_expired(remote):
    cfg, store, now, keys, sidecars = remote
    new_before, busy_before = sidecar.read(sidecars["new"]), sidecar.read(sidecars["busy"])
    with capture_logs() as logs:
        report = run_cleanup(cfg, store, now=now)
    bucket = cfg.storage.bucket
    assert [r.target for r in report.removed] == [f"s3://{bucket}/{keys['old']}"]
    assert store.head(keys["old"]) is None
    assert store.head(keys["new"]) is not None and store.head(keys["busy"]) is not None
    assert store.head("elsewhere/outside.bin") is not None  # outside the prefix: not ours to judge
    assert report.kept_in_progress == [f"s3://{bucket}/{keys['busy']}"]
    old = sidecar.read(sidecars["old"])
    assert old["state"] == "expired" and old["outputs"][0]["url"] is None
    assert sidecar.validate(old) == []
    assert report.expired_sidecars == [str(sidecars["old"])]
    assert sidecar.read(sidecars["new"]) == new_before and sidecar.read(sidecars["busy"]) == busy_before
    (line,) = [e for e in logs if e["event"] == "deleted"]
    assert line["object"] == f"s3://{bucket}/{keys['old']}" and "remote_retention" in line["reason"]


def test_remote_dry_run_deletes_nothing(remote):
    cfg, store, now, keys, sidecars = remote
    before = {k: sidecar.read(p) for k, p in sidecars.items()}
    report = run_cleanup(cfg, store, now=now, dry_run=True)
    assert [r.target for r in report.removed] == [f"s3://{cfg.storage.bucket}/{keys['old']}"]
    assert all(store.head(k) is not None for k in keys.values())
    assert {k: sidecar.read(p) for k, p in sidecars.items()} == before
    assert report.expired_sidecars == []


@pytest.fixture
def unfinished(seaweed, bucket, tmp_path):
    """Uploads killed mid-way: an old one (2 s older than the young one) in our prefix, a
    young one in our prefix, an old one outside it. The clock is then set so that the
    young one is just under a day old."""
    from tests.test_links import s3_config
    from tests.test_storage import start_unfinished_upload

    cfg = s3_config(tmp_path, seaweed, bucket)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    old = start_unfinished_upload(seaweed, bucket, "videos/2025/01/01/a-1/a.mp4", part=b"a" * 70_000)
    outside = start_unfinished_upload(seaweed, bucket, "elsewhere/big.bin", part=b"e" * 100)
    time.sleep(2.1)  # S3 times have one-second resolution
    young = start_unfinished_upload(seaweed, bucket, "videos/2025/01/01/b-2/b.mp4", part=b"b" * 100)
    (started,) = [u.initiated for u in store.list_incomplete_uploads() if u.upload_id == young]
    now = started.timestamp() + DAY - 0.5
    return cfg, store, now, {"old": old, "young": young, "outside": outside}


def incomplete(store) -> set[str]:
    return {u.upload_id for u in store.list_incomplete_uploads("")}


def test_uploads_left_unfinished_for_a_day_are_aborted_young_ones_kept(unfinished):
    cfg, store, now, ids = unfinished
    with capture_logs() as logs:
        report = run_cleanup(cfg, store, now=now)
    old_target = f"s3://{cfg.storage.bucket}/videos/2025/01/01/a-1/a.mp4?uploadId={ids['old']}"
    assert [(r.area, r.target, r.size) for r in report.removed] == [("unfinished-upload", old_target, 70_000)]
    assert report.removed[0].age > DAY and report.ok
    assert incomplete(store) == {ids["young"], ids["outside"]}  # in progress elsewhere / not ours to judge
    (line,) = [e for e in logs if e["event"] == "aborted"]
    assert line["object"] == old_target and line["bytes"] == 70_000 and "interrupted upload" in line["reason"]


def test_dry_run_only_lists_unfinished_uploads(unfinished):
    cfg, store, now, ids = unfinished
    with capture_logs() as logs:
        report = run_cleanup(cfg, store, now=now, dry_run=True)
    assert [r.target.rsplit("=", 1)[1] for r in report.removed] == [ids["old"]]
    assert incomplete(store) == set(ids.values())
    assert [e["event"] for e in logs if e.get("area") == "unfinished-upload"] == ["would abort"]


def test_lifecycle_rule_is_installed_in_whole_days(seaweed, bucket, tmp_path):
    from daemon.housekeeping.cleanup import apply_lifecycle_rule
    from tests.test_links import s3_config

    cfg = s3_config(tmp_path, seaweed, bucket)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    assert apply_lifecycle_rule(cfg, store) is None  # not asked for
    assert store.lifecycle_expiration_days() is None
    cfg.cleanup.lifecycle_rule = True
    cfg.cleanup.remote_retention = 36 * 3600.0
    assert apply_lifecycle_rule(cfg, store) == 2
    assert store.lifecycle_expiration_days() == 2
    # the store also aborts what interrupted uploads leave, as the cleanup pass does
    (rule,) = seaweed.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_cleanup_command_joins_the_running_embedded_store(seaweed, bucket, tmp_path, capsys):
    """Run from a timer beside the daemon, the command must use the daemon's store, never
    start a second one on the same data folder (or stop the running one)."""
    from tests.test_links import s3_config, upload

    cfg = s3_config(tmp_path, seaweed, bucket)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    key = upload(store, cfg, tmp_path, "t-20250101T000000Z-0d04", "t.mp4")
    pid = seaweed.server.health().pid
    time.sleep(2.1)
    cfgfile = tmp_path / "config.toml"
    cfgfile.write_text(f"""
[paths]
inbox = "inbox"
outbox = "outbox"
state = "{seaweed.server.state_dir}"
[storage]
mode = "embedded"
bucket = "{bucket}"
[storage.embedded]
port = {seaweed.port}
data_dir = "{seaweed.server.data_dir}"
[cleanup]
remote_retention = "1s"
""")
    capsys.readouterr()
    assert main(["cleanup", "-c", str(cfgfile), "--log-level", "warning"]) == 0
    assert f"deleted remote: s3://{bucket}/{key}" in capsys.readouterr().out
    assert store.head(key) is None
    health = seaweed.server.health()
    assert health.ok and health.pid == pid  # the very same server, still running


def test_videos_deleted_behind_our_back_are_found_missing_by_the_listing(seaweed, bucket, tmp_path):
    """A lifecycle rule or a person deletes objects without telling anyone; the cleanup's
    listing notices, so sidecars do not keep a dead link until it nears expiry."""
    from tests.test_links import s3_config, upload

    cfg = s3_config(tmp_path, seaweed, bucket)
    cfg.cleanup.remote_retention = 30 * DAY  # nothing is old enough to be deleted by us
    store = seaweed.store(cfg)
    store.ensure_bucket()
    made = {}
    for job, age in (("vanished", DAY), ("present", DAY), ("just-finished", 60)):
        job_id = f"{job}-20250101T000000Z-1e1f"
        key = upload(store, cfg, tmp_path, job_id, f"{job}.mp4")
        url, expires = store.presign_get(key, lifetime=6 * DAY)
        made[job] = make_sidecar(cfg.paths.outbox, job, "done", age=age, job_id=job_id, outputs=[{
            "name": f"{job}.mp4", "template": "t.mp4", "state": "done", "engine": "warp", "url": url,
            "url_expires_at": sidecar.isotime(expires), "bucket": bucket, "key": key, "size": 1,
            "content_type": "video/mp4"}])
        if job != "present":
            store.delete(key)  # "just-finished": as if uploaded while the listing ran
    keep = {job: sidecar.read(made[job]) for job in ("present", "just-finished")}

    report = run_cleanup(cfg, store)

    assert report.removed == [] and report.expired_sidecars == [str(made["vanished"])]
    doc = sidecar.read(made["vanished"])
    assert doc["state"] == "expired" and doc["outputs"][0]["url"] is None
    assert {job: sidecar.read(made[job]) for job in keep} == keep

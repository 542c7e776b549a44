"""Claims on real files: atomic ownership, crash recovery, finishing to done/ and failed/."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from pathlib import Path

import pytest

from daemon.intake import claims
from daemon import workarea
from daemon.outbox import Outbox, Sidecar
from daemon import config as config_mod
from daemon.errors import ConfigError, MissingPartnerError
from daemon.intake.inbox import Inbox
from daemon.jobs import JobSpec
from daemon.names import is_job_id


def make_cfg(root: Path, host: str = "host-a", **paths) -> config_mod.Config:
    (root / "inbox").mkdir(exist_ok=True)
    raw = {"paths": {"inbox": "inbox", "outbox": "outbox", "done": "done", "failed": "failed", "state": "state",
                     **paths},
           "watch": {"settle_seconds": 0, "partner_grace": 0},
           "cluster": {"host_id": host}}
    return config_mod.from_dict(raw, base=root)


def drop(root: Path, name: str, data: bytes | None = None) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else name.encode() * 3)
    return path


def ready(cfg: config_mod.Config) -> dict[str, JobSpec]:
    return {s.name: s for s in Inbox(cfg).scan(now=0)}


@pytest.fixture
def cfg(tmp_path: Path) -> config_mod.Config:
    return make_cfg(tmp_path)


def inbox_files(cfg: config_mod.Config) -> list[str]:
    root = cfg.paths.inbox
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.relative_to(root).as_posix().startswith(".lipsyncd"))


def test_claim_moves_inputs_and_records_the_job(cfg):
    root = cfg.paths.inbox
    drop(root, "welcome.job.toml", b'audio = "speech.mp3"\ntemplates = ["anna.mp4", "sub/ben.jpg"]\n'
                                   b'output_name = "hi"\nlink_lifetime = "3d"\n')
    for n in ("speech.mp3", "anna.mp4", "sub/ben.jpg"):
        drop(root, n)
    job = claims.claim(ready(cfg)["welcome"], cfg)
    assert job is not None and job.error is None
    assert inbox_files(cfg) == []
    assert job.work_dir == cfg.host_work_dir / job.id and is_job_id(job.id) and job.id.startswith("welcome-")
    assert job.audio == job.inputs_dir / "speech.mp3" and job.audio.read_bytes() == b"speech.mp3" * 3
    assert job.templates == [job.inputs_dir / "anna.mp4", job.inputs_dir / "sub/ben.jpg"]
    assert all(t.is_file() for t in job.templates) and job.manifest.is_file()
    assert [o.name for o in job.planned_outputs()] == ["hi-anna.mp4", "hi-ben.mp4"]
    assert job.planned_outputs()[0].path == job.out_dir / "hi-anna.mp4"

    record = json.loads(job.record_path.read_text())
    assert record["state"] == "claimed" and record["host"] == "host-a" and record["id"] == job.id
    assert record["name"] == "welcome" and record["claimed_at"].endswith("Z")
    assert record["audio"] == {"name": "speech.mp3", "size": 30}
    assert record["options"]["link_lifetime"] == 3 * 86400
    assert [(f["name"], f["size"], f["moved"]) for f in record["files"]] == [
        ("welcome.job.toml", job.manifest.stat().st_size, True),
        ("speech.mp3", 30, True), ("anna.mp4", 24, True), ("sub/ben.jpg", 33, True)]
    assert job.inputs_document()["templates"] == [{"name": "anna.mp4", "size": 24}, {"name": "sub/ben.jpg", "size": 33}]


def test_library_templates_are_read_in_place_not_moved(tmp_path):
    cfg = make_cfg(tmp_path, templates="library")
    anna = drop(cfg.paths.templates, "anna.mp4")
    drop(cfg.paths.inbox, "w.job.toml", b'audio = "a.wav"\ntemplates = ["anna.mp4"]\n')
    drop(cfg.paths.inbox, "a.wav")
    job = claims.claim(ready(cfg)["w"], cfg)
    assert anna.is_file() and job.templates == [anna] and job.library_templates == [anna]
    assert job.inputs_document()["templates"] == [{"name": "anna.mp4", "size": 24}]
    done = workarea.finish(job, cfg, "done")
    assert anna.is_file() and not (done / "anna.mp4").exists()


def test_done_job_json_says_finished_only_once_every_input_is_there(cfg, monkeypatch):
    drop(cfg.paths.inbox, "talk.wav")
    drop(cfg.paths.inbox, "talk.mp4")
    job = claims.claim(ready(cfg)["talk"], cfg)
    real_move, moved = workarea._move, []

    def cut_short(src, dst):
        if moved:
            raise OSError("the share went away")
        moved.append(src)
        real_move(src, dst)

    monkeypatch.setattr(workarea, "_move", cut_short)
    with pytest.raises(OSError):
        workarea.finish(job, cfg, "done")
    early = json.loads((cfg.paths.done / "talk" / "job.json").read_text())
    assert "finished_at" not in early and len(list((cfg.paths.done / "talk").iterdir())) == 2  # job.json + one input
    monkeypatch.setattr(workarea, "_move", real_move)
    workarea.complete_finish(job.work_dir, workarea.read_record(job.work_dir), cfg)  # as recovery does
    final = json.loads((cfg.paths.done / "talk" / "job.json").read_text())
    assert final["finished_at"] and sorted(p.name for p in (cfg.paths.done / "talk").iterdir()) == \
        ["job.json", "talk.mp4", "talk.wav"]


def test_second_claim_of_the_same_spec_backs_off_without_traces(cfg):
    drop(cfg.paths.inbox, "talk.wav")
    drop(cfg.paths.inbox, "talk.mp4")
    spec = ready(cfg)["talk"]
    first = claims.claim(spec, cfg)
    assert first is not None
    assert claims.claim(spec, cfg) is None
    assert [p.name for p in cfg.host_work_dir.iterdir()] == [first.id]


def _race(share: str, host: str, seed: int, barrier, results) -> None:
    cfg = make_cfg(Path(share), host=host)
    specs = list(ready(cfg).values())
    random.Random(seed).shuffle(specs)
    barrier.wait()
    won = []
    for spec in specs:
        job = claims.claim(spec, cfg)
        if job is not None:
            won.append((job.name, job.id))
    results.put((host, won))


def _processes():
    """Where the racing daemons and the crashing claims run: children of a fresh server
    process, not forks of this one. A fork of a pytest worker copies none of its threads,
    and a render earlier in the same worker leaves FFmpeg codec and scaler contexts whose
    threads the child's garbage collector then waits for forever."""
    return multiprocessing.get_context("forkserver")


def test_two_daemons_racing_claim_every_job_exactly_once(tmp_path):
    cfg = make_cfg(tmp_path)
    for i in range(50):
        drop(cfg.paths.inbox, f"job{i:02d}.wav")
        drop(cfg.paths.inbox, f"job{i:02d}.mp4")
    ctx = _processes()
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), h, s, barrier, results))
             for h, s in (("host-a", 1), ("host-b", 2))]
    for p in procs:
        p.start()
    won = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    names = [n for jobs in won.values() for n, _ in jobs]
    assert sorted(names) == [f"job{i:02d}" for i in range(50)]  # each exactly once
    assert inbox_files(cfg) == []
    for host, jobs in won.items():
        host_dir = cfg.work_dir / host
        assert sorted(p.name for p in host_dir.iterdir()) == sorted(i for _, i in jobs)  # no stray folders
        for name, job_id in jobs:
            inputs = sorted(p.name for p in (host_dir / job_id / "inputs").iterdir())
            assert inputs == [f"{name}.mp4", f"{name}.wav"]  # both files, with their owner


def test_file_vanishing_during_claim_fails_the_job_not_the_claim(cfg):
    drop(cfg.paths.inbox, "talk.wav")
    video = drop(cfg.paths.inbox, "talk.mp4")
    spec = ready(cfg)["talk"]
    video.unlink()  # deleted by a person between scan and claim
    job = claims.claim(spec, cfg)
    assert isinstance(job.error, MissingPartnerError) and "talk.mp4 vanished" in job.error.message
    assert (job.inputs_dir / "talk.wav").is_file()


def test_failed_spec_is_claimed_with_its_error(cfg):
    manifest = drop(cfg.paths.inbox, "w.job.toml", b"audio = [")
    spec = ready(cfg)["w"]
    assert spec.error.code == "bad_manifest"
    job = claims.claim(spec, cfg)
    assert job.error.code == "bad_manifest" and job.audio is None and not manifest.exists()
    assert job.inputs_document() == {"audio": {"name": "", "size": 0}, "templates": [],
                                     "manifest": {"name": "w.job.toml", "size": 9}}
    folder = workarea.finish(job, cfg, "failed")
    assert folder == cfg.paths.failed / "w" and (folder / "w.job.toml").read_bytes() == b"audio = ["
    assert json.loads((folder / "job.json").read_text())["error"]["code"] == "bad_manifest"


def _crash_after(renames: int, fn, *args) -> None:
    """Run ``fn`` and die like kill -9 right before rename number ``renames + 1``."""
    real, done = os.rename, [0]

    def rename(src, dst):
        if done[0] >= renames:
            os._exit(17)
        done[0] += 1
        real(src, dst)

    os.rename = rename
    fn(*args)
    os._exit(0)


def crash(renames: int, fn, *args) -> None:
    proc = _processes().Process(target=_crash_after, args=(renames, fn, *args))
    proc.start()
    proc.join(timeout=30)
    assert proc.exitcode == 17


def test_recover_completes_a_claim_cut_short(cfg):
    root = cfg.paths.inbox
    drop(root, "w.job.toml", b'audio = "s.wav"\ntemplates = ["a.mp4", "b.mp4"]\n')
    for n in ("s.wav", "a.mp4", "b.mp4"):
        drop(root, n)
    crash(2, claims.claim, ready(cfg)["w"], cfg)  # manifest and audio moved, templates not
    assert inbox_files(cfg) == ["a.mp4", "b.mp4"]
    [job] = claims.recover(cfg)
    assert inbox_files(cfg) == []
    assert job.error is None and all(t.is_file() for t in job.templates) and job.audio.is_file()
    assert json.loads(job.record_path.read_text())["state"] == "claimed"
    assert claims.recover(cfg)[0].id == job.id  # still there at the next start: never lost


def test_recover_rolls_back_a_claim_that_never_moved_a_file(cfg):
    drop(cfg.paths.inbox, "talk.wav")
    drop(cfg.paths.inbox, "talk.mp4")
    crash(0, claims.claim, ready(cfg)["talk"], cfg)
    assert len(list(cfg.host_work_dir.iterdir())) == 1  # the record, written before any rename
    assert claims.recover(cfg) == []
    assert list(cfg.host_work_dir.iterdir()) == []
    assert inbox_files(cfg) == ["talk.mp4", "talk.wav"]


def test_recover_does_not_grab_a_new_drop_that_reused_a_name(cfg):
    drop(cfg.paths.inbox, "talk.wav")
    drop(cfg.paths.inbox, "talk.mp4")
    crash(1, claims.claim, ready(cfg)["talk"], cfg)  # talk.wav moved
    new = drop(cfg.paths.inbox, "talk.mp4", b"a different, newer file")
    [job] = claims.recover(cfg)
    assert new.is_file()  # not ours to take
    assert isinstance(job.error, MissingPartnerError)


def test_a_second_job_with_a_name_in_use_gets_its_own_record_and_folder(cfg):
    runs = []
    for text in (b"first", b"second"):
        drop(cfg.paths.inbox, "talk.wav", text)
        drop(cfg.paths.inbox, "talk.mp4")
        job = claims.claim(ready(cfg)["talk"], cfg)
        job.out_dir.mkdir()
        (job.out_dir / "talk.mp4").write_bytes(b"rendered")
        runs.append((job, workarea.finish(job, cfg, "done")))
    (first, first_dest), (second, second_dest) = runs
    done = cfg.paths.done
    assert (first.name, second.name) == ("talk", "talk-2")
    assert (first_dest, second_dest) == (done / "talk", done / "talk-2")
    assert (done / "talk/talk.wav").read_bytes() == b"first" and (done / "talk-2/talk.wav").read_bytes() == b"second"
    outbox = Outbox(cfg.paths.outbox)
    old, new = outbox.read("talk").doc, outbox.read("talk-2").doc
    assert (old["id"], new["id"]) == (first.id, second.id)  # the first record is untouched but for a note
    assert any("recorded as 'talk-2'" in n for n in old["notes"])
    assert any(f"in use by job {first.id}" in n for n in new["notes"])
    assert new["inputs"]["audio"]["name"] == "talk.wav"  # as dropped
    assert sorted(p.name for p in (done / "talk-2").iterdir()) == ["job.json", "talk.mp4", "talk.wav"]
    assert not first.work_dir.exists() and not second.work_dir.exists()
    record = json.loads((done / "talk-2/job.json").read_text())
    assert record["state"] == "done" and record["finished_at"].endswith("Z")


def test_a_failed_job_dropped_again_replaces_its_record_and_keeps_the_old_inputs_aside(cfg):
    ids = []
    outbox = Outbox(cfg.paths.outbox)
    for _ in range(3):
        drop(cfg.paths.inbox, "x.job.toml", b"nope")
        job = claims.claim(ready(cfg)["x"], cfg)
        assert job.name == "x"  # a failed record's name is free again for the same job
        rec, _ = Sidecar.open(outbox, job, host=cfg.host_id, engine=None, generation=1, fence=job.work_dir)
        rec.failed(job.error, retryable=False)
        workarea.finish(job, cfg, "failed")
        ids.append(job.id)
    names = sorted(p.name for p in cfg.paths.failed.iterdir())
    assert names == sorted(["x", f"x.{ids[0]}", f"x.{ids[1]}"])  # failed/x is the latest run, and only it
    doc = outbox.read("x").doc
    assert doc["id"] == ids[2] and any(f"after the failed run {ids[1]}" in n for n in doc["notes"])
    assert json.loads((cfg.paths.failed / "x" / "job.json").read_text())["id"] == ids[2]

def test_finish_keeps_outputs_only_when_paths_outputs_is_set(tmp_path):
    cfg = make_cfg(tmp_path, outputs="videos")
    drop(cfg.paths.inbox, "talk.wav")
    drop(cfg.paths.inbox, "talk.mp4")
    job = claims.claim(ready(cfg)["talk"], cfg)
    job.out_dir.mkdir()
    (job.out_dir / "talk.mp4").write_bytes(b"rendered")
    assert workarea.output_archive_dir(job, cfg) == cfg.paths.outputs / job.id
    workarea.finish(job, cfg, "done")
    assert (cfg.paths.outputs / job.id / "talk.mp4").read_bytes() == b"rendered"


def test_recover_completes_a_finish_cut_short(cfg):
    drop(cfg.paths.inbox, "w.job.toml", b'audio = "s.wav"\ntemplates = ["a.mp4"]\n')
    drop(cfg.paths.inbox, "s.wav")
    drop(cfg.paths.inbox, "a.mp4")
    job = claims.claim(ready(cfg)["w"], cfg)
    crash(1, workarea.finish, job, cfg, "done")  # one input moved to done/w/, then the power went
    assert claims.recover(cfg) == []  # finished, not re-rendered
    dest = cfg.paths.done / "w"
    assert sorted(p.name for p in dest.iterdir()) == ["a.mp4", "job.json", "s.wav", "w.job.toml"]
    assert not job.work_dir.exists() and not (cfg.paths.done / f"w.{job.id}").exists()


def test_list_claimed_reads_without_changing_anything(cfg):
    for n in ("a", "b"):
        drop(cfg.paths.inbox, f"{n}.wav")
        drop(cfg.paths.inbox, f"{n}.png")
    specs = ready(cfg)
    jobs = [claims.claim(specs[n], cfg) for n in ("a", "b")]
    listed = workarea.list_claimed(cfg)
    assert sorted(j.id for j in listed) == sorted(j.id for j in jobs)
    assert all(j.work_dir.is_dir() for j in listed)


def test_work_area_on_another_filesystem_is_a_config_error(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem (/dev/shm) beside the test folder")
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm) as other:
        cfg = make_cfg(tmp_path, work=other)
        with pytest.raises(ConfigError, match="another filesystem than the inbox"):
            workarea.prepare_work_area(cfg)
    assert workarea.prepare_work_area(make_cfg(tmp_path)) == make_cfg(tmp_path).host_work_dir


def test_the_claim_writes_the_first_record_queued_since_the_drop_was_complete(cfg):
    drop(cfg.paths.inbox, "talk.wav")
    drop(cfg.paths.inbox, "talk.mp4")
    spec = ready(cfg)["talk"]
    spec.ready_since = 1_700_000_000.0  # when its files had settled, by the scan's clock
    job = claims.claim(spec, cfg)
    doc = Outbox(cfg.paths.outbox).read(job.name).doc
    assert doc["state"] == "queued" and doc["id"] == job.id
    assert doc["timings"]["queued_at"] == "2023-11-14T22:13:20Z"  # not the claim time


def test_a_work_folder_without_a_record_is_removed_or_moved_aside_never_bounced(cfg):
    # a claim killed before its job.json: the folder holds what daemons add (a takeover's
    # lease), nothing of the user's -- taken over again and again, it would bounce forever
    host = cfg.host_work_dir
    empty = host / "talk-20260101T000000Z-aaaaaa"
    (empty / "inputs").mkdir(parents=True)
    (empty / "lease").write_text('{"host": "other", "generation": 3}')
    (empty / ".sidecar.x1y2.tmp").write_text("{")
    assert claims.recover_one(empty, cfg) is None
    assert not empty.exists()
    # a folder with a file nobody's claim wrote: kept, out of every daemon's way
    odd = host / "odd-20260101T000000Z-bbbbbb"
    (odd / "inputs").mkdir(parents=True)
    (odd / "inputs" / "mystery.wav").write_bytes(b"RIFF")
    assert claims.recover_one(odd, cfg) is None
    kept = cfg.work_dir / ".orphans" / odd.name / "inputs" / "mystery.wav"
    assert not odd.exists() and kept.read_bytes() == b"RIFF"
    assert workarea.list_claimed(cfg) == []

"""`lipsyncd status`: jobs by state from real sidecars and a real claim in the work area."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests import outbox_files as sidecar
from tests.daemon_harness import free_port
from daemon.intake import claims
from daemon.reporting import status
from daemon import config as config_mod
from daemon.cli import main
from daemon.jobs import JobSpec

HOST = "test-host"


def make_config(root: Path, **sections) -> config_mod.Config:
    raw = {"paths": {"inbox": "inbox", "outbox": "outbox", "done": "done", "failed": "failed", "state": "state"},
           "cluster": {"host_id": HOST}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    (root / "inbox").mkdir(exist_ok=True)
    return config_mod.from_dict(raw, base=root)


def write_config_file(root: Path, extra: str = "") -> Path:
    """A config of the test's own: private folders, and a free port for the embedded store, so
    that the test passes while a real lipsyncd (./scripts/demo) serves the default port 8333."""
    path = root / "config.toml"
    path.write_text(f'[paths]\ninbox = "inbox"\noutbox = "outbox"\ndone = "done"\nfailed = "failed"\n'
                    f'state = "state"\n\n[storage.embedded]\nport = {free_port()}\n\n'
                    f'[cluster]\nhost_id = "{HOST}"\n{extra}')
    (root / "inbox").mkdir(exist_ok=True)
    return path


def make_sidecar(outbox: Path, job: str, state: str, *, age: float = 60.0, progress: float = 0.0,
                 job_id: str | None = None, outputs: list[dict] | None = None, error: dict | None = None,
                 link_lifetime: float | None = None) -> Path:
    """Write a schema-valid sidecar as the worker would, ``age`` seconds after its job was queued."""
    now = sidecar.utcnow()
    job_id = job_id or f"{job}-20250101T000000Z-ab12"
    doc = sidecar.new_document(job=job, job_id=job_id, host=HOST, engine="warp",
                               inputs={"audio": {"name": f"{job}.wav", "size": 100},
                                       "templates": [{"name": f"{job}.mp4", "size": 200}]},
                               options={"output_name": None, "link_lifetime": link_lifetime,
                                        "engine": None, "callback_url": None})
    start = now - timedelta(seconds=age)
    doc.update(state=state, progress=progress, created_at=sidecar.isotime(start))
    doc["timings"] = {"queued_at": sidecar.isotime(start)}
    if state in ("rendering", "uploading", "done", "failed"):
        doc["timings"]["started_at"] = sidecar.isotime(start + timedelta(seconds=age / 4))
    if state in ("uploading", "done"):
        doc["timings"]["rendered_at"] = sidecar.isotime(start + timedelta(seconds=age / 2))
    if state in ("done", "failed"):
        doc["timings"]["finished_at"] = sidecar.isotime(start + timedelta(seconds=age * 3 / 4))
    if state == "done" and outputs is None:
        outputs = [{"name": f"{job}.mp4", "template": f"{job}.mp4", "state": "done", "engine": "warp",
                    "url": f"http://store.invalid/{job}.mp4?X-Amz-Signature=0",
                    "url_expires_at": sidecar.isotime(now + timedelta(days=3)),
                    "bucket": "lipsyncd", "key": f"videos/2025/01/01/{job_id}/{job}.mp4", "size": 1000,
                    "content_type": "video/mp4"}]
    doc["outputs"] = outputs or []
    doc["error"] = error
    path = sidecar.sidecar_path(outbox, job)
    sidecar.write(path, doc)
    assert sidecar.validate(sidecar.read(path)) == []
    return path


@pytest.fixture
def share(tmp_path: Path):
    cfg = make_config(tmp_path)
    out = cfg.paths.outbox
    make_sidecar(out, "waiting", "queued", age=30)
    make_sidecar(out, "promo", "rendering", age=600, progress=0.42)
    make_sidecar(out, "intro", "uploading", age=900, progress=1.0)
    make_sidecar(out, "talk", "done", age=2 * 86400, progress=1.0)
    make_sidecar(out, "broken", "failed", age=3600,
                 error={"code": "no_face", "message": "broken.mp4: no usable face in any frame"})
    # noise an outbox on a share collects: temp files of atomic writes, foreign JSON
    (out / ".talk.json.x1y2.tmp").write_text("{")
    (out / "notes.json").write_text('{"hello": "world"}')
    # a job claimed a moment ago, its first sidecar not yet written
    inbox = cfg.paths.inbox
    (inbox / "fresh.wav").write_bytes(b"RIFF")
    (inbox / "fresh.mp4").write_bytes(b"\0" * 10)
    spec = JobSpec(name="fresh", audio=inbox / "fresh.wav", templates=[inbox / "fresh.mp4"],
                   files=[inbox / "fresh.wav", inbox / "fresh.mp4"])
    claimed = claims.claim(spec, cfg)
    assert claimed is not None
    # the claim wrote the job's first record; a claim cut short by a crash has none yet
    assert (out / "fresh.json").is_file()
    (out / "fresh.json").unlink()
    return cfg, tmp_path


def test_collect_lists_every_job_by_state_with_ages_and_progress(share):
    cfg, _ = share
    jobs = status.collect(cfg)
    by_name = {j.job: j for j in jobs}
    assert [j.state for j in jobs] == ["queued", "queued", "rendering", "uploading", "done", "failed"]
    assert status.counts(jobs) == {"waiting": 0, "queued": 2, "rendering": 1, "uploading": 1, "done": 1,
                                   "failed": 1, "expired": 0}
    assert by_name["promo"].progress == pytest.approx(0.42)
    assert by_name["promo"].age_seconds == pytest.approx(600, abs=5)
    assert by_name["promo"].state_seconds == pytest.approx(450, abs=5)  # since rendering started
    assert by_name["talk"].links_expire_at is not None
    assert by_name["broken"].error == "no_face: broken.mp4: no usable face in any frame"
    assert by_name["fresh"].notes == ["claimed, no sidecar yet"]
    assert "notes" not in by_name  # foreign JSON in the outbox is not a job


def test_status_command_prints_a_readable_table(share, capsys):
    _, root = share
    write_config_file(root)
    assert main(["status", "-c", str(root / "config.toml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "waiting 0  queued 2  rendering 1  uploading 1  done 1  failed 1"
    promo = next(line for line in out.splitlines() if " promo " in line)
    assert promo.split()[:4] == ["rendering", "promo", "10m", "7m"]
    assert "42% rendered" in promo
    assert "link valid 2d23h more" in next(line for line in out.splitlines() if " talk " in line)
    assert "no_face: broken.mp4: no usable face" in out


def test_status_json_is_machine_readable_and_filters(share, capsys):
    _, root = share
    cfgfile = write_config_file(root)
    assert main(["status", "-c", str(cfgfile), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["queued"] == 2 and data["counts"]["failed"] == 1
    promo = next(j for j in data["jobs"] if j["job"] == "promo")
    assert promo["state"] == "rendering" and promo["progress"] == pytest.approx(0.42)
    assert promo["age_seconds"] == pytest.approx(600, abs=5)

    assert main(["status", "-c", str(cfgfile), "--json", "--state", "done", "--state", "failed"]) == 0
    assert sorted(j["job"] for j in json.loads(capsys.readouterr().out)["jobs"]) == ["broken", "talk"]
    assert main(["status", "-c", str(cfgfile), "--json", "pro*", "talk"]) == 0
    assert sorted(j["job"] for j in json.loads(capsys.readouterr().out)["jobs"]) == ["promo", "talk"]


def test_empty_share_says_no_jobs(tmp_path, capsys):
    cfgfile = write_config_file(tmp_path)
    assert main(["status", "-c", str(cfgfile)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no jobs"


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (59, "59s"), (61, "1m"), (3660, "1h01m"),
                                          (2 * 86400 + 7200, "2d2h"), (None, "-")])
def test_human_duration(seconds, text):
    assert status.human_duration(seconds) == text


def test_the_backlog_shows_every_drop_with_its_place_in_line_and_estimates(tmp_path):
    cfg = make_config(tmp_path)
    out, inbox = cfg.paths.outbox, cfg.paths.inbox
    # recent jobs took 40 s each (render + upload): the estimates come from them
    for i in range(3):
        path = make_sidecar(out, f"past{i}", "done", age=600)
        doc = sidecar.read(path)
        doc["timings"].update(render_seconds=38.0, upload_seconds=2.0)
        sidecar.write(path, doc)
    make_sidecar(out, "now", "rendering", progress=0.5, age=30)
    make_sidecar(out, "next", "queued", age=20)
    old = time.time() - 120
    for name in ("a.wav", "a.mp4", "b.wav", "b.png", "lone.wav"):
        (inbox / name).write_bytes(b"x" * 10)
        os.utime(inbox / name, (old, old))
    (inbox / "copying.wav").write_bytes(b"x")  # just written: still settling
    (inbox / "copying.mp4").write_bytes(b"x")
    now = sidecar.utcnow()
    jobs = {j.job: j for j in status.collect(cfg, now=now)}
    assert jobs["now"].finishes_at is not None and jobs["now"].position is None
    assert (jobs["next"].position, jobs["a"].position, jobs["b"].position) == (1, 2, 3)
    start = lambda j: sidecar.parse_time(j.starts_at).timestamp() - now.timestamp()  # noqa: E731
    assert start(jobs["next"]) == pytest.approx(20, abs=2)  # after the current job's remaining half
    assert start(jobs["a"]) == pytest.approx(60, abs=2) and start(jobs["b"]) == pytest.approx(100, abs=2)
    assert jobs["a"].state == jobs["copying"].state == jobs["lone"].state == "waiting"
    assert jobs["copying"].position is None and "still being copied" in jobs["copying"].notes[0]
    assert "waiting for its partner; fails in 8m" in jobs["lone"].notes[0]
    table = status.format_table(list(jobs.values()), now)
    assert "#2 in line, starts ~" in table and "complete in the inbox (a.mp4, a.wav)" in table
    assert status.in_line(jobs.values()) == 3


def test_status_command_filters_the_inbox_backlog_by_state(tmp_path, capsys):
    from daemon.cli import main

    cfgfile = write_config_file(tmp_path)
    for name in ("a.wav", "a.mp4"):
        (tmp_path / "inbox" / name).write_bytes(b"x")
        os.utime(tmp_path / "inbox" / name, (time.time() - 60, time.time() - 60))
    assert main(["status", "-c", str(cfgfile), "--state", "waiting", "--json"]) == 0
    (job,) = json.loads(capsys.readouterr().out)["jobs"]
    assert job["job"] == "a" and job["state"] == "waiting" and job["position"] == 1

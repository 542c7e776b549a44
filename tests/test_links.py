"""Link refresh against the real SeaweedFS server: links are re-signed before they die,
gone videos say "expired", and nothing unfinished or concurrently rewritten is touched."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from tests import outbox_files as sidecar
from daemon.housekeeping import links
from daemon.cli import main
from daemon.housekeeping.scheduler import REFRESH_JOB, start_scheduler
from daemon.storage import ObjectStore, object_key
from tests.test_status import make_config, make_sidecar

VIDEO = b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 40


def fetch(url: str) -> tuple[bytes, dict]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read(), dict(resp.headers)


def s3_config(root: Path, seaweed, bucket: str, *, links_cfg: dict | None = None, **storage):
    return make_config(root, storage={"mode": "s3", "endpoint": seaweed.endpoint, "bucket": bucket,
                                      "addressing": "path", "max_attempts": 2, "connect_timeout": 2,
                                      "read_timeout": 20, **storage},
                       links=links_cfg or {})


def upload(store: ObjectStore, cfg, tmp: Path, job_id: str, name: str) -> str:
    path = tmp / f"{job_id}-{name}"
    path.write_bytes(VIDEO)
    key = object_key(cfg, job_id, name, datetime.now(timezone.utc))
    store.upload_file(path, key, sha256=hashlib.sha256(VIDEO).hexdigest(), filename=name)
    return key


def done_sidecar(cfg, store: ObjectStore, job: str, keys: dict[str, str], *, lifetime: float,
                 link_lifetime: float | None = None) -> Path:
    """A finished job's sidecar whose links were signed ``lifetime`` seconds long."""
    outputs = []
    for name, key in keys.items():
        url, expires = store.presign_get(key, lifetime=lifetime, filename=name)
        outputs.append({"name": name, "template": "face.mp4", "state": "done", "engine": "warp", "url": url,
                        "url_expires_at": sidecar.isotime(expires), "bucket": cfg.storage.bucket, "key": key,
                        "size": len(VIDEO), "content_type": "video/mp4"})
    job_id = next(iter(keys.values())).split("/")[-2]
    return make_sidecar(cfg.paths.outbox, job, "done", job_id=job_id, outputs=outputs, link_lifetime=link_lifetime)


@pytest.fixture
def env(seaweed, bucket, tmp_path):
    """Links signed for a public host (another name for the same server), shown inline."""
    public = f"http://localhost:{seaweed.port}"
    cfg = s3_config(tmp_path, seaweed, bucket, public_endpoint=public,
                    links_cfg={"lifetime": "1h", "refresh_margin": "10m", "content_disposition": "attachment"})
    store = seaweed.store(cfg)
    store.ensure_bucket()
    return cfg, store, tmp_path


def test_short_link_is_refreshed_by_the_scheduler_before_it_expires_and_downloads_afterwards(env):
    cfg, store, tmp = env
    key = upload(store, cfg, tmp, "talk-20250101T000000Z-aa11", "talk.mp4")
    path = done_sidecar(cfg, store, "talk", {"talk.mp4": key}, lifetime=3, link_lifetime=900)
    old = sidecar.read(path)
    old_url = old["outputs"][0]["url"]

    scheduler = start_scheduler(cfg, store)  # refreshes once at start, then on refresh_cron
    try:
        deadline = time.monotonic() + 20
        while sidecar.read(path)["outputs"][0]["url"] == old_url and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scheduler.get_job(REFRESH_JOB).next_run_time is not None  # stays scheduled
    finally:
        scheduler.shutdown(wait=True)
    new = sidecar.read(path)
    out = new["outputs"][0]
    assert out["url"] != old_url
    assert sidecar.validate(new) == []
    # the job's own lifetime (15 min) was used, not the config's hour
    left = (sidecar.parse_time(out["url_expires_at"]) - datetime.now(timezone.utc)).total_seconds()
    assert 840 < left <= 900
    assert any(n.startswith("links re-signed ") for n in new["notes"])

    time.sleep(max(0.0, (sidecar.parse_time(old["outputs"][0]["url_expires_at"])
                         - datetime.now(timezone.utc)).total_seconds()) + 1.5)
    with pytest.raises(urllib.error.HTTPError) as dead:
        fetch(old_url)
    assert dead.value.code == 403  # the old link really died...
    body, headers = fetch(out["url"])  # ...and the sidecar's link works
    assert body == VIDEO
    # signed for the public host, named for download as the job's file
    assert urlsplit(out["url"]).hostname == "localhost"
    assert headers["Content-Disposition"] == 'attachment; filename="talk.mp4"'


def test_links_far_from_expiry_are_left_alone(env):
    cfg, store, tmp = env
    key = upload(store, cfg, tmp, "calm-20250101T000000Z-bb22", "calm.mp4")
    path = done_sidecar(cfg, store, "calm", {"calm.mp4": key}, lifetime=3000)  # 50 min > 10 min margin
    before = sidecar.read(path)
    report = links.refresh_links(cfg, store)
    assert (report.not_due, report.refreshed, report.expired) == (1, [], [])
    assert sidecar.read(path) == before


def test_gone_video_makes_the_output_and_then_the_job_expired(env):
    cfg, store, tmp = env
    job_id = "duo-20250101T000000Z-cc33"
    keys = {"duo-anna.mp4": upload(store, cfg, tmp, job_id, "duo-anna.mp4"),
            "duo-ben.mp4": upload(store, cfg, tmp, job_id, "duo-ben.mp4")}
    path = done_sidecar(cfg, store, "duo", keys, lifetime=60)

    store.delete(keys["duo-anna.mp4"])
    report = links.refresh_links(cfg, store)
    assert report.expired == ["duo/duo-anna.mp4"] and report.refreshed == ["duo/duo-ben.mp4"]
    doc = sidecar.read(path)
    anna, ben = doc["outputs"]
    assert (anna["state"], anna["url"], anna["url_expires_at"]) == ("expired", None, None)
    assert ben["state"] == "done" and fetch(ben["url"])[0] == VIDEO
    assert doc["state"] == "done" and sidecar.validate(doc) == []

    store.delete(keys["duo-ben.mp4"])
    links.refresh_links(cfg, store, names=["duo"])
    doc = sidecar.read(path)
    assert doc["state"] == "expired"
    assert [o["url"] for o in doc["outputs"]] == [None, None]
    assert sidecar.validate(doc) == []
    assert any(n.startswith("video deleted from storage ") for n in doc["notes"])


def test_lifetime_is_capped_by_the_store_and_by_expiring_credentials(seaweed, bucket, tmp_path, aws_env, monkeypatch):
    cfg = s3_config(tmp_path, seaweed, bucket)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    key = upload(store, cfg, tmp_path, "long-20250101T000000Z-dd44", "long.mp4")
    path = done_sidecar(cfg, store, "long", {"long.mp4": key}, lifetime=60, link_lifetime=30 * 86400)

    links.refresh_links(cfg, store)
    left = sidecar.parse_time(sidecar.read(path)["outputs"][0]["url_expires_at"]) - datetime.now(timezone.utc)
    assert timedelta(days=7) - timedelta(minutes=1) < left <= timedelta(days=7)

    # temporary credentials (the standard AWS chain) that expire in two hours
    expiry = datetime.now(timezone.utc) + timedelta(hours=2)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "temporary-session-token-value")
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", expiry.strftime("%Y-%m-%dT%H:%M:%SZ"))
    # (this test server refuses requests with a made-up session token, so only the
    # lifetime choice is checked here, not a signed request)
    lifetime = links.link_lifetime(cfg, ObjectStore(cfg), sidecar.read(path)["options"])
    assert 2 * 3600 - 180 < lifetime <= 2 * 3600


def test_unfinished_jobs_are_never_touched(env):
    cfg, store, tmp = env
    key = upload(store, cfg, tmp, "busy-20250101T000000Z-ee55", "busy.mp4")
    path = done_sidecar(cfg, store, "busy", {"busy.mp4": key}, lifetime=5)
    doc = sidecar.read(path)
    doc["state"] = "uploading"  # e.g. a re-run uploading a second output
    sidecar.write(path, doc)
    before = sidecar.read(path)
    store.delete(key)
    report = links.refresh_links(cfg, store, force=True)
    assert (report.refreshed, report.expired) == ([], [])
    assert sidecar.read(path) == before


class RacingStore:
    """The real store, but the worker rewrites the sidecar while a link is being signed."""

    def __init__(self, store: ObjectStore, path: Path):
        self.store, self.path = store, path

    def head(self, key):
        return self.store.head(key)

    def max_link_lifetime(self):
        return self.store.max_link_lifetime()

    def presign_get(self, key, **kw):
        doc = sidecar.read(self.path)
        doc["notes"].append("written by the worker meanwhile")
        sidecar.write(self.path, doc)
        return self.store.presign_get(key, **kw)


def test_sidecar_rewritten_meanwhile_is_not_overwritten(env):
    cfg, store, tmp = env
    key = upload(store, cfg, tmp, "race-20250101T000000Z-ff66", "race.mp4")
    path = done_sidecar(cfg, store, "race", {"race.mp4": key}, lifetime=5)
    report = links.refresh_links(cfg, RacingStore(store, path))
    assert report.skipped == ["race"] and report.refreshed == []
    assert sidecar.read(path)["notes"][-1] == "written by the worker meanwhile"  # the worker's write won


def test_unreachable_store_marks_nothing_expired(env, seaweed):
    cfg, store, tmp = env
    key = upload(store, cfg, tmp, "down-20250101T000000Z-0a0b", "down.mp4")
    path = done_sidecar(cfg, store, "down", {"down.mp4": key}, lifetime=5)
    before = sidecar.read(path)
    nothing_listens = make_config(tmp, storage={"mode": "s3", "endpoint": "http://127.0.0.1:9",
                                                "bucket": cfg.storage.bucket, "max_attempts": 1,
                                                "connect_timeout": 0.5})
    with capture_logs() as logs:
        report = links.refresh_links(cfg, ObjectStore(nothing_listens, credentials=seaweed.credentials))
    assert len(report.errors) == 1 and report.expired == []
    assert sidecar.read(path) == before
    assert any(e["event"] == "link not refreshed: storage unavailable" for e in logs)
    assert "X-Amz-Signature" not in repr(logs)


def test_links_refresh_command(env, aws_env, capsys):
    cfg, store, tmp = env
    cfgfile = tmp / "config.toml"
    cfgfile.write_text(
        f'[paths]\ninbox = "inbox"\noutbox = "outbox"\nstate = "state"\n[cluster]\nhost_id = "test-host"\n'
        f'[storage]\nmode = "s3"\nendpoint = "{cfg.storage.endpoint}"\nbucket = "{cfg.storage.bucket}"\n'
        f'addressing = "path"\n[links]\nlifetime = "1h"\nrefresh_margin = "10m"\n')
    key = upload(store, cfg, tmp, "cli-20250101T000000Z-1c1d", "cli.mp4")
    path = done_sidecar(cfg, store, "cli", {"cli.mp4": key}, lifetime=3000)
    old_url = sidecar.read(path)["outputs"][0]["url"]
    capsys.readouterr()

    assert main(["links", "refresh", "-c", str(cfgfile), "--log-level", "warning"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "re-signed 0, expired 0, not due 1, skipped 0, errors 0"
    assert main(["links", "refresh", "cli", "-c", str(cfgfile), "--log-level", "warning"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("re-signed 1, expired 0")
    new_url = sidecar.read(path)["outputs"][0]["url"]
    assert new_url != old_url and fetch(new_url)[0] == VIDEO
    assert main(["links", "refresh", "nosuchjob", "-c", str(cfgfile), "--log-level", "warning"]) == 1


def test_schedules_follow_the_config(tmp_path):
    from daemon.housekeeping.scheduler import CLEANUP_JOB, LIFECYCLE_JOB, build_scheduler

    cfg = make_config(tmp_path, links={"refresh_cron": "*/5 * * * *"},
                      cleanup={"cron": "17 3 * * 1", "remote_retention": "30d", "lifecycle_rule": True})
    jobs = {j.id: j for j in build_scheduler(cfg, store=None).get_jobs()}
    assert set(jobs) == {REFRESH_JOB, CLEANUP_JOB, LIFECYCLE_JOB}
    fields = {f.name: str(f) for f in jobs[CLEANUP_JOB].trigger.fields}
    assert (fields["minute"], fields["hour"], fields["day_of_week"]) == ("17", "3", "mon")

    cfg = make_config(tmp_path, links={"refresh_cron": ""}, cleanup={"cron": ""})
    assert build_scheduler(cfg, store=None).get_jobs() == []  # e.g. cleanup from a systemd timer instead


@pytest.mark.parametrize("expr,after,expected", [
    ("17 3 * * 1", "2025-01-01 00:00", ["2025-01-06 03:17 Mon", "2025-01-13 03:17 Mon"]),
    ("0 9 * * 1-5", "2025-01-03 10:00", ["2025-01-06 09:00 Mon", "2025-01-07 09:00 Tue"]),  # Fri 10:00 -> Mon
    ("0 0 * * 0", "2025-01-01 00:00", ["2025-01-05 00:00 Sun", "2025-01-12 00:00 Sun"]),
    ("0 0 * * 7", "2025-01-01 00:00", ["2025-01-05 00:00 Sun", "2025-01-12 00:00 Sun"]),
    ("0 0 * * sat,sun", "2025-01-01 00:00", ["2025-01-04 00:00 Sat", "2025-01-05 00:00 Sun"]),
    # both day fields restricted: cron runs on either (the 10th, or any Saturday)
    ("30 1 10 * 6", "2025-01-05 00:00", ["2025-01-10 01:30 Fri", "2025-01-11 01:30 Sat"]),
    ("*/15 * * * *", "2025-01-01 00:01", ["2025-01-01 00:15 Wed", "2025-01-01 00:30 Wed"]),
])
def test_cron_expressions_fire_when_cron_would(expr, after, expected):
    from daemon.housekeeping.scheduler import cron_trigger

    trigger = cron_trigger(expr, "UTC")
    moment = datetime.strptime(after, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    fired, previous = [], None
    for _ in expected:
        moment = trigger.get_next_fire_time(previous, moment)
        fired.append(moment.strftime("%Y-%m-%d %H:%M %a"))
        previous, moment = moment, moment + timedelta(seconds=1)
    assert fired == expected

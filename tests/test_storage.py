"""Object storage against a real SeaweedFS: uploads, links, listing, the embedded server."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from daemon.config import from_dict
from daemon.errors import StorageError
from daemon.storage import (MAX_LINK_SECONDS, EmbeddedSeaweed, S3Credentials, object_key, open_storage,
                            sha256_file)
from daemon.storage.credentials import load_or_create
from tests.seaweed import SeaweedServer, free_port, port_open

ROOT = Path(__file__).resolve().parent.parent


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    import numpy as np

    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def fetch(url: str) -> tuple[bytes, Any]:
    # no proxy: the links point at the test server on the loopback interface
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=20) as r:
        return r.read(), r.headers


def disposition_filename(header: str) -> str:
    """The name a browser saves under: filename* (RFC 5987) wins over filename (RFC 6266)."""
    extended = re.search(r"filename\*=UTF-8''([^;\s]+)", header, re.I)
    if extended:
        return unquote(extended.group(1), encoding="utf-8", errors="strict")
    return re.search(r'filename="([^"]*)"', header).group(1)


# ------------------------------------------------------------------ uploads and links


def test_uploaded_video_downloads_identically_from_its_link(seaweed: SeaweedServer, bucket, tmp_path):
    cfg = seaweed.config(bucket, tmp_path)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    video = random_file(tmp_path / "talk.mp4", 300_000)
    digest = sha256_file(video)

    obj = store.upload_file(video, "videos/a/talk.mp4", sha256=digest, filename="talk.mp4")
    url, expires = store.presign_get(obj.key, lifetime=600, filename="talk.mp4")
    body, headers = fetch(url)

    assert body == video.read_bytes()
    assert headers["Content-Type"] == "video/mp4"
    assert (obj.bucket, obj.size, obj.sha256) == (bucket, 300_000, digest)
    raw = seaweed.admin.head_object(Bucket=bucket, Key=obj.key)
    assert raw["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-sha256"] == digest
    now = datetime.now(timezone.utc)
    assert timedelta(seconds=590) < expires - now <= timedelta(seconds=600)


def test_same_file_again_is_not_uploaded_twice_even_after_a_restart(seaweed, bucket, tmp_path):
    cfg = seaweed.config(bucket, tmp_path)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    video = random_file(tmp_path / "v.mp4", 50_000)
    first = store.upload_file(video, "k/v.mp4", sha256=sha256_file(video))
    time.sleep(1.1)  # last_modified has one-second resolution: a re-upload would move it

    again = store.upload_file(video, "k/v.mp4", sha256=sha256_file(video))
    after_crash = seaweed.store(cfg)  # a fresh process knows nothing but what the store holds
    third = after_crash.upload_file(video, "k/v.mp4", sha256=sha256_file(video))

    assert (store.uploads_done, store.uploads_skipped) == (1, 1)
    assert (after_crash.uploads_done, after_crash.uploads_skipped) == (0, 1)
    assert first.last_modified == again.last_modified == third.last_modified
    assert store.head("k/v.mp4").last_modified == first.last_modified


def test_different_content_under_the_same_key_replaces_the_object(seaweed, bucket, tmp_path):
    cfg = seaweed.config(bucket, tmp_path)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    old = random_file(tmp_path / "old.mp4", 40_000, seed=1)
    new = random_file(tmp_path / "new.mp4", 40_000, seed=2)  # same size: only the digest differs
    store.upload_file(old, "k/out.mp4", sha256=sha256_file(old))

    obj = store.upload_file(new, "k/out.mp4", sha256=sha256_file(new))

    assert store.uploads_done == 2 and store.uploads_skipped == 0
    assert obj.sha256 == sha256_file(new)
    body, _ = fetch(store.presign_get("k/out.mp4", lifetime=60)[0])
    assert body == new.read_bytes()


def test_large_file_goes_up_in_parts_and_comes_back_intact(seaweed, bucket, tmp_path):
    mib = 1024 * 1024
    cfg = seaweed.config(bucket, tmp_path, multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    video = random_file(tmp_path / "big.mp4", 12 * mib + 12345, seed=3)
    digest = sha256_file(video)

    obj = store.upload_file(video, "k/big.mp4", sha256=digest, filename="big.mp4")

    # a multipart object's ETag is "<md5 of part md5s>-<part count>": 5 + 5 + 2 MiB
    assert obj.etag.endswith("-3")
    assert (obj.size, obj.sha256) == (video.stat().st_size, digest)
    body, headers = fetch(store.presign_get(obj.key, lifetime=60)[0])
    assert body == video.read_bytes()
    assert headers["Content-Type"] == "video/mp4"


def test_link_is_signed_for_the_public_endpoint_and_works_there(seaweed, bucket, tmp_path):
    public = f"http://localhost:{seaweed.port}"
    cfg = seaweed.config(bucket, tmp_path, public_endpoint=public)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    video = random_file(tmp_path / "p.mp4", 10_000)
    store.upload_file(video, "k/p.mp4", sha256=sha256_file(video))

    url, _ = store.presign_get("k/p.mp4", lifetime=60)

    assert url.startswith(f"{public}/{bucket}/k/p.mp4?")
    assert "127.0.0.1" not in url
    assert fetch(url)[0] == video.read_bytes()


@pytest.mark.parametrize("disposition", ["inline", "attachment"])
def test_link_names_the_download_with_the_unicode_filename(seaweed, bucket, tmp_path, disposition):
    cfg = seaweed.config(bucket, tmp_path, links={"content_disposition": "inline"})
    store = seaweed.store(cfg)
    store.ensure_bucket()
    video = random_file(tmp_path / "u.mp4", 5_000)
    name = "Präsentation – Q3 视频.mp4"
    store.upload_file(video, "k/u.mp4", sha256=sha256_file(video), filename=name)

    url, _ = store.presign_get("k/u.mp4", lifetime=60, filename=name, disposition=disposition)
    _, headers = fetch(url)

    header = headers["Content-Disposition"]
    assert header.split(";")[0] == disposition
    assert disposition_filename(header) == name
    assert 'filename="Prasentation _ Q3 __.mp4"' in header  # for clients without RFC 5987


def test_default_disposition_comes_from_the_config(seaweed, bucket, tmp_path):
    cfg = seaweed.config(bucket, tmp_path, links={"content_disposition": "attachment"})
    store = seaweed.store(cfg)
    store.ensure_bucket()
    video = random_file(tmp_path / "d.mp4", 1_000)
    store.upload_file(video, "k/d.mp4", sha256=sha256_file(video))

    _, headers = fetch(store.presign_get("k/d.mp4", lifetime=60, filename="talk.mp4")[0])

    assert headers["Content-Disposition"] == 'attachment; filename="talk.mp4"'


def test_expired_link_is_refused_by_the_store(seaweed, bucket, tmp_path):
    cfg = seaweed.config(bucket, tmp_path)
    store = seaweed.store(cfg)
    store.ensure_bucket()
    video = random_file(tmp_path / "e.mp4", 1_000)
    store.upload_file(video, "k/e.mp4", sha256=sha256_file(video))
    url, expires = store.presign_get("k/e.mp4", lifetime=2)
    assert fetch(url)[0] == video.read_bytes()  # valid while it lasts

    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 1.5)

    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(url)
    assert refused.value.code == 403


def test_link_lifetime_is_capped_at_seven_days(seaweed, bucket, tmp_path):
    store = seaweed.store(seaweed.config(bucket, tmp_path))

    url, expires = store.presign_get("k/x.mp4", lifetime=30 * 86400)

    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(MAX_LINK_SECONDS)]
    assert expires - datetime.now(timezone.utc) <= timedelta(days=7)


def test_temporary_credentials_shorten_links(seaweed, bucket, tmp_path, aws_env, monkeypatch):
    expiry = datetime.now(timezone.utc) + timedelta(hours=2)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "temporary-session-token-value")
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", expiry.strftime("%Y-%m-%dT%H:%M:%SZ"))
    with open_storage(seaweed.config(bucket, tmp_path)) as handle:
        store = handle.store
        longest = store.max_link_lifetime()
        url, expires = store.presign_get("k/x.mp4", lifetime=7 * 86400)

    assert 2 * 3600 - 180 < longest <= 2 * 3600
    assert expires <= expiry
    assert int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]) <= 2 * 3600


# ------------------------------------------------------------------ failures


def test_unreachable_store_fails_fast_and_names_where_not_secrets(seaweed, bucket, tmp_path, aws_env):
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = seaweed.config(bucket, tmp_path, endpoint=dead, max_attempts=2, connect_timeout=1)
    video = random_file(tmp_path / "f.mp4", 1_000)
    with open_storage(cfg) as handle:  # the standard credential chain: AWS_* from the environment
        store = handle.store
        started = time.monotonic()
        with pytest.raises(StorageError) as pinged:
            store.ping()
        with pytest.raises(StorageError) as uploaded:
            store.upload_file(video, "k/f.mp4", sha256=sha256_file(video))
        elapsed = time.monotonic() - started

    assert elapsed < 10
    assert handle.health().state == "remote"  # no embedded server to report on
    for err in (pinged.value, uploaded.value):
        text = str(err)
        assert dead in text and bucket in text
        assert seaweed.secret_key not in text and seaweed.access_key not in text
        assert not err.permanent  # the worker retries uploads later
    assert "k/f.mp4" in str(uploaded.value)


def test_wrong_secret_is_reported_as_access_denied_without_the_secret(seaweed, bucket, tmp_path):
    cfg = seaweed.config(bucket, tmp_path)
    seaweed.store(cfg).ensure_bucket()
    wrong = S3Credentials(seaweed.access_key, "Wrong/Secret+Value0123456789abcdefghij")
    from daemon.storage import ObjectStore

    store = ObjectStore(cfg, credentials=wrong)
    with pytest.raises(StorageError) as denied:
        store.ping()

    assert denied.value.code == "storage_access_denied"
    assert "Wrong/Secret" not in str(denied.value) and seaweed.access_key not in str(denied.value)
    for shown in (repr(store), repr(wrong), str(wrong)):
        assert "Wrong/Secret" not in shown


def test_missing_bucket_is_created_or_reported(seaweed, bucket, tmp_path):
    strict = seaweed.store(seaweed.config(bucket, tmp_path, create_bucket=False))
    with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
        strict.ensure_bucket()

    store = seaweed.store(seaweed.config(bucket, tmp_path))
    store.ensure_bucket()
    store.ensure_bucket()  # already there: nothing to do

    strict.ensure_bucket()
    strict.ping()


# ------------------------------------------------------------------ listing, deleting, lifecycle


def test_list_and_delete(seaweed, bucket, tmp_path):
    store = seaweed.store(seaweed.config(bucket, tmp_path, prefix="videos/"))
    store.ensure_bucket()
    sizes = {"videos/2024/01/01/j1/a.mp4": 100, "videos/2024/01/01/j1/b.mp4": 200,
             "videos/2024/01/02/j2/c.mp4": 300, "elsewhere/d.mp4": 400}
    for i, (key, size) in enumerate(sizes.items()):
        f = random_file(tmp_path / f"{i}.mp4", size, seed=i)
        store.upload_file(f, key, sha256=sha256_file(f))

    listed = {o.key: o for o in store.list_objects(page_size=2)}  # several pages
    everything = {o.key for o in store.list_objects("")}

    assert {k: o.size for k, o in listed.items()} == {k: v for k, v in sizes.items() if k.startswith("videos/")}
    assert everything == set(sizes)
    assert all(o.bucket == bucket and o.sha256 is None and o.last_modified.tzinfo for o in listed.values())

    store.delete("videos/2024/01/01/j1/a.mp4")
    store.delete("videos/never/was.mp4")  # deleting what is not there is not an error

    assert store.head("videos/2024/01/01/j1/a.mp4") is None
    assert {o.key for o in store.list_objects("videos/2024/01/01/")} == {"videos/2024/01/01/j1/b.mp4"}


def start_unfinished_upload(seaweed: SeaweedServer, bucket: str, key: str, part: bytes = b"") -> str:
    """A multipart upload begun (with one part, when given) and never completed: what an
    upload killed mid-way leaves in the bucket. Returns its upload id."""
    admin = seaweed.admin
    upload_id = admin.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")["UploadId"]
    if part:
        admin.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=part)
    return upload_id


def test_unfinished_uploads_are_listed_and_only_old_ones_aborted(seaweed, bucket, tmp_path):
    store = seaweed.store(seaweed.config(bucket, tmp_path, prefix="videos/"))
    store.ensure_bucket()
    ids = {key: start_unfinished_upload(seaweed, bucket, key, part=b"v" * (100_000 + i))
           for i, key in enumerate(("videos/j1/a.mp4", "videos/j2/b.mp4", "videos/j3/c.mp4", "elsewhere/x.bin"))}
    finished = random_file(tmp_path / "done.mp4", 1000)
    store.upload_file(finished, "videos/j4/done.mp4", sha256=sha256_file(finished))

    listed = {u.key: u for u in store.list_incomplete_uploads(page_size=2)}  # several pages

    assert set(listed) == {"videos/j1/a.mp4", "videos/j2/b.mp4", "videos/j3/c.mp4"}  # the finished one is no upload
    assert {u.key for u in store.list_incomplete_uploads("")} == set(ids)
    assert all(u.upload_id == ids[k] and u.bucket == bucket for k, u in listed.items())
    assert all(abs(u.age(time.time())) < 120 for u in listed.values())
    assert store.incomplete_upload_bytes(listed["videos/j2/b.mp4"]) == 100_001

    # started moments ago: may be in progress on another host
    assert store.abort_incomplete_uploads(older_than=3600) == []
    assert len(list(store.list_incomplete_uploads())) == 3

    aborted = store.abort_incomplete_uploads(older_than=3600, now=time.time() + 7200)

    assert {u.key for u in aborted} == set(listed)
    assert list(store.list_incomplete_uploads()) == []
    assert [u.key for u in store.list_incomplete_uploads("")] == ["elsewhere/x.bin"]  # outside the prefix: kept
    admin = seaweed.admin
    with pytest.raises(admin.exceptions.NoSuchUpload):  # the parts are gone
        admin.list_parts(Bucket=bucket, Key="videos/j1/a.mp4", UploadId=ids["videos/j1/a.mp4"])
    assert store.incomplete_upload_bytes(listed["videos/j1/a.mp4"]) == 0
    store.abort_upload(listed["videos/j1/a.mp4"])  # aborting twice is not an error
    assert store.head("videos/j4/done.mp4") is not None


def test_lifecycle_rule_can_also_abort_unfinished_uploads(seaweed, bucket, tmp_path):
    store = seaweed.store(seaweed.config(bucket, tmp_path))
    store.ensure_bucket()
    store.set_lifecycle_expiration(30, "videos/", abort_incomplete_days=1)
    (rule,) = seaweed.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Expiration"] == {"Days": 30} and rule["Filter"] == {"Prefix": "videos/"}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    store.set_lifecycle_expiration(30, "videos/")  # asked without: the abort goes
    (rule,) = seaweed.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert "AbortIncompleteMultipartUpload" not in rule and store.lifecycle_expiration_days() == 30


def test_lifecycle_rule_is_set_and_removed_keeping_other_rules(seaweed, bucket, tmp_path):
    store = seaweed.store(seaweed.config(bucket, tmp_path))
    store.ensure_bucket()
    foreign = {"ID": "someone-elses", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}}
    seaweed.admin.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]})

    store.set_lifecycle_expiration(30, "videos/")
    assert store.lifecycle_expiration_days() == 30
    ids = {r["ID"] for r in seaweed.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert ids == {"someone-elses", "lipsyncd-expire"}

    store.set_lifecycle_expiration(0)
    assert store.lifecycle_expiration_days() is None
    rules = seaweed.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in rules] == ["someone-elses"]


# ------------------------------------------------------------------ keys


def test_object_keys_are_dated_in_utc_and_safe(tmp_path):
    cfg = from_dict({"storage": {"prefix": "videos/"}}, base=tmp_path)
    late_evening_in_new_york = datetime(2024, 2, 29, 22, 30, tzinfo=timezone(timedelta(hours=-5)))

    assert object_key(cfg, "job-1", "Grüße talk.mp4", late_evening_in_new_york) == \
        "videos/2024/03/01/job-1/Grue_talk.mp4"
    when = datetime(2024, 1, 2, tzinfo=timezone.utc)
    assert object_key(cfg, "j", "../../etc/passwd", when) == "videos/2024/01/02/j/passwd.mp4"
    assert object_key(cfg, "j", "a;rm -rf $(x) `y`.MP4", when) == "videos/2024/01/02/j/a_rm_-rf_x_y.mp4"
    assert object_key(cfg, "j", ".hidden", when).endswith("/j/hidden.mp4")
    chinese = {object_key(cfg, "j", n, when) for n in ("视频一.mp4", "视频二.mp4")}
    assert len(chinese) == 2 and all(k.isascii() and k.endswith(".mp4") for k in chinese)
    with pytest.raises(ValueError, match="job id"):
        object_key(cfg, "../x", "a.mp4", when)


# ------------------------------------------------------------------ the embedded server


def embedded_config(tmp_path: Path, port: int, **embedded):
    return from_dict({"paths": {"state": "state"}, "storage": {"mode": "embedded", "bucket": "videos-test",
                                                               "embedded": {"port": port, **embedded}}},
                     base=tmp_path)


def through_reverse_proxy(link: str, upstream: str) -> str:
    """What a reverse proxy that rewrites the Host header sends upstream."""
    parts = urlsplit(link)
    return f"{upstream}{parts.path}?{parts.query}"


def test_embedded_store_keeps_its_private_credentials_and_links_across_restarts(tmp_path):
    port = free_port()
    public = "https://videos.example.test"
    cfg = from_dict({"paths": {"state": "state"},
                     "storage": {"mode": "embedded", "public_endpoint": public, "embedded": {"port": port}}},
                    base=tmp_path)
    video = random_file(tmp_path / "r.mp4", 20_000)
    with open_storage(cfg) as handle:
        store = handle.store
        creds = handle.credentials
        store.upload_file(video, "k/r.mp4", sha256=sha256_file(video))
        old_link, _ = store.presign_get("k/r.mp4", lifetime=3600)
        assert old_link.startswith(f"{public}/lipsyncd/k/r.mp4?")
        assert handle.health().state == "running"
    assert not port_open(port)  # stopped with the handle

    creds_file = tmp_path / "state" / "s3-credentials.json"
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert json.loads(creds_file.read_text())["secret_access_key"] == creds.secret_key
    assert (tmp_path / "state" / "seaweedfs.log").stat().st_size > 0

    with open_storage(cfg) as handle:
        store = handle.store
        assert handle.credentials == creds
        # a link handed out before the restart, signed for the public host, still works
        assert fetch(through_reverse_proxy(old_link, handle.endpoint))[0] == video.read_bytes()
        assert store.upload_file(video, "k/r.mp4", sha256=sha256_file(video)).size == 20_000
        assert handle.store.uploads_skipped == 1
    assert creds.secret_key not in repr(handle) + repr(handle.embedded) + str(creds)


def test_embedded_server_is_restarted_when_it_crashes(tmp_path):
    cfg = embedded_config(tmp_path, free_port())
    video = random_file(tmp_path / "c.mp4", 5_000)
    with open_storage(cfg) as handle:
        store = handle.store
        first_pid = handle.health().pid
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = handle.health()
            if health.state == "running" and health.pid not in (None, first_pid):
                break
            time.sleep(0.2)

        assert (health.state, health.restarts) == ("running", 1)
        assert store.upload_file(video, "k/c.mp4", sha256=sha256_file(video)).size == 5_000


def test_embedded_server_dies_with_its_parent_even_on_sigkill(tmp_path):
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(ROOT)!r})
            from pathlib import Path
            from daemon.storage import EmbeddedSeaweed
            from daemon.storage.credentials import load_or_create
            state = Path({str(tmp_path / "state")!r})
            server = EmbeddedSeaweed(data_dir=state / "data", state_dir=state, port={port},
                                     credentials=load_or_create(state))
            server.start()
            print(f"WEED_PID={{server.pid}}", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("WEED_PID="):  # the lines before are its log
            line = child.stdout.readline()
            assert line, "the child exited before starting SeaweedFS"
        weed_pid = int(line.strip().split("=")[1])
        assert port_open(port)
        child.kill()
        child.wait()
        deadline = time.monotonic() + 15
        while Path(f"/proc/{weed_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        gone = not Path(f"/proc/{weed_pid}").exists()
    finally:
        child.kill()
        try:
            if Path(f"/proc/{weed_pid}").exists():
                os.kill(weed_pid, signal.SIGKILL)
        except (NameError, ProcessLookupError):
            pass
    assert gone, "weed outlived its parent"
    assert not port_open(port)


def test_credentials_file_problems_are_named_and_loose_permissions_fixed(tmp_path):
    state = tmp_path / "state"
    creds = load_or_create(state)
    path = state / "s3-credentials.json"
    path.chmod(0o644)  # e.g. restored from a backup

    assert load_or_create(state) == creds
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    path.write_text("{not json")
    with pytest.raises(StorageError, match="s3-credentials.json: not a valid credentials file") as bad:
        load_or_create(state)
    assert bad.value.file == str(path)


def test_embedded_start_problems_are_explained(tmp_path):
    creds = load_or_create(tmp_path / "state")
    with pytest.raises(StorageError, match="not found or not executable"):
        EmbeddedSeaweed(data_dir=tmp_path / "d", state_dir=tmp_path / "state", port=free_port(),
                        credentials=creds, weed_binary=tmp_path / "nope").start()

    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'fatal: cannot open volume folder' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(StorageError) as died:
        EmbeddedSeaweed(data_dir=tmp_path / "d", state_dir=tmp_path / "state", port=free_port(),
                        credentials=creds, weed_binary=fake, start_timeout=10).start()
    assert "exited with code 3" in str(died.value) and "cannot open volume folder" in str(died.value)

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(StorageError, match=f"port {taken} .* already in use"):
            EmbeddedSeaweed(data_dir=tmp_path / "d", state_dir=tmp_path / "state", port=taken,
                            credentials=creds).start()


def test_a_dropped_bucket_gives_its_volumes_back_to_the_shared_test_store(seaweed):
    """Every test module's bucket takes volumes of its own on the session's server, which
    allows free disk / volume size of them; modules give theirs back (tests/conftest.py),
    so a worker that runs many modules on a nearly full disk never runs out."""
    from tests.daemon_harness import TEST_VOLUME_MB, drop_bucket

    assert seaweed.server.volume_size_mb == TEST_VOLUME_MB
    name = f"volumes-{os.getpid()}-{time.monotonic_ns()}"
    admin = seaweed.admin
    admin.create_bucket(Bucket=name)
    admin.put_object(Bucket=name, Key="k", Body=b"x" * 1000)
    volumes = lambda: list(seaweed.server.data_dir.glob(f"{name}_*.dat"))  # noqa: E731
    assert volumes(), "the bucket's own volume"
    drop_bucket(seaweed, name)
    deadline = time.monotonic() + 30
    while volumes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert volumes() == []

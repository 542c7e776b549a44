"""The whole pipeline on real parts: inbox -> claim -> render -> S3 upload -> sidecar with a link.

Real files in temporary folders, real PyAV encoding and decoding, the session's real
SeaweedFS S3 server, the real daemon (in-process with ``--burst`` semantics where that is
enough, as a subprocess where signals matter). The passthrough engine keeps most runs
fast; one test renders with the warp engine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from daemon import config, logsetup
from tests import outbox_files as sidecar
from daemon.pipeline.worker import Worker
from tests.daemon_harness import Daemon, Share, wait_until
from tests.media_factory import SPEECH_SHORT, probe, write_plain_video, write_still, write_tone

AUDIO_SECONDS = 1.5


# --------------------------------------------------------------------------- helpers


def write_config(root: Path, seaweed, bucket: str, **sections: dict[str, Any]) -> Path:
    """A config.toml for one test: tiny settle windows, the test bucket, fast encoding."""
    base: dict[str, dict[str, Any]] = {
        "paths": {"inbox": "inbox", "outbox": "outbox", "done": "done", "failed": "failed", "state": "state"},
        "watch": {"settle_seconds": 0.3, "poll_interval": 0.2, "rescan_interval": 2, "partner_grace": "1m"},
        "render": {"engine": "passthrough", "device": "cpu", "still_fps": 10, "crf": 30, "preset": "ultrafast"},
        "storage": {"mode": "s3", "endpoint": seaweed.endpoint if seaweed else "", "bucket": bucket,
                    "create_bucket": True,
                    "max_attempts": 2, "connect_timeout": 2, "read_timeout": 20, "retry_backoff_max": 2},
        "links": {"refresh_cron": ""},
        "cleanup": {"cron": ""},
        "logging": {"level": "info", "format": "json"},
        "cluster": {"heartbeat_interval": 1, "lease_timeout": 30},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    text = "\n".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
                     for name, values in base.items())
    path = root / "lipsyncd.toml"
    path.write_text(text)
    (root / "inbox").mkdir(exist_ok=True)
    return path


def _toml_value(v: Any) -> str:
    """JSON spells strings, numbers, booleans and lists as TOML does; tables are inline ones."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def drop(inbox: Path, name: str, src: Path | bytes) -> Path:
    """Copy to a dot-name, then rename: how users are told to drop files."""
    tmp = inbox / f".{name}.part"
    if isinstance(src, bytes):
        tmp.write_bytes(src)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, inbox / name)
    return inbox / name


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as r:  # noqa: S310 - our own test store
        return r.read()


class SidecarSampler:
    """Reads every sidecar in the outbox every few ms while the daemon runs; validates each version."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.seen: dict[str, list[dict]] = {}
        self.invalid: list[tuple[str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sidecar-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.01)

    def sample(self) -> None:
        for path in self.outbox.glob("*.json"):
            if path.name.startswith("."):
                continue
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, json.JSONDecodeError) as e:
                self.invalid.append((path.name, [f"unreadable: {e}"]))  # writes are atomic: never half a file
                continue
            versions = self.seen.setdefault(doc.get("job", path.stem), [])
            if versions and versions[-1] == doc:
                continue
            versions.append(doc)
            problems = sidecar.validate(doc)
            if problems:
                self.invalid.append((path.name, problems))

    def states(self, job: str) -> list[str]:
        out: list[str] = []
        for doc in self.seen.get(job, []):
            if not out or out[-1] != doc["state"]:
                out.append(doc["state"])
        return out

    def __enter__(self) -> "SidecarSampler":
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logsetup.configure("info", "json", stream=stream)
    yield stream
    logsetup.configure("info", "json", stream=io.StringIO())


def log_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def run_burst(cfg_path: Path, timeout: float = 90) -> int:
    """``lipsyncd run --burst`` in this process, stopped hard if it overruns."""
    worker = Worker(config.load(cfg_path, env={}))
    guard = threading.Timer(timeout, lambda: (worker.request_stop(), worker.request_stop()))
    guard.start()
    try:
        return worker.run(burst=True)
    finally:
        guard.cancel()


def sidecar_of(root: Path, job: str) -> dict:
    doc = sidecar.read(root / "outbox" / f"{job}.json")
    assert doc is not None, f"no sidecar for {job}"
    return doc


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("e2e-media")
    return {
        "still": write_still(folder / "face.png", (128, 128)),
        "audio": write_tone(folder / "tone.wav", seconds=AUDIO_SECONDS),
        "clip": write_plain_video(folder / "clip.mp4", seconds=1.0, fps=10, size=(64, 48)),
    }


# --------------------------------------------------------------------------- drop -> done


def test_dropped_pair_ends_done_with_a_link_that_plays(tmp_path, seaweed, bucket, aws_env, media, logs):
    cfg_path = write_config(tmp_path, seaweed, bucket, paths={"outputs": "videos"})
    inbox = tmp_path / "inbox"
    drop(inbox, "talk.png", media["still"])
    drop(inbox, "talk.wav", media["audio"])

    with SidecarSampler(tmp_path / "outbox") as sampler:
        assert run_burst(cfg_path) == 0
    assert sampler.invalid == []
    # every version the sampler caught validated; the states came in order (a fast job may
    # pass through one between two samples)
    states = sampler.states("talk")
    order = ["queued", "rendering", "uploading", "done"]
    assert states[-1] == "done" and states == sorted(states, key=order.index) and len(sampler.seen["talk"]) >= 3

    doc = sidecar_of(tmp_path, "talk")
    assert doc["error"] is None and doc["progress"] == 1.0 and doc["engine"] == "passthrough"
    assert doc["inputs"]["audio"] == {"name": "talk.wav", "size": media["audio"].stat().st_size}
    (out,) = doc["outputs"]
    assert out["name"] == "talk.mp4" and out["template"] == "talk.png" and out["state"] == "done"
    assert out["bucket"] == bucket and out["key"].endswith(f"/{doc['id']}/talk.mp4")
    expires = sidecar.parse_time(out["url_expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(timezone.utc) <= timedelta(days=7)

    body = download(out["url"])
    assert len(body) == out["size"] and hashlib.sha256(body).hexdigest() == out["sha256"]
    played = tmp_path / "played.mp4"
    played.write_bytes(body)
    info = probe(played)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert abs(info["duration"] - AUDIO_SECONDS) < 0.15, info
    assert (info["width"], info["height"]) == (out["width"], out["height"]) == (128, 128)

    # inputs kept in done/, the inbox and work area empty, a local copy where configured
    assert sorted(p.name for p in (tmp_path / "done" / "talk").iterdir()) == ["job.json", "talk.png", "talk.wav"]
    assert [p.name for p in inbox.iterdir() if not p.name.startswith(".")] == []
    assert not any((tmp_path / "inbox" / ".lipsyncd" / "work").rglob("job.json"))
    assert Path(out["local_path"]).read_bytes() == body

    # one summary line per job, the job id on every line logged while it was processed
    lines = log_lines(logs)
    (summary,) = [line for line in lines if line["event"] == "job finished"]
    assert summary["job"] == "talk" and summary["job_id"] == doc["id"] and summary["state"] == "done"
    assert summary["outputs"] == 1 and summary["engine"] == "passthrough"
    for key in ("render_seconds", "upload_seconds", "total_seconds"):
        assert isinstance(summary[key], float) and summary[key] >= 0
    job_lines = [line for line in lines if line["event"] in ("output rendered", "output uploaded", "engine loaded")]
    assert len(job_lines) == 3 and all(line.get("job_id") == doc["id"] for line in job_lines)
    # the link is a bearer token: logs name the object, never the signed URL
    assert "X-Amz-Signature" not in logs.getvalue() and out["key"] in logs.getvalue()


def test_manifest_job_with_several_templates_gives_one_link_per_output(tmp_path, seaweed, bucket, aws_env, media):
    cfg_path = write_config(tmp_path, seaweed, bucket)
    inbox = tmp_path / "inbox"
    (inbox / "assets").mkdir()
    drop(inbox, "speech.wav", media["audio"])
    drop(inbox, "anna.png", media["still"])
    shutil.copyfile(media["clip"], inbox / "assets" / "ben.mp4")
    drop(inbox, "welcome.job.toml", b'audio = "speech.wav"\ntemplates = ["anna.png", "assets/ben.mp4"]\n'
                                    b'output_name = "hello"\nlink_lifetime = "1h"\n')
    # a plain same-stem pair dropped alongside: two jobs, one run
    drop(inbox, "solo.mp4", media["clip"])
    drop(inbox, "solo.wav", media["audio"])

    with SidecarSampler(tmp_path / "outbox") as sampler:
        assert run_burst(cfg_path) == 0
    assert sampler.invalid == []

    doc = sidecar_of(tmp_path, "welcome")
    assert doc["state"] == "done", doc.get("error")
    assert doc["options"]["output_name"] == "hello" and doc["options"]["link_lifetime"] == 3600
    assert doc["inputs"]["manifest"]["name"] == "welcome.job.toml"
    assert [(o["name"], o["template"]) for o in doc["outputs"]] == [("hello-anna.mp4", "anna.png"),
                                                                    ("hello-ben.mp4", "assets/ben.mp4")]
    assert len({o["key"] for o in doc["outputs"]}) == 2
    for out, size in zip(doc["outputs"], [(128, 128), (64, 48)]):
        expires = sidecar.parse_time(out["url_expires_at"]) - datetime.now(timezone.utc)
        assert timedelta(minutes=55) < expires <= timedelta(hours=1)
        body = download(out["url"])
        assert hashlib.sha256(body).hexdigest() == out["sha256"]
        (tmp_path / out["name"]).write_bytes(body)
        info = probe(tmp_path / out["name"])
        assert (info["width"], info["height"]) == size
        assert abs(info["duration"] - AUDIO_SECONDS) < 0.15
    # progress covers the whole job: it never went backwards across the two outputs
    progress = [d["progress"] for d in sampler.seen["welcome"]]
    assert progress == sorted(progress)

    solo = sidecar_of(tmp_path, "solo")
    assert solo["state"] == "done" and [o["name"] for o in solo["outputs"]] == ["solo.mp4"]
    assert sorted(p.name for p in (tmp_path / "done" / "welcome").rglob("*") if p.is_file()) == \
        ["anna.png", "ben.mp4", "job.json", "speech.wav", "welcome.job.toml"]


def test_a_file_still_being_written_is_only_claimed_once_complete(tmp_path, seaweed, bucket, aws_env, media):
    cfg_path = write_config(tmp_path, seaweed, bucket, watch={"settle_seconds": 0.5, "partner_grace": "1m"})
    inbox = tmp_path / "inbox"
    full = write_tone(tmp_path / "long.wav", seconds=3.0)
    data = full.read_bytes()
    drop(inbox, "grow.png", media["still"])
    target = inbox / "grow.wav"
    pieces = [data[i:i + len(data) // 25 + 1] for i in range(0, len(data), len(data) // 25 + 1)]
    target.write_bytes(pieces[0])
    finished = threading.Event()

    def writer() -> None:
        # a slow copy straight onto the final name (what careless tools do)
        with open(target, "ab") as fh:
            for piece in pieces[1:]:
                time.sleep(0.06)
                fh.write(piece)
                fh.flush()
        finished.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert run_burst(cfg_path) == 0
    thread.join(10)
    assert finished.is_set()

    doc = sidecar_of(tmp_path, "grow")
    assert doc["state"] == "done", doc.get("error")
    assert doc["inputs"]["audio"]["size"] == len(data)
    assert (tmp_path / "done" / "grow" / "grow.wav").read_bytes() == data
    assert abs(doc["outputs"][0]["duration"] - 3.0) < 0.15


def test_bad_inputs_fail_with_a_clear_message_and_the_next_good_job_still_succeeds(tmp_path, seaweed, bucket,
                                                                                     aws_env, media):
    cfg_path = write_config(tmp_path, seaweed, bucket, watch={"partner_grace": 0})
    inbox = tmp_path / "inbox"
    garbage = b"RIFF\x00\x00\x00\x00this is not audio at all" * 10
    drop(inbox, "broken.wav", garbage)
    drop(inbox, "broken.png", media["still"])
    drop(inbox, "escape.job.toml", b'audio = "../secret.wav"\ntemplates = ["x.png"]\n')
    drop(inbox, "lonely.wav", media["audio"])
    drop(inbox, "good.png", media["still"])
    drop(inbox, "good.wav", media["audio"])

    with SidecarSampler(tmp_path / "outbox") as sampler:
        assert run_burst(cfg_path) == 0
    assert sampler.invalid == []

    broken = sidecar_of(tmp_path, "broken")
    assert broken["state"] == "failed"
    assert broken["error"]["code"] == "bad_media" and broken["error"]["retryable"] is False
    assert broken["error"]["file"] == "broken.wav"
    assert broken["error"]["message"].startswith("broken.wav: ")  # named as dropped, not by work-area path
    assert ".lipsyncd" not in json.dumps(broken)
    assert (tmp_path / "failed" / "broken" / "broken.wav").read_bytes() == garbage  # untouched

    escape = sidecar_of(tmp_path, "escape")
    assert escape["state"] == "failed" and escape["error"]["code"] == "path_outside_inbox"
    assert "../secret.wav" in escape["error"]["message"]
    assert (tmp_path / "failed" / "escape" / "escape.job.toml").is_file()

    lonely = sidecar_of(tmp_path, "lonely")
    assert lonely["state"] == "failed" and lonely["error"]["code"] == "missing_partner"
    assert "lonely.wav" in lonely["error"]["message"] and "template" in lonely["error"]["message"]

    good = sidecar_of(tmp_path, "good")
    assert good["state"] == "done" and download(good["outputs"][0]["url"])[4:8] == b"ftyp"


def test_auto_engine_chosen_by_a_manifest_falls_back_to_warp_and_moves_the_mouth(tmp_path, seaweed, bucket,
                                                                                  aws_env, logs):
    cfg_path = write_config(tmp_path, seaweed, bucket)  # the daemon's default stays passthrough
    inbox = tmp_path / "inbox"
    write_still(inbox / "face.png", (160, 160))
    drop(inbox, "speech.wav", SPEECH_SHORT)
    drop(inbox, "talk.job.json", json.dumps({"audio": "speech.wav", "templates": ["face.png"],
                                             "engine": "auto"}).encode())
    assert run_burst(cfg_path, timeout=150) == 0

    doc = sidecar_of(tmp_path, "talk")
    assert doc["state"] == "done", doc.get("error")
    # no Wav2Lip checkpoint configured: "auto" says why it used warp, in the sidecar and the log
    assert doc["engine"] == "warp" and doc["outputs"][0]["engine"] == "warp"
    assert any("wav2lip unavailable" in n and "using warp" in n for n in doc["notes"]), doc["notes"]
    fallbacks = [line for line in log_lines(logs) if line["event"] == "engine fallback"]
    # one line per engine skipped: latentsync and musetalk (no models folder), wav2lip (no checkpoint)
    assert [f["note"].split(" ")[0] for f in fallbacks] == ["latentsync", "musetalk", "wav2lip"]
    assert all(f["requested"] == "auto" and f["engine"] == "warp" for f in fallbacks)
    video = tmp_path / "talk.mp4"
    video.write_bytes(download(doc["outputs"][0]["url"]))
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="gray").astype(np.float32) for f in c.decode(video=0)]
    assert abs(len(frames) / 10 - doc["outputs"][0]["duration"]) < 0.2
    # a still photo animated by speech: the lower face changes over time, the forehead barely
    lower = np.array([f[86:110, 60:100] for f in frames])  # the lips (the chin no longer moves)
    upper = np.array([f[10:40, 50:110] for f in frames])
    assert lower.std(axis=0).mean() > 2 * upper.std(axis=0).mean() + 0.5


# --------------------------------------------------------------------------- signals (a real process)


def slow_daemon(tmp_path: Path, seaweed, bucket: str, aws_env: dict[str, str], host: str) -> tuple[Daemon, Share]:
    """A subprocess daemon whose renders take a few seconds (a sleep at every progress report)."""
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, None, host, env=aws_env, extra={
        "storage": {"endpoint": seaweed.endpoint, "bucket": bucket, "max_attempts": 2, "read_timeout": 20},
        "render": {"chunk_frames": 2},
    })
    return daemon, share


def drop_slow_job(share: Share, media: dict[str, Path], name: str) -> None:
    audio = write_tone(share.root / f"{name}-src.wav", seconds=4.0)  # 40 frames at 10 fps
    share.drop(f"{name}.png", media["still"])
    share.drop(f"{name}.wav", audio)


def wait_rendering(share: Share, job: str, daemon: Daemon) -> dict:
    return wait_until(lambda: (d := share.sidecar(job)) and d["state"] == "rendering" and d["progress"] > 0 and d,
                      60, f"{job} rendering", daemons=[daemon])


def test_first_sigterm_lets_the_current_job_finish_then_exits(tmp_path, seaweed, bucket, aws_env, media):
    daemon, share = slow_daemon(tmp_path, seaweed, bucket, aws_env, "term-once")
    daemon.start(failpoints="render_progress=sleep:0.15")
    try:
        drop_slow_job(share, media, "finish")
        wait_rendering(share, "finish", daemon)
        os.kill(daemon.pid, signal.SIGTERM)
        assert daemon.wait_exit(60) == 0, daemon.log_tail()
    finally:
        daemon.terminate(10)
    doc = share.sidecar("finish")
    assert doc["state"] == "done" and sidecar.validate(doc) == []
    assert download(doc["outputs"][0]["url"])[4:8] == b"ftyp"
    events = [e["event"] for e in daemon.log_events()]
    assert events.index("shutdown requested") < events.index("job finished") < events.index("daemon stopped")


def test_second_sigterm_interrupts_the_render_and_the_job_resumes_after_restart(tmp_path, seaweed, bucket,
                                                                              aws_env, media):
    daemon, share = slow_daemon(tmp_path, seaweed, bucket, aws_env, "term-twice")
    daemon.start(failpoints="render_progress=sleep:0.15")
    try:
        drop_slow_job(share, media, "resume")
        first = wait_rendering(share, "resume", daemon)
        os.kill(daemon.pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(daemon.pid, signal.SIGTERM)
        started = time.monotonic()
        assert daemon.wait_exit(30) == 0, daemon.log_tail()
        assert time.monotonic() - started < 10  # did not render the remaining seconds first
    finally:
        daemon.terminate(10)

    waiting = share.sidecar("resume")
    assert sidecar.validate(waiting) == []
    assert waiting["state"] == "queued" and waiting["id"] == first["id"]
    assert any("interrupted" in n and "resumes" in n for n in waiting["notes"])
    (job_dir,) = share.work_jobs()  # never lost: still claimed, inputs inside
    assert job_dir.name == first["id"] and (job_dir / "inputs" / "resume.wav").is_file()

    daemon.start()  # no failpoints: full speed
    try:
        (doc,) = share.wait_for(["resume"], ("done",), timeout=60, daemons=[daemon]).values()
    finally:
        daemon.terminate(20)
    assert doc["id"] == first["id"] and sidecar.validate(doc) == []
    assert any(n.startswith("resumed at") for n in doc["notes"])
    assert share.work_jobs() == []
    assert download(doc["outputs"][0]["url"])[4:8] == b"ftyp"


def test_a_burst_run_on_the_embedded_store_says_its_links_die_with_it(tmp_path, media, logs):
    from tests.daemon_harness import free_port

    cfg_path = write_config(tmp_path, None, "lipsyncd", storage={"mode": "embedded", "bucket": "lipsyncd"},
                            **{"storage.embedded": {"port": free_port()}})
    drop(tmp_path / "inbox", "brief.png", media["still"])
    drop(tmp_path / "inbox", "brief.wav", media["audio"])
    assert run_burst(cfg_path) == 0
    doc = sidecar_of(tmp_path, "brief")
    assert doc["state"] == "done"
    assert any("stops when the run ends" in n for n in doc["notes"]), doc["notes"]
    assert any(e["event"].startswith("burst run with the embedded store") for e in log_lines(logs))


def test_a_name_used_again_gets_its_own_record_and_a_failed_job_dropped_again_replaces_its_own(
        tmp_path, seaweed, bucket, aws_env, media):
    cfg_path = write_config(tmp_path, seaweed, bucket)
    inbox = tmp_path / "inbox"
    # 1. "talk" twice: the second job must not replace the first one's record or link
    for _ in range(2):
        drop(inbox, "talk.png", media["still"])
        drop(inbox, "talk.wav", media["audio"])
        assert run_burst(cfg_path) == 0
    first, second = sidecar_of(tmp_path, "talk"), sidecar_of(tmp_path, "talk-2")
    assert first["state"] == second["state"] == "done" and first["id"] != second["id"]
    assert first["outputs"][0]["key"] != second["outputs"][0]["key"]
    assert download(first["outputs"][0]["url"]) and download(second["outputs"][0]["url"])
    assert any("recorded as 'talk-2'" in n for n in first["notes"])
    assert (tmp_path / "done" / "talk").is_dir() and (tmp_path / "done" / "talk-2").is_dir()
    # 2. "promo" fails (its audio is not audio), is fixed and dropped again: the record now
    #    says done, and failed/promo/ no longer contradicts it (the old inputs are kept aside)
    drop(inbox, "promo.png", media["still"])
    drop(inbox, "promo.wav", b"this is not a wav file")
    assert run_burst(cfg_path) == 0
    failed = sidecar_of(tmp_path, "promo")
    assert failed["state"] == "failed"
    drop(inbox, "promo.png", media["still"])
    drop(inbox, "promo.wav", media["audio"])
    assert run_burst(cfg_path) == 0
    fixed = sidecar_of(tmp_path, "promo")
    assert fixed["state"] == "done" and fixed["id"] != failed["id"]
    assert any(f"after the failed run {failed['id']}" in n for n in fixed["notes"])
    assert not (tmp_path / "failed" / "promo").exists()
    assert (tmp_path / "failed" / f"promo.{failed['id']}" / "promo.wav").read_bytes() == b"this is not a wav file"
    assert not (tmp_path / "outbox" / "promo-2.json").exists()

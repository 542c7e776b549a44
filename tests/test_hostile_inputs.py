"""Hostile and broken drops, into a running daemon: each ends in failed/NAME/ with a clear,
specific error, nothing outside the inbox is touched, and good jobs keep being served.

The inbox/manifest rules themselves are unit-tested in test_inbox.py and test_manifest.py;
this is the end-to-end proof through the real daemon, real media and a real store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from tests import outbox_files as sidecar
from tests import hostile_media as hm
from tests.daemon_harness import REPO, Daemon, Media, Share, download, wait_until

MAX_AUDIO_SECONDS = 4
MAX_FILE_SIZE = 512 * 1024


# drop(inbox, scratch folder, media, job=NAME) puts the job's files into the inbox
Dropper = Callable[..., None]


@dataclass
class Case:
    job: str
    drop: Dropper
    code: str  # expected error.code
    says: tuple[str, ...]  # words the message must contain (case-insensitive)
    file: str | None = None  # expected error.file (the offending file's name)


def with_audio(builder: Callable[[Path], Path], ext: str) -> Dropper:
    """A job NAME: the hostile audio file NAME.ext plus a good template."""
    def drop(inbox: Path, scratch: Path, media: Media, *, job: str) -> None:
        built = builder(scratch / f"{job}{ext}")
        shutil.copyfile(media.template, inbox / f".{job}.mp4.part")
        os.replace(inbox / f".{job}.mp4.part", inbox / f"{job}.mp4")
        os.replace(built, inbox / f"{job}{ext}")
    return drop


def with_template(builder: Callable[[Path], Path], ext: str = ".mp4") -> Dropper:
    """A job NAME: a good audio plus the hostile template NAME.ext."""
    def drop(inbox: Path, scratch: Path, media: Media, *, job: str) -> None:
        built = builder(scratch / f"{job}{ext}")
        shutil.copyfile(media.audio, inbox / f".{job}.wav.part")
        os.replace(inbox / f".{job}.wav.part", inbox / f"{job}.wav")
        os.replace(built, inbox / f"{job}{ext}")
    return drop


def manifest(text: str, ext: str = ".job.toml") -> Dropper:
    def drop(inbox: Path, scratch: Path, media: Media, *, job: str) -> None:
        (inbox / f".{job}.part").write_text(text)
        os.replace(inbox / f".{job}.part", inbox / f"{job}{ext}")
    return drop


def _big_wav(path: Path) -> Path:
    """A genuine, short WAV that is simply too large a file (48 kHz stereo float)."""
    seconds, rate = 1.0, 48000
    n = int(seconds * rate)
    samples = (0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)).astype(np.float32)
    with av.open(str(path), "w", format="wav") as out:
        st = out.add_stream("pcm_f64le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([samples, samples]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode():
            out.mux(p)
    assert path.stat().st_size > MAX_FILE_SIZE
    return path


CASES = [
    Case("empty-audio", with_audio(hm.zero_byte, ".wav"), "bad_media", ("empty",), "empty-audio.wav"),
    Case("empty-template", with_template(hm.zero_byte), "bad_media", ("empty",), "empty-template.mp4"),
    Case("text-as-wav", with_audio(hm.text_file, ".wav"), "bad_media", ("not a readable",), "text-as-wav.wav"),
    Case("cut-header-wav", with_audio(hm.truncated_wav, ".wav"), "bad_media", (), "cut-header-wav.wav"),
    Case("cut-data-wav", with_audio(hm.truncated_wav_data, ".wav"), "bad_media", ("truncated",), "cut-data-wav.wav"),
    Case("garbage-mp3", with_audio(hm.garbage_mp3, ".mp3"), "bad_media", (), "garbage-mp3.mp3"),
    Case("cut-mp3", with_audio(hm.truncated_mp3, ".mp3"), "bad_media", (), "cut-mp3.mp3"),
    Case("cut-mp4", with_template(hm.truncated_mp4), "bad_media", (), "cut-mp4.mp4"),
    Case("corrupt-mp4", with_template(hm.corrupt_mp4), "bad_media", (), "corrupt-mp4.mp4"),
    Case("audio-only-template", with_template(hm.audio_only_mp4), "no_video_stream", ("video",),
         "audio-only-template.mp4"),
    Case("video-as-audio", with_audio(hm.video_only_audio, ".m4a"), "no_audio_stream", ("audio",),
         "video-as-audio.m4a"),
    Case("huge-picture", with_template(lambda p: hm.mp4_declaring(p, width=12000, height=12000)),
         "limit_exceeded", ("12000x12000",), "huge-picture.mp4"),
    Case("endless-template", with_template(lambda p: hm.mp4_declaring(p, seconds=100 * 3600)),
         "limit_exceeded", ("360000",), "endless-template.mp4"),
    Case("million-frames", with_template(lambda p: hm.mp4_declaring(p, frames=10_000_000)),
         "limit_exceeded", (), "million-frames.mp4"),
    Case("endless-wav", with_audio(lambda p: hm.wav_declaring(p, seconds=2 * 3600), ".wav"),
         "limit_exceeded", ("7200",), "endless-wav.wav"),
    Case("too-long-audio", with_audio(lambda p: hm.long_audio(p, seconds=MAX_AUDIO_SECONDS + 2), ".wav"),
         "limit_exceeded", (f"limit of {MAX_AUDIO_SECONDS}",), "too-long-audio.wav"),
    Case("too-big-file", with_audio(_big_wav, ".wav"),
         "limit_exceeded", ("larger than the limit",), "too-big-file.wav"),
    Case("dotdot", manifest('audio = "../secret.wav"\ntemplates = ["x.mp4"]\n'), "path_outside_inbox", ("..",)),
    Case("absolute", manifest('audio = "/home/someone/secret.wav"\ntemplates = ["x.mp4"]\n'), "path_outside_inbox",
         ("absolute",)),
    Case("other-users-job", manifest('audio = ".lipsyncd/work/other/job-1/inputs/a.wav"\ntemplates = ["x.mp4"]\n'),
         "path_outside_inbox", ()),
    Case("bad-toml", manifest('audio = "a.wav\ntemplates = [\n'), "bad_manifest", ("toml",)),
    Case("bad-json", manifest('{"audio": "a.wav", "templates": ["x.mp4"],,}', ".job.json"), "bad_manifest",
         ("json",)),
]


def test_builders_tell_the_lies_they_promise(tmp_path):
    """The hostile files really declare what the cases rely on (else those tests prove nothing)."""
    big = hm.mp4_declaring(tmp_path / "big.mp4", width=12000, height=12000)
    with av.open(str(big)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (12000, 12000)
    assert big.stat().st_size < 200_000
    long = hm.mp4_declaring(tmp_path / "long.mp4", seconds=100 * 3600)
    with av.open(str(long)) as c:
        assert c.duration / av.time_base == pytest.approx(360000, rel=1e-3)
    frames = hm.mp4_declaring(tmp_path / "frames.mp4", frames=10_000_000)
    with av.open(str(frames)) as c:
        assert c.streams.video[0].frames == 10_000_000
    wav = hm.wav_declaring(tmp_path / "long.wav", seconds=7200)
    with av.open(str(wav)) as c:
        assert c.duration / av.time_base == pytest.approx(7200, rel=1e-3)
    assert wav.stat().st_size < 20_000
    with av.open(str(hm.audio_only_mp4(tmp_path / "a.mp4"))) as c:
        assert (len(c.streams.audio), len(c.streams.video)) == (1, 0)
    with av.open(str(hm.video_only_audio(tmp_path / "v.m4a"))) as c:
        assert (len(c.streams.audio), len(c.streams.video)) == (0, 1)
    with av.open(str(hm.write_mp3(tmp_path / "ok.mp3"))) as c:
        assert c.streams.audio[0].codec_context.name.startswith("mp3")
    for bad in (hm.truncated_mp4(tmp_path / "t.mp4"), hm.corrupt_mp4(tmp_path / "c.mp4"),
                hm.truncated_wav(tmp_path / "t.wav"), hm.garbage_mp3(tmp_path / "g.mp3"),
                hm.truncated_mp3(tmp_path / "t.mp3"), hm.text_file(tmp_path / "x.wav")):
        assert not decodes(bad), bad.name


def decodes(path: Path) -> bool:
    """True when FFmpeg finds a stream in ``path`` and decodes it to the end without error."""
    try:
        with av.open(str(path)) as c:
            streams = list(c.streams.video) + list(c.streams.audio)
            if not streams:
                return False
            frames = sum(1 for _ in c.decode(streams[0]))
            return frames > 0
    except av.error.FFmpegError:
        return False


def test_hostile_drops_fail_clearly_and_good_jobs_keep_flowing(tmp_path, store, media):
    share = Share(tmp_path / "share")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.wav"
    shutil.copyfile(media.audio, secret)
    secret_bytes = secret.read_bytes()
    daemon = Daemon(tmp_path, share, store, "hostile", extra={
        "limits": {"max_audio_seconds": MAX_AUDIO_SECONDS, "max_file_size": MAX_FILE_SIZE}})
    stems = list(hm.HOSTILE_STEMS)
    with daemon.start():
        share.drop_job("good-first", media)
        for case in CASES:
            case.drop(share.inbox, scratch, media, job=case.job)
        # a symlink leading out of the inbox, paired with a good template
        hm.symlink_out_of_inbox(share.inbox / "escape.wav", secret)
        share.drop("escape.mp4", media.template)
        # names with spaces, unicode and shell metacharacters: good jobs that must succeed
        for stem in stems:
            share.drop_job(stem, media)
        share.drop_job("good-last", media)
        names = [c.job for c in CASES] + ["escape", "good-first", "good-last"] + stems
        docs = share.wait_for(names, timeout=120, daemons=[daemon])
        wait_until(lambda: not share.work_jobs(), 20, "work area emptied", daemons=[daemon])
        assert daemon.alive

    problems = []
    for case in CASES:
        doc = docs[case.job]
        err = doc.get("error") or {}
        message = err.get("message", "").lower()
        if doc["state"] != "failed" or err.get("code") != case.code \
                or not all(w.lower() in message for w in case.says) \
                or (case.file and case.file not in message + err.get("file", "")):
            problems.append(f"{case.job}: {doc['state']} {err}")
            continue
        assert sidecar.validate(doc) == [], case.job
        # the inputs are kept, untouched, in failed/NAME/
        kept = {p.name for p in (share.root / "failed" / case.job).iterdir()}
        assert "job.json" in kept and len(kept) >= 2, (case.job, kept)
    assert problems == [], "\n".join(problems)

    esc = docs["escape"]
    assert esc["state"] == "failed" and esc["error"]["code"] == "symlink_input", esc["error"]
    assert esc["inputs"]["audio"]["name"] == "escape.wav"
    assert secret.read_bytes() == secret_bytes  # never moved, never read into a job
    assert (share.root / "failed" / "escape" / "escape.wav").is_symlink()

    for name in ["good-first", "good-last", *stems]:
        doc = docs[name]
        assert doc["state"] == "done", (name, doc.get("error"))
        (out,) = doc["outputs"]
        assert doc["inputs"]["audio"]["name"] == f"{name}.wav"  # original names kept
        assert out["name"] == f"{name}.mp4"
        key_name = out["key"].rsplit("/", 1)[-1]
        assert set(key_name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"), out["key"]
        assert hashlib.sha256(download(out["url"])).hexdigest() == out["sha256"]
    assert not (REPO / "x").exists() and not any(p.name == "x" for p in tmp_path.rglob("x"))
    assert [p for p in share.inbox.iterdir() if not p.name.startswith(".")] == []
    assert share.leftovers() == []


def test_file_changed_while_being_read_fails_the_job(tmp_path, store, media):
    """A copy that carried on writing after the job was claimed (a paused upload, a slow
    share): the render read a moving target, so the job fails and says so."""
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "changing")
    with daemon.start(failpoints="before_render=sleep:2"):
        share.drop("moving.mp4", media.template)
        writer = open(share.inbox / "moving.wav", "wb")  # the copy tool keeps its handle open
        writer.write(media.audio.read_bytes())
        writer.flush()
        past = time.time() - 10
        os.utime(share.inbox / "moving.wav", (past, past))
        wait_until(lambda: (d := share.sidecar("moving")) and d["state"] == "rendering", 30, "claimed",
                   daemons=[daemon])
        writer.write(b"\0" * 4096)  # the claimed file grows under the renderer
        writer.close()
        doc = share.wait_for(["moving"], timeout=60, daemons=[daemon])["moving"]
    assert doc["state"] == "failed"
    assert doc["error"]["code"] == "input_changed"
    assert "moving.wav" in doc["error"]["message"]
    assert (share.root / "failed" / "moving" / "moving.wav").stat().st_size == media.audio.stat().st_size + 4096

"""Finishing options and text instead of audio, end to end through the daemon: drops and
manifests in, the finished MP4 in the store, every option shown in the sidecar."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lipsync.media.audio import probe_audio
from tests.heygem_standin import TtsStandIn
from tests.media_factory import SPEECH_SHORT, write_face_video, write_still
from tests.test_e2e import download, drop, run_burst, sidecar_of, write_config

SRT = "1\n00:00:00,200 --> 00:00:01,000\nWelcome\n\n2\n00:00:01,200 --> 00:00:02,000\n欢迎光临\n"


def library(tmp_path: Path) -> Path:
    lib = tmp_path / "library"
    lib.mkdir()
    logo = np.zeros((30, 60, 4), np.uint8)
    logo[..., 1], logo[..., 3] = 255, 255  # opaque green
    Image.fromarray(logo).save(lib / "logo.png")
    write_face_video(lib / "intro.mp4", seconds=1.0, size=(200, 120), audio=True)
    return lib


def video_of(doc: dict, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(download(doc["outputs"][0]["url"]))
    return path


def test_a_stem_drop_with_subtitles_gets_the_configured_finishing(tmp_path, seaweed, bucket, aws_env):
    lib = library(tmp_path)
    cfg_path = write_config(tmp_path, seaweed, bucket, paths={"templates": str(lib)},
                            output={"resolution": "360p", "aspect": "9:16", "subtitles": "burn",
                                    "watermark": {"image": "logo.png", "position": "top-right", "opacity": 1.0}})
    inbox = tmp_path / "inbox"
    write_still(tmp_path / "face.png", (240, 240))
    drop(inbox, "promo.png", tmp_path / "face.png")
    drop(inbox, "promo.wav", SPEECH_SHORT)
    drop(inbox, "promo.srt", SRT.encode())
    assert run_burst(cfg_path, timeout=150) == 0

    doc = sidecar_of(tmp_path, "promo")
    assert doc["state"] == "done", doc.get("error")
    out = doc["outputs"][0]
    assert (out["width"], out["height"]) == (360, 640)
    notes = " ".join(doc["notes"])
    assert "watermark" in notes and "subtitles burned in: 2 cues" in notes and "reframed" in notes
    path = video_of(doc, tmp_path, "promo.mp4")
    with av.open(str(path)) as c:
        assert [s.codec_context.name for s in c.streams.subtitles] == ["mov_text"]
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    corner = frame[10:30, 360 - 60:360 - 20].astype(np.int16)  # the logo, top right
    assert corner[..., 1].mean() > 180 and corner[..., 0].mean() < 80
    assert (tmp_path / "done" / "promo" / "promo.srt").is_file()  # the subtitles stay with the inputs


def test_a_manifest_sets_its_own_options_and_a_bad_one_fails_listing_every_problem(tmp_path, seaweed, bucket,
                                                                                  aws_env):
    lib = library(tmp_path)
    cfg_path = write_config(tmp_path, seaweed, bucket, paths={"templates": str(lib)})
    inbox = tmp_path / "inbox"
    write_still(tmp_path / "face.png", (160, 160))
    drop(inbox, "face.png", tmp_path / "face.png")
    drop(inbox, "speech.wav", SPEECH_SHORT)
    drop(inbox, "captions.vtt", b"WEBVTT\n\n00:00.200 --> 00:01.000\nHello\n")
    drop(inbox, "talk.job.json", json.dumps({
        "audio": "speech.wav", "templates": ["face.png"], "intro": "intro.mp4", "fps": 20,
        "subtitle_file": "captions.vtt", "resolution": "240x240"}).encode())
    drop(inbox, "bad.job.json", json.dumps({
        "audio": "speech.wav", "templates": ["face.png"], "resolution": "huge", "aspect": "3:7", "fps": 0,
        "watermark": {"image": "logo.bmp"}, "subtitles": "loud"}).encode())
    write_still(tmp_path / "face2.png", (160, 160))
    drop(inbox, "nointro.png", tmp_path / "face2.png")
    drop(inbox, "nointro.wav", SPEECH_SHORT)
    drop(inbox, "nointro.job.toml", b'audio = "nointro.wav"\ntemplates = ["nointro.png"]\nintro = "nope.mp4"\n')
    assert run_burst(cfg_path, timeout=150) == 0

    doc = sidecar_of(tmp_path, "talk")
    assert doc["state"] == "done", doc.get("error")
    assert doc["options"]["intro"] == "intro.mp4" and doc["options"]["fps"] == 20.0
    assert doc["options"]["subtitle_file"] == "captions.vtt" and doc["options"]["resolution"] == "240x240"
    out = doc["outputs"][0]
    assert (out["width"], out["height"], out["fps"]) == (240, 240, 20.0)
    speech = probe_audio(SPEECH_SHORT).duration
    assert abs(out["duration"] - (1.0 + speech)) < 0.15  # the 1 s intro, then the speech
    with av.open(str(video_of(doc, tmp_path, "talk.mp4"))) as c:
        (cue,) = [p for p in c.demux(c.streams.subtitles[0]) if p.size > 2]
        assert bytes(cue)[2:].decode() == "Hello" and cue.pts == 1200  # 200 ms after the 1 s intro

    bad = sidecar_of(tmp_path, "bad")
    assert bad["state"] == "failed"
    message = bad["error"]["message"]
    for key in ("resolution", "aspect", "fps", "watermark.image", "subtitles"):
        assert key in message, message

    # a clip that is not in the library: named as the user named it, the server's folders not at all
    missing = sidecar_of(tmp_path, "nointro")
    assert missing["state"] == "failed" and "'nope.mp4' is not in the template library" in missing["error"]["message"]
    assert str(tmp_path) not in json.dumps(missing) and str(lib) not in json.dumps(missing)


@pytest.fixture
def tts_server():
    server = TtsStandIn(speakers=("anna",)).start()
    yield server
    server.stop()


def test_text_instead_of_audio_is_spoken_by_the_heygem_tts_service(tmp_path, seaweed, bucket, aws_env, tts_server):
    cfg_path = write_config(tmp_path, seaweed, bucket, tts={"backend": "heygem", "url": tts_server.url,
                                                            "voice": "anna"})
    inbox = tmp_path / "inbox"
    write_still(tmp_path / "face.png", (128, 128))
    drop(inbox, "hello.png", tmp_path / "face.png")
    text = "Good morning and welcome to the show"  # 7 words: the stand-in speaks 0.3 s each
    drop(inbox, "hello.txt", text.encode())
    drop(inbox, "nobody.png", tmp_path / "face.png")
    drop(inbox, "nobody.job.json", json.dumps({"text": "hi there", "voice": "bob", "templates": ["nobody.png"]}).encode())
    assert run_burst(cfg_path, timeout=150) == 0

    doc = sidecar_of(tmp_path, "hello")
    assert doc["state"] == "done", doc.get("error")
    assert abs(doc["outputs"][0]["duration"] - 7 * 0.3) < 0.15  # as long as the speech made from the text
    kept = tmp_path / "done" / "hello" / "hello.speech.wav"
    assert kept.is_file()  # the generated audio stays with the inputs
    request = tts_server.requests[0]
    assert request["text"] == text and request["speaker"] == "anna" and request["format"] == "wav"
    with av.open(str(video_of(doc, tmp_path, "hello.mp4"))) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert np.abs(audio).max() > 0.1  # audible

    nobody = sidecar_of(tmp_path, "nobody")
    error = nobody["error"]  # a voice never trained there: the user's input, said as such
    assert nobody["state"] == "failed" and error["code"] == "bad_voice" and "'bob'" in error["message"]
    assert "speaker id" in error["message"] and not error["retryable"]
    assert (tmp_path / "failed" / "nobody" / "nobody.job.json").is_file()  # inputs kept


def test_text_with_espeak(tmp_path, seaweed, bucket, aws_env):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it with apt)")
    cfg_path = write_config(tmp_path, seaweed, bucket)
    inbox = tmp_path / "inbox"
    write_still(tmp_path / "face.png", (128, 128))
    drop(inbox, "greet.png", tmp_path / "face.png")
    drop(inbox, "greet.job.toml", b'templates = ["greet.png"]\ntext = "Hello, and thank you for watching."\n')
    assert run_burst(cfg_path, timeout=150) == 0
    doc = sidecar_of(tmp_path, "greet")
    assert doc["state"] == "done", doc.get("error")
    assert 1.0 < doc["outputs"][0]["duration"] < 5.0
    assert doc["options"]["text"] == "Hello, and thank you for watching."

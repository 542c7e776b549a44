"""Finishing options on real renders: size and shape with the face kept in frame, frame
rate, watermark, intro/outro joined by copy or re-encoded, soft and burned subtitles (CJK
included), and text spoken instead of audio."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lipsync.engines import create_engine
from lipsync.errors import LipsyncError, MediaError
from lipsync.finish import FinishSpec, Watermark, finish_video, output_size
from lipsync.finish.spec import check
from lipsync.media.audio import load_mono, probe_audio
from lipsync.media.template import probe_template
from lipsync.render import render
from tests import media_factory as mf


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("finish")


@pytest.fixture(scope="module")
def wide(work) -> Path:
    """A 16:9 render whose face sits right of centre: the case reframing is for."""
    src = mf.astronaut()
    canvas = np.full((288, 512, 3), 200, np.uint8)
    face = np.asarray(Image.fromarray(src[0:256, 96:352]).resize((220, 220)))
    canvas[40:260, 270:490] = face
    clip = mf.write_frames_video(work / "wide-template.mp4", [canvas] * 25)
    return render(mf.SPEECH_SHORT, clip, work / "wide.mp4", engine=create_engine("passthrough")).path


@pytest.fixture(scope="module")
def intro(wide, work) -> Path:
    """A clip made by lipsyncd from the same template: the render's own format."""
    return render(mf.SILENCE, work / "wide-template.mp4", work / "intro.mp4", engine=create_engine("passthrough")).path


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def face_centre(frame: np.ndarray) -> tuple[float, float, float]:
    """(x, y, width) of the largest face, by the dlib detector."""
    from lipsync.face.landmarks import load_landmark_models

    boxes = [d.box for d in load_landmark_models().detect(np.asarray(Image.fromarray(frame).convert("L")), 1)]
    assert boxes, "no face in the finished frame"
    x0, y0, x1, y1 = boxes[0]
    return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0


def stream_info(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        subs = [(s.codec_context.name, [(p.pts, p.duration, bytes(p)[2:].decode()) for p in c.demux(s) if p.size > 2])
                for s in c.streams.subtitles]
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for p in c.demux(v) if p.size)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        # the rate from the frames' own timing: what a player shows
        fps = frames / float(v.duration * v.time_base) if v.duration else float(v.guessed_rate or 0)
        return {"size": (v.codec_context.width, v.codec_context.height), "fps": round(fps, 2),
                "duration": float(c.duration / 1e6), "subtitles": subs}


def test_sizes_follow_the_rules():
    assert output_size((1280, 720), "keep", "9:16") == (404, 720)  # 405, made even
    assert output_size((1280, 720), "1080p", "9:16") == (1080, 1920)
    assert output_size((1280, 720), "720p", "keep") == (1280, 720)
    assert output_size((640, 480), "1280x720", "keep") == (1280, 720)
    problems = check({"resolution": "1279x720", "aspect": "2:1", "fps": 500, "subtitles": "loud",
                      "watermark": {"image": "logo.gif", "position": "middle", "opacity": 2}})
    text = " | ".join(message for _, message in problems)
    for want in ("resolution", "aspect", "fps", "subtitles", "watermark.image", "watermark.position",
                 "watermark.opacity"):
        assert want in text, text  # every problem at once
    problems = check({"resolution": "1280x720", "aspect": "9:16"})
    assert problems and "disagree" in problems[0][1]


def test_portrait_crop_keeps_the_face_centred(wide, work):
    out = finish_video(wide, work / "portrait.mp4", FinishSpec(resolution="720p", aspect="9:16"))
    info = stream_info(out.path)
    assert info["size"] == (720, 1280) and out.method == "redraw"
    assert "follows the face" in " ".join(out.notes)
    frames = frames_of(out.path)
    x, y, w = face_centre(frames[len(frames) // 2])
    assert abs(x - 360) < 0.12 * 720, x  # the face, right of centre in the source, is centred
    assert abs(info["duration"] - probe_audio(mf.SPEECH_SHORT).duration) < 0.1


def test_a_crop_that_would_cut_the_face_pads_with_a_blurred_fill(work):
    close_up = mf.write_still(work / "close.png", size=(240, 240))
    rendered = render(mf.SPEECH_SHORT, close_up, work / "close.mp4", engine=create_engine("passthrough")).path
    out = finish_video(rendered, work / "close-wide.mp4", FinishSpec(resolution="360p", aspect="16:9"))
    assert stream_info(out.path)["size"] == (640, 360)
    assert "blurred fill" in " ".join(out.notes)
    frame = frames_of(out.path)[5]
    band = frame[:, :100].astype(np.float32)  # left of the fitted picture: the fill
    assert 20 < band.mean() < 200 and np.abs(np.diff(band, axis=1)).mean() < 3  # a soft image, not black
    _, _, w = face_centre(frame)
    assert w > 120  # the whole face, fitted (not cut)


def test_frame_rate_conversion_keeps_the_length(wide, work):
    out = finish_video(wide, work / "30fps.mp4", FinishSpec(fps=30))
    info = stream_info(out.path)
    assert info["fps"] == 30.0 and abs(info["duration"] - probe_audio(wide).duration) < 0.1
    assert abs(len(frames_of(out.path)) - round(probe_audio(wide).duration * 30)) <= 1


def test_watermark_is_composited_where_asked(wide, work):
    logo = np.zeros((50, 100, 4), np.uint8)
    logo[..., 2], logo[..., 3] = 255, 255  # opaque blue
    logo[:, :50, 3] = 0  # left half transparent
    Image.fromarray(logo).save(work / "logo.png")
    spec = FinishSpec(watermark=Watermark(work / "logo.png", position="top-left", margin=0.05, opacity=1.0,
                                          scale=0.2))
    out = finish_video(wide, work / "marked.mp4", spec)
    frame = frames_of(out.path)[10].astype(np.int16)
    plain = frames_of(wide)[10].astype(np.int16)
    m = round(288 * 0.05)
    opaque = frame[m + 5:m + 15, m + 60:m + 95]  # the right half of the logo: blue
    assert opaque[..., 2].mean() > 200 and opaque[..., 0].mean() < 60
    clear = slice(m + 5, m + 15), slice(m + 5, m + 40)  # its transparent half: the picture shows through
    assert np.abs(frame[clear] - plain[clear]).mean() < 6
    assert np.abs(frame[200:, 300:] - plain[200:, 300:]).mean() < 3  # the rest is untouched


def test_intro_and_outro_are_joined_by_copy_when_their_format_matches(wide, work, intro):
    out = finish_video(wide, work / "joined.mp4", FinishSpec(intro=intro, outro=intro))
    assert out.method == "copy"
    expect = 2 * probe_audio(intro).duration + probe_audio(wide).duration
    assert abs(stream_info(out.path)["duration"] - expect) < 0.15
    # and one of another size is re-encoded to the video's format
    other = mf.write_face_video(work / "other.mp4", seconds=1.0, size=(320, 240), audio=True)
    out = finish_video(wide, work / "joined2.mp4", FinishSpec(intro=other))
    assert out.method == "redraw" and stream_info(out.path)["size"] == (512, 288)
    assert abs(stream_info(out.path)["duration"] - (1.0 + probe_audio(wide).duration)) < 0.15


SRT = "1\n00:00:00,300 --> 00:00:01,200\nHello there\n\n2\n00:00:01,400 --> 00:00:02,400\n你好，世界\n"


def test_soft_subtitles_are_a_timed_track(wide, work, intro):
    (work / "talk.srt").write_text(SRT, encoding="utf-8")
    out = finish_video(wide, work / "soft.mp4", FinishSpec(subtitles=work / "talk.srt"))
    assert out.method == "copy"
    (codec, cues), = stream_info(out.path)["subtitles"]
    assert codec == "mov_text"
    assert cues == [(300, 900, "Hello there"), (1400, 1000, "你好，世界")]
    # with an intro the captions move later by its length
    out = finish_video(wide, work / "soft2.mp4", FinishSpec(intro=intro, subtitles=work / "talk.srt"))
    (_, cues), = stream_info(out.path)["subtitles"]
    shift = round(probe_template(intro).duration * 1000)  # the intro's picture, frame by frame
    assert [c[0] for c in cues] == [300 + shift, 1400 + shift]


def test_burned_subtitles_draw_the_text_cjk_included(wide, work):
    (work / "talk.vtt").write_text("WEBVTT\n\n00:00.300 --> 00:01.200\nHello there\n\n"
                                   "00:01.400 --> 00:02.400\n你好，世界\n", encoding="utf-8")
    out = finish_video(wide, work / "burned.mp4", FinishSpec(subtitles=work / "talk.vtt", subtitle_mode="burn"))
    burned, plain = frames_of(out.path), frames_of(wide)
    bottom = slice(200, 288)

    def changed(i: int) -> int:  # pixels of the bottom band that the captions changed clearly
        return int((np.abs(burned[i][bottom].astype(np.int16) - plain[i][bottom]).max(axis=2) > 60).sum())

    assert changed(20) > 150 and changed(45) > 150  # "Hello there" at 0.8 s, the Chinese line at 1.8 s
    assert changed(33) < 10  # between the cues: nothing drawn
    # the packaged font has real glyphs for CJK, not the "missing glyph" box
    from lipsync.finish.subtitles import _font

    font = _font(32)
    missing = np.asarray(font.getmask("\ue000"))  # a private-use code point: surely the missing-glyph box
    for ch in "你好世界こんにちは안녕":
        assert not np.array_equal(np.asarray(font.getmask(ch)), missing), ch
    assert stream_info(out.path)["subtitles"][0][0] == "mov_text"  # burned and still switchable


def test_bad_subtitles_name_the_file(wide, work):
    (work / "bad.srt").write_text("this is not a subtitle file", encoding="utf-8")
    with pytest.raises(MediaError) as err:
        finish_video(wide, work / "bad.mp4", FinishSpec(subtitles=work / "bad.srt"))
    assert "bad.srt" in str(err.value)
    assert not (work / "bad.mp4").exists()


@pytest.fixture(scope="module")
def espeak():
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it with apt)")


def test_espeak_speaks_text_of_a_plausible_length(espeak, work):
    from lipsync.tts import TtsSettings, synthesize

    text = "Welcome to the quarterly update. Sales grew in every region this year."
    wav = synthesize(text, work / "speech.wav", TtsSettings(voice="en", rate=165))
    info = probe_audio(wav)
    words = len(text.split())
    assert 0.6 * words / 165 * 60 < info.duration < 1.8 * words / 165 * 60  # about 165 words a minute
    samples = load_mono(wav)
    assert np.abs(samples).max() > 0.1 and (np.abs(samples) > 0.02).mean() > 0.3  # audible speech, mostly
    with pytest.raises(LipsyncError) as err:
        synthesize("hello", work / "x.wav", TtsSettings(voice="xx-nosuchvoice"))
    # the user's input, not our bug: its own code, the voice named, the voices there are
    assert err.value.code == "bad_voice" and err.value.permanent
    assert "'xx-nosuchvoice'" in err.value.message and "en-us" in err.value.message
    assert not (work / "x.wav").exists()
    from lipsync.tts import unknown_voice

    assert "did you mean 'en-us'?" in unknown_voice("espeak-ng", "en_US", ["de", "en-gb", "en-us"])
    with pytest.raises(LipsyncError) as err:
        synthesize("   ", work / "x.wav", TtsSettings(voice="en"))
    assert err.value.code == "bad_text"


# --------------------------------------------------------------------------- small faces, followed


def _followed(work, name, size, head_width, out_spec, **walk):
    source, _boxes = mf.write_walking_face_video(work / f"{name}.mp4", size, head_width, **walk)
    tone = mf.write_tone(work / f"{name}.wav", seconds=walk.get("seconds", 4.0))
    rendered = render(tone, source, work / f"{name}-rendered.mp4", engine=create_engine("passthrough")).path
    out = finish_video(rendered, work / f"{name}-9x16.mp4", out_spec)
    frames = frames_of(out.path)
    ow = frames[0].shape[1]
    scale = ow / (size[1] * 9 / 16)  # output pixels per source pixel of the window
    head = mf.head_patch(head_width)
    expected = mf.visible_share(head, 1.0) * scale ** 2  # the whole head's pixels, at the output's scale
    shares = [mf.visible_share(f, expected) for f in frames]
    return out, shares


@pytest.mark.parametrize("size,head_width", [((1920, 1080), 260), ((1920, 1080), 160), ((3840, 2160), 320)],
                         ids=["1080p-160px-face", "1080p-96px-face", "4k-192px-face"])
def test_a_vertical_crop_follows_a_small_face_across_a_wide_shot(work, size, head_width):
    # the detector's face box is about 0.6 of the head: faces of 160 and 96 px in 1080p,
    # 192 px in 4K (5 % of the width) walking from 20 % to 80 % of the frame
    out, shares = _followed(work, f"walk-{size[0]}-{head_width}", size, head_width,
                            FinishSpec(resolution="keep", aspect="9:16"),
                            seconds=4.0 if size[0] < 3000 else 2.0)
    assert "the window follows the face" in " ".join(out.notes)
    whole = sum(1 for s in shares if s > 0.97)
    assert whole >= 0.95 * len(shares), [round(s, 2) for s in shares]  # the head fully in frame


def test_a_shot_without_a_face_is_centred_and_says_so(work):
    frames = [np.full((360, 640, 3), 90, np.uint8) for _ in range(12)]
    plain = mf.write_frames_video(work / "no-face.mp4", frames, fps=12)
    rendered = render(mf.write_tone(work / "no-face.wav"), plain, work / "no-face-rendered.mp4",
                      engine=create_engine("passthrough")).path
    out = finish_video(rendered, work / "no-face-9x16.mp4", FinishSpec(resolution="keep", aspect="9:16"))
    assert "centred: no face was found" in " ".join(out.notes)
    assert "follows the face" not in " ".join(out.notes)


def test_a_large_face_is_still_cropped_when_the_head_fits(work):
    # a 270 px face (a 450 px head) in 1080p made 9:16: the 607 px window holds it, so no blurred fill
    out, shares = _followed(work, "big-face", (1920, 1080), 450, FinishSpec(resolution="keep", aspect="9:16"),
                            seconds=2.0, x_from=0.45, x_to=0.55)
    assert "the window follows the face" in " ".join(out.notes)
    assert min(shares) > 0.97

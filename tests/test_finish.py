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


def _followed(work, name, size, head_width, out_spec, one_pass=False, **walk):
    source, _boxes = mf.write_walking_face_video(work / f"{name}.mp4", size, head_width, **walk)
    tone = mf.write_tone(work / f"{name}.wav", seconds=walk.get("seconds", 4.0))
    if one_pass:  # followed on the template's frames, reframed as the engine's frames come
        out = render(tone, source, work / f"{name}-9x16.mp4", engine=create_engine("passthrough"), finish=out_spec)
    else:
        rendered = render(tone, source, work / f"{name}-rendered.mp4", engine=create_engine("passthrough")).path
        out = finish_video(rendered, work / f"{name}-9x16.mp4", out_spec)
    frames = frames_of(out.path)
    ow = frames[0].shape[1]
    scale = ow / (size[1] * 9 / 16)  # output pixels per source pixel of the window
    head = mf.head_patch(head_width)
    expected = mf.visible_share(head, 1.0) * scale ** 2  # the whole head's pixels, at the output's scale
    shares = [mf.visible_share(f, expected) for f in frames]
    return out, shares


@pytest.mark.parametrize("size,head_width,one_pass", [((1920, 1080), 260, False), ((1920, 1080), 160, False),
                                                       ((3840, 2160), 320, False), ((1920, 1080), 160, True)],
                         ids=["1080p-160px-face", "1080p-96px-face", "4k-192px-face", "1080p-96px-face-one-pass"])
def test_a_vertical_crop_follows_a_small_face_across_a_wide_shot(work, size, head_width, one_pass):
    # the detector's face box is about 0.6 of the head: faces of 160 and 96 px in 1080p,
    # 192 px in 4K (5 % of the width) walking from 20 % to 80 % of the frame
    out, shares = _followed(work, f"walk-{size[0]}-{head_width}-{one_pass}", size, head_width,
                            FinishSpec(resolution="keep", aspect="9:16"), one_pass,
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


# --------------------------------------------------------------------------- finished as it renders


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _speech_of(path: Path) -> np.ndarray:
    from lipsync.media.audio import iter_audio

    return np.concatenate([np.atleast_2d(b)[0] for b in iter_audio(path, rate=16000, layout="mono", fmt="fltp")])


@pytest.fixture
def encodes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every H.264 stream opened while the test runs: one per encode."""
    from lipsync.media import encoder

    opened: list[tuple[int, int]] = []
    real = encoder.VideoWriter.__init__

    def init(self, path, width, height, *args, **kwargs):
        opened.append((width, height))
        real(self, path, width, height, *args, **kwargs)

    monkeypatch.setattr(encoder.VideoWriter, "__init__", init)
    return opened


def test_a_finished_render_is_encoded_once_and_matches_the_finished_file(wide, work, encodes):
    """The engine's frames go straight into the finishing: one encode at the finished size,
    the same picture, sound and timing as finishing the rendered file afterwards."""
    template = work / "wide-template.mp4"
    spec = FinishSpec(resolution="720p", aspect="9:16")
    out = work / "one-pass" / "portrait.mp4"
    result = render(mf.SPEECH_SHORT, template, out, engine=create_engine("passthrough"), finish=spec)
    assert encodes == [(720, 1280)]  # not the render's 512x288 first, then the finished size
    assert sorted(p.name for p in out.parent.iterdir()) == ["portrait.mp4"]  # no intermediate left
    assert (result.width, result.height) == (720, 1280) and "follows the face" in " ".join(result.notes)
    two_pass = finish_video(wide, work / "two-pass-portrait.mp4", spec)
    one, two = stream_info(out), stream_info(two_pass.path)
    assert one["size"] == two["size"] and one["fps"] == two["fps"]
    assert abs(one["duration"] - two["duration"]) < 0.05 and abs(result.duration - two_pass.duration) < 0.05
    a, b = frames_of(out), frames_of(two_pass.path)
    assert len(a) == len(b) == result.frames
    # the face followed on the template's frames is framed as the one followed on the rendered
    # file (the detector's boxes differ by a few pixels between the two encodes, so the crops do)
    for i in (0, len(a) // 2, len(a) - 1):
        (x1, y1, _), (x2, y2, _) = face_centre(a[i]), face_centre(b[i])
        assert abs(x1 - 360) < 0.12 * 720 and abs(x1 - x2) < 0.04 * 720 and abs(y1 - y2) < 0.04 * 1280
    sa, sb = _speech_of(out), _speech_of(two_pass.path)
    assert abs(len(sa) - len(sb)) < 16000 * 0.05
    n = min(len(sa), len(sb))
    assert np.corrcoef(sa[:n], sb[:n])[0, 1] > 0.99  # the speech in the same place


def test_one_pass_joins_an_intro_of_another_format_retimes_watermarks_and_burns(wide, work, encodes):
    other = mf.write_face_video(work / "intro-320.mp4", seconds=1.0, size=(320, 240), audio=True)
    (work / "one-pass.srt").write_text(SRT, encoding="utf-8")
    logo = np.zeros((40, 80, 4), np.uint8)
    logo[..., 0], logo[..., 3] = 255, 255
    Image.fromarray(logo).save(work / "red.png")
    spec = FinishSpec(fps=30, intro=other, watermark=Watermark(work / "red.png", position="top-right"),
                      subtitles=work / "one-pass.srt", subtitle_mode="burn")
    result = render(mf.SPEECH_SHORT, work / "wide-template.mp4", work / "one-pass-joined.mp4",
                    engine=create_engine("passthrough"), finish=spec)
    assert encodes == [(512, 288)]
    two_pass = finish_video(wide, work / "two-pass-joined.mp4", spec)
    one, two = stream_info(result.path), stream_info(two_pass.path)
    assert one["fps"] == two["fps"] == 30.0 and one["size"] == two["size"] == (512, 288)
    assert abs(one["duration"] - (1.0 + probe_audio(mf.SPEECH_SHORT).duration)) < 0.1
    assert one["subtitles"] == two["subtitles"] and one["subtitles"][0][1][0][0] == 300 + 1000  # after the intro
    a, b = frames_of(result.path), frames_of(two_pass.path)
    assert len(a) == len(b)
    assert min(_psnr(x, y) for x, y in zip(a[::4], b[::4])) > 33
    # 30 intro frames, then "Hello there" 0.8 s into the speech, nothing between the cues at 1.3 s
    burned, between = a[30 + 24], a[30 + 39]
    assert (np.abs(burned[200:].astype(np.int16) - between[200:]).max(axis=2) > 60).sum() > 150
    sa, sb = _speech_of(result.path), _speech_of(two_pass.path)
    n = min(len(sa), len(sb))
    assert abs(len(sa) - len(sb)) < 16000 * 0.05 and np.corrcoef(sa[:n], sb[:n])[0, 1] > 0.99
    assert "watermark" in result.notes and "joined: intro + video" in result.notes


def test_soft_subtitles_and_a_same_format_intro_are_still_copied_after_the_render(wide, work, intro, encodes):
    (work / "copy.srt").write_text(SRT, encoding="utf-8")
    spec = FinishSpec(intro=intro, subtitles=work / "copy.srt")
    result = render(mf.SPEECH_SHORT, work / "wide-template.mp4", work / "copied.mp4",
                    engine=create_engine("passthrough"), finish=spec)
    assert encodes == [(512, 288)]  # the render's own encode; the intro's packets are copied
    info = stream_info(result.path)
    assert abs(info["duration"] - probe_audio(intro).duration - probe_audio(mf.SPEECH_SHORT).duration) < 0.15
    assert [c[0] for c in info["subtitles"][0][1]] == [300 + round(probe_template(intro).duration * 1000),
                                                       1400 + round(probe_template(intro).duration * 1000)]
    assert not list(work.glob(".copied.mp4*"))


def test_bad_finishing_fails_before_rendering_and_a_failed_render_leaves_nothing(work):
    (work / "broken.srt").write_text("no cues here", encoding="utf-8")
    folder = work / "failed"
    with pytest.raises(MediaError) as err:
        render(mf.SPEECH_SHORT, work / "wide-template.mp4", folder / "out.mp4", engine=create_engine("passthrough"),
               finish=FinishSpec(aspect="9:16", subtitles=work / "broken.srt"))
    assert "broken.srt" in str(err.value)
    assert list(folder.iterdir()) == []

    from lipsync.engine import EngineSession
    from lipsync.engines.passthrough import PassthroughEngine

    class BreakingSession(EngineSession):
        chunks = 0

        def process(self, chunk):
            self.chunks += 1
            if self.chunks == 2:
                raise RuntimeError("the engine broke on its second chunk")
            return chunk.frames

    class Breaking(PassthroughEngine):
        def start(self, ctx):
            return BreakingSession()

    with pytest.raises(RuntimeError, match="second chunk"):
        render(mf.SPEECH_SHORT, work / "wide-template.mp4", folder / "out.mp4", engine=Breaking(),
               finish=FinishSpec(aspect="9:16"))
    assert list(folder.iterdir()) == []  # neither the finished MP4 nor its temporary


def test_the_face_path_of_a_template_is_followed_once_and_reused(work, monkeypatch):
    from lipsync.finish import faces

    source, _ = mf.write_walking_face_video(work / "cached-walk.mp4", (640, 360), 120, seconds=3.0)  # 36 frames
    template = probe_template(source)
    cache = work / "face-cache"
    first = faces.follow_template(template, cache, frames=20)
    assert len(first.centres) == 20 and first.found >= 3

    def refuse(*_a, **_k):
        raise AssertionError("followed again instead of read from the cache")

    real = faces.follow_face
    monkeypatch.setattr(faces, "follow_face", refuse)
    again = faces.follow_template(template, cache, frames=12)  # a shorter render: the cached start
    assert np.array_equal(again.centres, first.centres)
    monkeypatch.setattr(faces, "follow_face", real)
    whole = faces.follow_template(template, cache)  # further than cached: followed again, then kept
    assert len(whole.centres) == template.frame_count == 36
    monkeypatch.setattr(faces, "follow_face", refuse)
    assert np.array_equal(faces.follow_template(template, cache).centres, whole.centres)
    taken = whole.take(np.array([0, 35, 35, 0, 100]))  # frames in render order; past the end holds the last
    assert np.array_equal(taken.centres[[0, 1, 4]], whole.centres[[0, 35, 35]], equal_nan=True)


def test_an_overlay_blended_in_yuv_matches_blending_the_colours():
    """Watermarks and captions are drawn into the frame the encoder takes (YUV): the colours
    are those of blending in RGB, and nothing outside the picture changes."""
    from lipsync.finish.picture import YuvOverlay
    from lipsync.media.color import ColorInfo

    for color in (ColorInfo.for_size(1920, 1080), ColorInfo.for_size(640, 480)):  # BT.709 and BT.601
        back = np.empty((64, 96, 3), np.uint8)
        back[:] = (90, 140, 200)
        frame = color.to_yuv420p(back)
        before = frame.to_ndarray().copy()  # the Y plane's 64 rows, then the chroma
        rgb = np.zeros((21, 31, 3), np.float32)
        rgb[:] = (255, 0, 0)
        alpha = np.full((21, 31), 0.5, np.float32)
        YuvOverlay(rgb, alpha, 11, 7, color).draw(frame)  # odd corner and sides
        out = color.to_rgb(frame).astype(np.int16)
        expect = (np.array([90, 140, 200]) + np.array([255, 0, 0])) / 2
        assert np.abs(out[10:26, 14:40] - expect).max() <= 2  # inside, away from the edge's chroma blocks
        assert np.abs(out[40:, 50:] - (90, 140, 200)).max() <= 1  # outside: the frame as it was
        after = frame.to_ndarray()
        assert np.array_equal(after[:6], before[:6]) and np.array_equal(after[28:64], before[28:64])  # untouched rows

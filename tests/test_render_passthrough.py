"""The whole pipeline with the passthrough engine: timing, output format, errors, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from lipsync.device import DeviceUnavailableError, resolve_device
from lipsync.engine import EngineSession, FrameChunk, FrameEngine, MediaLimits, RenderContext, RenderOptions
from lipsync.engines import available_engines, create_engine
from lipsync.engines.passthrough import PassthroughEngine
from lipsync.errors import (EngineUnavailableError, LipsyncError, MediaError, MediaLimitError, NoAudioStreamError,
                            NoFaceError, NoVideoStreamError)
from lipsync.render import render
from tests import media_factory as mf
from tests.test_media import encode_audio, encode_numbered_video, frame_number

ROOT = Path(__file__).resolve().parent.parent
FAST = RenderOptions(preset="ultrafast", chunk_frames=8)


def decoded_numbers(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [frame_number(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def stream_seconds(path: Path) -> tuple[float, float]:
    """(video, audio) durations as a player computes them."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        return float(v.duration * v.time_base), float(a.duration * a.time_base)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


# --------------------------------------------------------------------------- timing


def test_a_short_template_plays_pingpong_for_the_whole_audio(tmp_path):
    template = encode_numbered_video(tmp_path / "t.mp4", 20)  # 0.8 s, B-frames
    audio = mf.write_tone(tmp_path / "a.wav", seconds=3.0)
    out = tmp_path / "out" / "talk.mp4"
    result = render(audio, template, out, engine=PassthroughEngine(), options=FAST)
    assert result.path == out and result.frames == 75 and result.fps == 25.0
    expected = [*range(20), *range(18, -1, -1), *range(1, 20), *range(18, 1, -1)]  # no repeated turning frames
    assert len(expected) == 75
    assert decoded_numbers(out) == expected


def test_a_long_template_is_trimmed_to_the_audio(tmp_path):
    template = encode_numbered_video(tmp_path / "t.mp4", 30)
    audio = mf.write_tone(tmp_path / "a.wav", seconds=0.8)
    result = render(audio, template, tmp_path / "o.mp4", engine=PassthroughEngine(), options=FAST)
    assert decoded_numbers(result.path) == list(range(20))


def test_a_still_photo_is_held_for_the_whole_audio(tmp_path):
    still = mf.write_still(tmp_path / "face.png", size=(128, 128))
    audio = mf.write_tone(tmp_path / "a.wav", seconds=1.5)
    result = render(audio, still, tmp_path / "o.mp4", engine=PassthroughEngine(),
                    options=RenderOptions(still_fps=20, chunk_frames=8))
    assert (result.frames, result.fps, result.width, result.height) == (30, 20.0, 128, 128)
    with av.open(str(result.path)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert len(frames) == 30
    photo = mf.portrait((128, 128)).astype(int)
    assert all(np.abs(f - photo).mean() < 4 for f in frames)
    assert all(np.abs(f - frames[0]).mean() < 1 for f in frames)


@pytest.mark.parametrize("suffix", ["wav", "mp3", "m4a", "aac", "flac", "ogg"])
def test_output_lasts_as_long_as_the_audio_whatever_its_format(tmp_path, suffix):
    audio = encode_audio(tmp_path / f"voice.{suffix}", seconds=2.3)
    template = mf.write_plain_video(tmp_path / "t.mp4", seconds=1.0, fps=25)
    result = render(audio, template, tmp_path / "o.mp4", engine=PassthroughEngine(), options=FAST)
    video_s, audio_s = stream_seconds(result.path)
    frame = 1 / 25
    assert abs(audio_s - 2.3) < frame  # audio neither cut short nor padded
    assert 0 <= video_s - audio_s < frame + 1e-6  # the video covers the audio, by less than a frame
    assert abs(result.duration - video_s) < 1e-6
    info = mf.probe(result.path)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert mf.moov_before_mdat(result.path)


def test_speech_renders_to_a_streamable_mp4(tmp_path):
    template = mf.write_face_video(tmp_path / "face.mp4", seconds=1.0, size=(128, 128))
    result = render(mf.SPEECH_SHORT, template, tmp_path / "talk.mp4", engine=create_engine("passthrough"))
    info = mf.probe(result.path)
    assert info["frames"] == result.frames == 128  # 5.1 s at 25 fps, rounded up
    assert (info["width"], info["height"]) == (128, 128)
    assert mf.moov_before_mdat(result.path)
    assert result.engine == "passthrough" and result.notes == ()


# --------------------------------------------------------------------------- progress


class _PreparingEngine(FrameEngine):
    """Reports preparation progress (out of order, like a careless engine) and adds a note."""

    name = "preparing"
    prepare_share = 0.4

    def start(self, ctx: RenderContext) -> EngineSession:
        for f in (0.25, 0.1, 0.5, 1.0, 1.5):
            ctx.progress(f)
        session = _Session()
        session.notes.append("3 frames without a face")
        return session


class _Session(EngineSession):
    def process(self, chunk: FrameChunk) -> np.ndarray:
        return chunk.frames


def test_progress_is_monotonic_covers_preparation_then_frames_and_ends_at_one(tmp_path):
    template = mf.write_plain_video(tmp_path / "t.mp4", seconds=0.4)
    audio = mf.write_tone(tmp_path / "a.wav", seconds=2.0)
    seen: list[float] = []
    result = render(audio, template, tmp_path / "o.mp4", engine=_PreparingEngine(), options=FAST, progress=seen.append)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == 1.0 and all(0 <= f < 1.0 for f in seen[:-1])
    assert seen[:3] == pytest.approx([0.1, 0.2, 0.4])  # preparation: the first 40 %
    assert len([f for f in seen if f > 0.4]) >= 50 // 8  # then one report per chunk of frames
    assert result.notes == ("3 frames without a face",)


# --------------------------------------------------------------------------- failures


class _FailingSession(EngineSession):
    def __init__(self, fail_at: int, error: Exception):
        super().__init__()
        self.fail_at, self.error, self.closed, self.calls = fail_at, error, False, 0

    def process(self, chunk: FrameChunk) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return chunk.frames

    def close(self) -> None:
        self.closed = True


class _FailingEngine(FrameEngine):
    name = "failing"

    def __init__(self, fail_at: int, error: Exception):
        super().__init__()
        self.session = _FailingSession(fail_at, error)

    def start(self, ctx: RenderContext) -> EngineSession:
        return self.session


class _SlowToPrepare(FrameEngine):
    """Watches the decoder while it prepares; fails its preparation when asked to."""

    name = "slow-to-prepare"

    def __init__(self, fail: bool, threads_before: set):
        super().__init__()
        self.fail, self.threads_before, self.decoding_while_preparing = fail, threads_before, False

    def start(self, ctx: RenderContext) -> EngineSession:
        import threading
        import time

        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not self.decoding_while_preparing:
            # this render's decoder: not one some other test of this process left behind
            self.decoding_while_preparing = any(t.name == "lipsync-decode" for t in threading.enumerate()
                                                if t not in self.threads_before)
            time.sleep(0.01)
        if self.fail:
            raise NoFaceError("no face in any frame", path=ctx.template.path)
        return _Session()


@pytest.mark.parametrize("fail", [False, True], ids=["prepares", "fails-to-prepare"])
def test_the_template_decodes_while_the_engine_prepares(tmp_path, fail):
    """An engine's start-up (imports, face analysis) overlaps the first decode; a start-up
    that fails stops that decoding: no thread left behind, no output."""
    import threading

    template = mf.write_plain_video(tmp_path / "t.mp4", seconds=0.4)
    audio = mf.write_tone(tmp_path / "a.wav", seconds=2.0)
    before = set(threading.enumerate())
    engine = _SlowToPrepare(fail, before)
    out_dir = tmp_path / "out"
    if fail:
        with pytest.raises(NoFaceError):
            render(audio, template, out_dir / "o.mp4", engine=engine, options=FAST)
        assert list(out_dir.iterdir()) == []
    else:
        assert render(audio, template, out_dir / "o.mp4", engine=engine, options=FAST).frames == 50
    assert engine.decoding_while_preparing
    assert not [t for t in threading.enumerate() if t not in before and t.name.startswith("lipsync-")]


def test_an_engine_failing_mid_render_leaves_no_output(tmp_path):
    template = mf.write_plain_video(tmp_path / "t.mp4", seconds=0.5)
    audio = mf.write_tone(tmp_path / "a.wav", seconds=4.0)
    out_dir = tmp_path / "out"
    error = RuntimeError("CUDA error: an illegal memory access")
    engine = _FailingEngine(fail_at=5, error=error)
    with pytest.raises(RuntimeError) as info:
        render(audio, template, out_dir / "talk.mp4", engine=engine, options=FAST)
    assert info.value is error  # the original exception, not a wrapper
    assert engine.session.closed
    assert list(out_dir.iterdir()) == []  # neither the MP4 nor its temporary


def test_an_engine_returning_the_wrong_shape_is_an_error(tmp_path):
    class Shrinking(EngineSession):
        def process(self, chunk):
            return chunk.frames[:, :10]

    class Engine_(PassthroughEngine):
        def start(self, ctx):
            return Shrinking()

    template = mf.write_plain_video(tmp_path / "t.mp4", seconds=0.5)
    audio = mf.write_tone(tmp_path / "a.wav", seconds=1.0)
    with pytest.raises(LipsyncError, match="engine returned"):
        render(audio, template, tmp_path / "o.mp4", engine=Engine_(), options=FAST)
    assert list(tmp_path.glob("o.mp4")) == [] and leftovers(tmp_path) == []


def test_a_template_that_breaks_mid_file_fails_the_render_cleanly(tmp_path):
    # the sample table is intact (moov first) but the media data stops halfway: the
    # probe catches it before the engine is started
    data = encode_numbered_video(tmp_path / "full.mp4", 50, faststart=True).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    audio = mf.write_tone(tmp_path / "a.wav", seconds=1.0)
    engine = _FailingEngine(fail_at=0, error=RuntimeError("unused"))
    with pytest.raises(MediaError, match="truncated"):
        render(audio, tmp_path / "cut.mp4", tmp_path / "o.mp4", engine=engine, options=FAST)
    assert not (tmp_path / "o.mp4").exists() and leftovers(tmp_path) == []


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    return mf.write_tone(tmp_path / "a.wav", seconds=1.0), mf.write_plain_video(tmp_path / "t.mp4", seconds=0.5)


@pytest.mark.parametrize("case, error", [
    ("zero-byte audio", MediaError),
    ("text named .wav", MediaError),
    ("truncated template", MediaError),
    ("video without sound as audio", NoAudioStreamError),
    ("audio file as template", NoVideoStreamError),
    ("audio over the limit", MediaLimitError),
    ("template over the pixel limit", MediaLimitError),
])
def test_bad_inputs_fail_before_rendering_with_the_file_named(tmp_path, case, error):
    audio, template = _inputs(tmp_path)
    options = FAST
    if case == "zero-byte audio":
        audio = tmp_path / "empty.wav"
        audio.write_bytes(b"")
    elif case == "text named .wav":
        audio = tmp_path / "readme.wav"
        audio.write_text("not audio\n" * 50)
    elif case == "truncated template":
        data = template.read_bytes()
        template = tmp_path / "cut.mp4"
        template.write_bytes(data[: len(data) // 2])
    elif case == "video without sound as audio":
        audio = template
    elif case == "audio file as template":
        template = audio
    elif case == "audio over the limit":
        options = RenderOptions(limits=MediaLimits(max_audio_seconds=0.5))
    elif case == "template over the pixel limit":
        options = RenderOptions(limits=MediaLimits(max_pixels=1000))
    culprit = template if "template" in case else audio
    out = tmp_path / "out" / "talk.mp4"
    with pytest.raises(error) as info:
        render(audio, template, out, engine=PassthroughEngine(), options=options)
    assert info.value.path == str(culprit) and str(culprit) in str(info.value)
    assert not out.exists()


# --------------------------------------------------------------------------- memory


def test_memory_stays_flat_however_long_the_output(tmp_path):
    # 60 s of 256x256 output from a 1 s template: kept frames would add ~250 MB
    script = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from lipsync.engine import RenderOptions
        from lipsync.engines.passthrough import PassthroughEngine
        from lipsync.render import render
        from tests import media_factory as mf
        d = Path({str(tmp_path)!r})
        template = mf.write_face_video(d / "t.mp4", seconds=1.0, size=(256, 256))
        options = RenderOptions(preset="ultrafast")
        rss = []
        for seconds in (10, 60):
            audio = mf.write_tone(d / f"a{{seconds}}.wav", seconds=seconds)
            render(audio, template, d / "o.mp4", engine=PassthroughEngine(), options=options)
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(rss))
    """)
    env = {"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"}  # fewer allocator arenas: less noise
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    after_10s, after_60s = json.loads(done.stdout.strip().splitlines()[-1])
    assert after_60s - after_10s < 80, (after_10s, after_60s)


# --------------------------------------------------------------------------- engines and devices


def test_engine_registry_names_and_options():
    engine = create_engine("passthrough", device="cpu", checkpoint="/nowhere.pth", batch_size=8)
    assert isinstance(engine, PassthroughEngine) and engine.load_notes == []
    with pytest.raises(EngineUnavailableError, match="known engines: auto, warp, latentsync, musetalk, wav2lip, passthrough, heygem"):
        create_engine("lipgan")
    report = available_engines()
    assert report["passthrough"] == "available"
    assert report["wav2lip"].startswith("unavailable")  # no checkpoint configured
    assert set(report) == {"auto", "passthrough", "warp", "latentsync", "musetalk", "wav2lip", "heygem"}
    assert report["musetalk"] == "unavailable: no models folder configured (render.musetalk.models)"
    assert report["auto"] == "available: warp (latentsync, musetalk, wav2lip unavailable)"
    assert report["heygem"].startswith("unavailable: no servers configured")


def test_auto_falls_back_to_warp_and_says_why(tmp_path):
    engine = create_engine("auto", checkpoint=tmp_path / "missing.pth", device="cpu")
    assert engine.name == "warp"
    assert len(engine.load_notes) == 3  # latentsync, musetalk (no models folder), then wav2lip
    assert any(n.startswith("wav2lip unavailable (") and n.endswith("; using warp") for n in engine.load_notes)


def test_devices_resolve_or_fail_clearly():
    assert resolve_device("cpu") == "cpu"
    import torch

    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda:0" and resolve_device("cuda") == "cuda:0"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available") as info:
            resolve_device("cuda")
        assert isinstance(info.value, LipsyncError) and info.value.permanent
    with pytest.raises(LipsyncError, match="unknown device"):
        resolve_device("gpu0")


def test_chunks_of_a_large_template_hold_fewer_frames(tmp_path, monkeypatch):
    """The frames in flight are bounded in pixels, not only in frames: a 1080p template's
    chunks hold fewer frames than a 720p one's (here scaled down: a 64x48 template and a
    budget of 10 of its frames), still in whole windows of the engine."""
    from lipsync import render as render_module

    class Counting(EngineSession):
        def __init__(self, sizes):
            super().__init__()
            self.sizes = sizes

        def process(self, chunk):
            self.sizes.append(len(chunk.out_indices))
            return chunk.frames

    class Windowed(FrameEngine):
        name = "windowed"
        frames_per_call = 4

        def __init__(self):
            super().__init__()
            self.sizes: list[int] = []

        def start(self, ctx):
            return Counting(self.sizes)

    monkeypatch.setattr(render_module, "CHUNK_PIXELS", 10 * 64 * 48)
    template = mf.write_plain_video(tmp_path / "t.mp4", seconds=1.0)  # 64x48
    audio = mf.write_tone(tmp_path / "a.wav", seconds=2.0)
    engine = Windowed()
    result = render(audio, template, tmp_path / "o.mp4", engine=engine,
                    options=RenderOptions(preset="ultrafast", chunk_frames=32))
    assert engine.sizes[:-1] == [12] * (len(engine.sizes) - 1)  # 10 frames' pixels, rounded up to 3 windows of 4
    assert sum(engine.sizes) == result.frames == 50

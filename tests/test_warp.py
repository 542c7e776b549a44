"""The default warp engine on real faces: lips follow speech, silence stays shut, nothing
outside the mouth and jaw changes, faceless frames pass through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.avsync import audio_envelope, av_sync, mouth_jaw_mask, mouth_openings, video_frames
from lipsync.engine import FrameChunk, RenderContext, RenderOptions
from lipsync.engines import create_engine
from lipsync.engines.warp import WarpEngine
from lipsync.errors import NoFaceError
from lipsync.media.audio import probe_audio
from lipsync.media.template import TemplateReader, probe_template
from lipsync.render import render
from lipsync.timeline import output_frame_count, template_index, template_indices
from tests import media_factory as mf


@pytest.fixture(scope="module")
def engine() -> WarpEngine:
    return create_engine("warp", device="cpu")


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> Path:
    return mf.write_still(tmp_path_factory.mktemp("warp") / "portrait.png", size=(256, 256))


def context(audio: Path, template: Path, options: RenderOptions, progress=lambda f: None) -> RenderContext:
    info = probe_template(template, options)
    frames = output_frame_count(probe_audio(audio).duration, info.fps)
    return RenderContext(audio_path=audio, template=info, fps=info.fps, frame_count=frames, options=options,
                         device="cpu", template_index=lambda i: template_index(i, info.frame_count), progress=progress)


def run_engine(engine: WarpEngine, audio: Path, template: Path, options: RenderOptions = RenderOptions(),
               chunk: int = 16):
    """(template frames, engine output frames, template indices, session): no encoding involved."""
    ctx = context(audio, template, options)
    session = engine.start(ctx)
    inputs, outputs, indices = [], [], []
    with TemplateReader(ctx.template) as reader:
        for start in range(0, ctx.frame_count, chunk):
            out_idx = np.arange(start, min(ctx.frame_count, start + chunk), dtype=np.int64)
            t_idx = template_indices(out_idx, ctx.template.frame_count)
            frames = np.stack(list(reader.frames(t_idx)))
            inputs.append(frames.copy())
            outputs.append(session.process(FrameChunk(frames, out_idx, t_idx)).copy())
            indices.append(t_idx)
    session.close()
    return np.concatenate(inputs), np.concatenate(outputs), np.concatenate(indices), session


def mouth_box(session) -> tuple[slice, slice]:
    x0, y0, x1, y1 = session.geometry.box[0]
    return slice(y0, y1), slice(x0, x1)


def test_speech_moves_the_lips_in_time_with_the_audio(engine, portrait, tmp_path):
    out = render(mf.SPEECH, portrait, tmp_path / "talk.mp4", engine=engine, options=RenderOptions(device="cpu"))
    assert out.engine == "warp" and out.notes == ()
    openings = mouth_openings(video_frames(out.path))
    assert np.isfinite(openings).all()  # the face stays a face, every frame
    assert openings.max() - openings.min() > 0.25  # lips part and close visibly
    sync = av_sync(openings, audio_envelope(mf.SPEECH, out.fps, out.frames))
    assert sync["correlation"] > 0.7 and abs(sync["lag_frames"]) <= 1, sync


def test_silence_gives_a_closed_still_mouth(engine, portrait, tmp_path):
    inputs, quiet, _, session = run_engine(engine, mf.SILENCE, portrait)
    rows, cols = mouth_box(session)
    region = quiet[:, rows, cols].astype(np.int16)
    assert np.abs(region - region[0]).max() == 0  # not a pixel moves
    # the template's parted smile is closed: the lips meet
    assert mouth_openings(quiet[:1])[0] < 0.5 * mouth_openings(inputs[:1])[0]

    _, talking, _, _ = run_engine(engine, mf.SPEECH_SHORT, portrait)
    moving = talking[:, rows, cols].astype(np.int16)
    assert np.abs(np.diff(moving, axis=0)).mean() > 2.0  # while speech moves it frame to frame


def test_frames_without_a_face_pass_through_untouched(engine, tmp_path):
    clip = mf.write_face_video(tmp_path / "covered.mp4", seconds=2.0, size=(256, 256), cover=range(10, 16))
    inputs, outputs, t_idx, session = run_engine(engine, mf.SPEECH_SHORT, clip)
    covered = np.isin(t_idx, np.arange(10, 16))
    assert covered.sum() >= 12  # the ping-pong shows the covered stretch more than once
    np.testing.assert_array_equal(outputs[covered], inputs[covered])
    assert not np.array_equal(outputs[~covered], inputs[~covered])
    assert session.notes == ["no face in 6 of 50 template frames; passed through"]


def test_only_the_mouth_and_jaw_change(engine, tmp_path):
    clip = mf.write_face_video(tmp_path / "moving.mp4", seconds=2.0, size=(256, 256), pan=0.03, zoom=0.06, rot_deg=4)
    inputs, outputs, t_idx, session = run_engine(engine, mf.SPEECH_SHORT, clip)
    changed_frames = 0
    for frame_in, frame_out, t in zip(inputs, outputs, t_idx):
        changed = (frame_in != frame_out).any(axis=2)
        allowed = mouth_jaw_mask(session.analysis.landmarks[t], 256, 256, margin=2)
        assert not (changed & ~allowed).any()
        changed_frames += bool(changed.any())
    assert changed_frames > 0.9 * len(inputs)


def test_a_template_without_any_face_fails_the_render(engine, tmp_path):
    clip = mf.write_plain_video(tmp_path / "empty-room.mp4", seconds=1.0, size=(160, 120))
    with pytest.raises(NoFaceError) as err:
        render(mf.SPEECH_SHORT, clip, tmp_path / "out.mp4", engine=engine, options=RenderOptions(device="cpu"))
    assert "empty-room.mp4" in str(err.value) and "no usable face" in str(err.value)
    assert not (tmp_path / "out.mp4").exists()


def test_the_next_job_with_the_same_template_skips_analysis(engine, portrait, tmp_path):
    options = RenderOptions(device="cpu", cache_dir=tmp_path / "faces")
    reported: list[float] = []
    first = engine.start(context(mf.SPEECH_SHORT, portrait, options, reported.append))
    second = engine.start(context(mf.SPEECH, portrait, options))
    assert not first.analysis.from_cache and second.analysis.from_cache
    assert reported == sorted(reported) and reported[-1] == 1.0  # preparation progress, in order


def test_warp_is_the_default_engine():
    from daemon.config import RenderConfig

    assert RenderConfig().engine == "warp"
    engine = create_engine("warp")
    assert isinstance(engine, WarpEngine) and engine.name == "warp" and engine.load_notes == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_renders_what_the_cpu_renders(engine, portrait):
    ctx = context(mf.SPEECH_SHORT, portrait, RenderOptions())
    frames = np.stack([np.asarray(next(TemplateReader(ctx.template).frames([0])))] * 8)
    out_idx = np.arange(40, 48, dtype=np.int64)
    chunk = lambda: FrameChunk(frames.copy(), out_idx, np.zeros(8, np.int64))  # noqa: E731
    on_cpu = engine.start(ctx).process(chunk())
    ctx.device = "cuda:0"
    on_gpu = engine.start(ctx).process(chunk())
    assert not np.array_equal(on_cpu, frames)
    assert np.abs(on_cpu.astype(np.int16) - on_gpu).max() <= 2

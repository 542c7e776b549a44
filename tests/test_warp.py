"""The default warp engine on real faces: lips follow speech (judged by an independent
landmark detector, MediaPipe, on the encoded output), vowels take their shapes, silence
shows the template's own mouth, nothing outside the face contour bends, the template's own
open mouths fill the opening, faceless frames pass through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.avsync import audio_envelope, av_sync, mouth_jaw_mask, referee_mouths
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
    try:
        return _process_all(session, ctx, chunk)
    finally:
        session.close()


def mouth_box(session) -> tuple[slice, slice]:
    x0, y0, x1, y1 = session.geometry.box[0]
    return slice(y0, y1), slice(x0, x1)


def test_speech_moves_the_lips_in_time_with_the_audio(engine, portrait, tmp_path):
    out = render(mf.SPEECH, portrait, tmp_path / "talk.mp4", engine=engine, options=RenderOptions(device="cpu"))
    assert out.engine == "warp" and out.notes == ()
    mouths, = referee_mouths(out.path)
    assert mouths.face_frames == out.frames  # the face stays a face, every frame
    assert np.nanmax(mouths.gap) - np.nanmin(mouths.gap) > 0.12  # lips part and close visibly
    sync = av_sync(mouths.gap, audio_envelope(mf.SPEECH, out.fps, out.frames))
    # 0.75 is a floor, not a goal: loudness-to-opening correlation rewards a puppet that
    # opens with every decibel, and /i/ /u/ open less than /a/ on purpose (bench/warp_voices.py)
    assert sync["correlation"] >= 0.75 and abs(sync["lag_frames"]) <= 1, sync


PAINTED = Path(__file__).parent / "data" / "portraits" / "painted.jpg"


def test_a_mouth_narrow_for_its_face_opens_as_far_as_its_jaw_drops(engine, tmp_path):
    """The painted portrait's mouth is 0.34 of its face's width (the astronaut's smile 0.49):
    the lips part by a share of the face, not of the lips, so they read as open and follow
    the speech. Scaled by its own narrow mouth, the opening read 0.13 eye distances at the
    95th percentile and r was 0.73."""
    out = render(mf.SPEECH, PAINTED, tmp_path / "painted.mp4", engine=engine, options=RenderOptions(device="cpu"))
    mouths, = referee_mouths(out.path)
    assert mouths.face_frames == out.frames
    opening = mouths.gap * mouths.width  # the inner-lip gap in eye-corner distances
    assert np.nanpercentile(opening, 95) > 0.17, np.nanpercentile(opening, [5, 50, 95])
    sync = av_sync(mouths.gap, audio_envelope(mf.SPEECH, out.fps, out.frames))
    assert sync["correlation"] >= 0.75 and abs(sync["lag_frames"]) <= 1, sync


def test_the_opening_scales_with_the_face_never_with_less_than_twice_the_mouth():
    from lipsync.engines.warp_geometry import mouth_geometry

    landmarks = np.zeros((2, 68, 2))
    landmarks[:, 48], landmarks[:, 54] = (40.0, 60.0), (60.0, 60.0)  # a mouth 20 px wide
    landmarks[0, 0], landmarks[0, 16] = (0.0, 40.0), (100.0, 40.0)  # a face 100 px wide
    landmarks[1, 0], landmarks[1, 16] = (45.0, 40.0), (55.0, 40.0)  # a contour squeezed to 10 px
    g = mouth_geometry(landmarks, np.ones(2, bool), 200, 200)
    assert g.face_width.tolist() == [100.0, 40.0]


def test_vowels_take_their_shapes(engine, tmp_path):
    """/a/ /i/ /u/ by formant synthesis: on the encoded video, as MediaPipe measures it, /u/
    is the narrowest mouth and /i/ the widest, /a/ the most open."""
    still = mf.write_still(tmp_path / "face.png", size=(480, 480))
    vowels = mf.write_vowels(tmp_path / "vowels.wav", "aiuaiu", seconds=0.6, gap=0.12)
    out = render(vowels, still, tmp_path / "vowels.mp4", engine=engine, options=RenderOptions(device="cpu"))
    mouths, = referee_mouths(out.path)
    width, gap = {}, {}
    for k, v in enumerate("aiuaiu"):
        middle = slice(int((0.12 + 0.72 * k + 0.2) * 25), int((0.12 + 0.72 * k + 0.5) * 25))
        width.setdefault(v, []).append(np.nanmean(mouths.width[middle]))
        # the opening against the face's size (the referee's gap is relative to the mouth's
        # width, which the vowels change)
        gap.setdefault(v, []).append(np.nanmean(mouths.gap[middle] * mouths.width[middle]))
    w = {v: float(np.mean(x)) for v, x in width.items()}
    g = {v: float(np.mean(x)) for v, x in gap.items()}
    at_rest = float(np.nanmean(mouths.width[:2]))  # the template's own mouth, before the first vowel
    assert w["u"] < 0.95 * w["a"] and w["a"] < w["i"], (w, g)
    assert w["u"] < 0.93 * at_rest < w["i"], (w, at_rest)
    assert g["a"] > 1.25 * g["i"] and g["a"] > 1.25 * g["u"], (w, g)


def test_straight_lines_beside_and_under_the_face_stay_identical(engine, tmp_path):
    """A collar line under the chin and edges beside the cheeks: not one of their pixels
    changes in any frame, however wide the mouth opens."""
    from lipsync.face.analysis import analyze_frames

    size = 480
    face = mf.portrait((size, size)).copy()
    points = analyze_frames([face], fps=25).landmarks[0]
    mouth_w = float(np.linalg.norm(points[54] - points[48]))
    chin_y = int(points[8, 1] + 0.12 * mouth_w)
    left_x = int(points[2:15, 0].min() - 0.08 * mouth_w)
    right_x = int(points[2:15, 0].max() + 0.08 * mouth_w)
    lines = np.zeros((size, size), bool)
    lines[chin_y:chin_y + 3, left_x:right_x] = True  # a collar just under the chin
    lines[int(points[3, 1]):chin_y, left_x - 2:left_x + 1] = True  # edges beside the cheeks
    lines[int(points[13, 1]):chin_y, right_x - 1:right_x + 2] = True
    face[lines] = (0, 0, 0)
    face[np.roll(lines, 3, axis=0) & ~lines] = (255, 255, 255)  # high contrast: white beside black
    template = mf.write_frames_video(tmp_path / "collar.mp4", [face] * 25)

    loud = mf.write_vowels(tmp_path / "aa.wav", "aaa", seconds=0.5, gap=0.1)
    inputs, outputs, _, session = run_engine(engine, loud, template)
    assert session.track.openness.max() > 0.9  # the jaw drops as far as it ever does
    watched = lines | np.roll(lines, 3, axis=0)
    moved = np.abs(outputs.astype(np.int16) - inputs)[:, watched].max()
    assert moved <= 1, moved
    assert (outputs != inputs).any(axis=3).sum(axis=(1, 2)).max() > 500  # while the mouth did move


def test_silence_shows_the_templates_own_mouth(engine, portrait, tmp_path):
    inputs, quiet, _, session = run_engine(engine, mf.SILENCE, portrait)
    np.testing.assert_array_equal(quiet, inputs)  # the template's parted smile, untouched

    _, talking, _, _ = run_engine(engine, mf.SPEECH_SHORT, portrait)
    rows, cols = mouth_box(session)
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


def test_a_frame_comes_out_the_same_whatever_frames_share_its_chunk(engine, tmp_path):
    """The face pans, zooms and turns, so its box differs from frame to frame, and chunks of
    16, 5 and 1 frames put different frames side by side: every frame comes out identical
    (each crop's coarse grid lies on the same pixels of its own frame, and the work around
    the mouth is decided per frame)."""
    clip = mf.write_face_video(tmp_path / "moving.mp4", seconds=2.0, size=(256, 256), pan=0.03, zoom=0.06, rot_deg=4)
    ctx = context(mf.SPEECH_SHORT, clip, RenderOptions())
    session = engine.start(ctx)
    inputs, in_sixteens, _, _ = _process_all(session, ctx, chunk=16)
    boxes = session.geometry.box[: session.analysis.frame_count]
    assert len(np.unique(boxes[:, 2] - boxes[:, 0])) > 3  # the crops differ in size
    for chunk in (5, 1):
        _, outputs, _, _ = _process_all(session, ctx, chunk=chunk)
        np.testing.assert_array_equal(outputs, in_sixteens)
    assert (in_sixteens != inputs).any(axis=3).sum(axis=(1, 2)).mean() > 200  # and the lips did move


def test_crops_start_on_the_coarse_grid_of_their_own_box_even_at_the_frames_edge():
    from lipsync.engines.warp_field import COARSE_STEP
    from lipsync.engines.warp_session import _crop_starts

    boxes = np.array([0, 10, 95, 100 - 20])
    starts = _crop_starts(boxes, 20, 100)
    assert (starts >= 0).all() and (starts + 20 <= 100).all()  # every crop inside the frame
    assert ((boxes - starts) % COARSE_STEP == 0).all() and (starts <= boxes).all()  # on the box's own grid
    assert list(starts[:2]) == [0, 10]  # where the crop fits, at its box
    assert list(_crop_starts(np.array([5]), 20, 22)) == [2]  # no room for whole steps: flush with the end


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


def test_the_templates_own_open_mouths_fill_the_opening(engine, tmp_path):
    """A video template whose person opens the mouth in some frames (its inside painted teal,
    so it can be told from the drawn interior): openings elsewhere show those pixels."""
    from lipsync.engines.warp_samples import InteriorColours, MouthSamples

    still = mf.write_face_video(tmp_path / "still.mp4", seconds=1.6, size=(320, 320), pan=0.0, zoom=0.0, rot_deg=0.0)
    # silence, then 0.5 s of /a/ (template frames ~12-25 open wide), then silence
    opening = mf.write_vowels(tmp_path / "a.wav", "a", seconds=0.5, gap=0.5)
    ctx = context(opening, still, RenderOptions())
    maker = engine.start(ctx)
    teal = (0.0, 80.0, 75.0)  # dark, as the inside of a mouth is
    maker._colours = InteriorColours(teal, teal, teal, teal)
    with TemplateReader(ctx.template) as reader:
        frames = [maker.process(FrameChunk(f[None].copy(), np.array([i]), np.array([i])))[0]
                  for i, f in zip(range(ctx.frame_count), reader.frames(range(ctx.frame_count)))]
    template = mf.write_frames_video(tmp_path / "opens.mp4", frames[:40])

    def teal_pixels(samples_off: bool) -> np.ndarray:
        tctx = context(mf.SPEECH_SHORT, template, RenderOptions())
        session = engine.start(tctx)
        if samples_off:
            session.samples = MouthSamples.none()
        inputs, outputs, t_idx, _ = _process_all(session, tctx)
        closed = t_idx < 10  # the template's own mouth is shut in these frames
        loud = session.track.openness[:len(outputs)] > 0.6
        picked = outputs[closed & loud].astype(np.int16)
        is_teal = (picked[..., 1] - picked[..., 0] > 35) & (picked[..., 2] - picked[..., 0] > 30)
        return is_teal.sum(axis=(1, 2)), session

    with_samples, session = teal_pixels(False)
    assert len(session.samples) >= 1 and with_samples.size >= 3
    assert np.median(with_samples) > 40, with_samples  # the template's own inside shows
    without, _ = teal_pixels(True)
    assert without.max() == 0  # and the drawn interior is not teal


def _process_all(session, ctx, chunk: int = 16):
    inputs, outputs, indices = [], [], []
    with TemplateReader(ctx.template) as reader:
        for start in range(0, ctx.frame_count, chunk):
            out_idx = np.arange(start, min(ctx.frame_count, start + chunk), dtype=np.int64)
            t_idx = template_indices(out_idx, ctx.template.frame_count)
            frames = np.stack(list(reader.frames(t_idx)))
            inputs.append(frames.copy())
            outputs.append(session.process(FrameChunk(frames, out_idx, t_idx)).copy())
            indices.append(t_idx)
    return np.concatenate(inputs), np.concatenate(outputs), np.concatenate(indices), session


def test_a_rounded_mouth_leaves_nothing_of_its_own_opening_beside_the_corners(engine, tmp_path):
    """The astronaut smiles with her lips apart: the dark of her own opening reaches into
    both corners. For /u/ the corners come in; that dark must come in with them, not stay
    behind as a dot on the cheek (a pixel beside the right corner once sampled where the
    corner had been, while its neighbours moved with it)."""
    from PIL import Image

    from lipsync.mouth import MouthTrack

    still = tmp_path / "astronaut.png"
    Image.fromarray(mf.astronaut()).save(still)
    ctx = context(mf.SPEECH_SHORT, still, RenderOptions())
    session = engine.start(ctx)
    n = len(session.track)
    with TemplateReader(ctx.template) as reader:
        frame = next(iter(reader.frames([0])))
    lips = session.analysis.landmarks[0][48:68]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    pad = 0.5 * (x1 - x0)
    box = (slice(int(y0 - pad), int(y1 + pad)), slice(int(x0 - pad), int(x1 + pad)))
    assert _lone_dark_pixels(frame[box]) == [], "the template has none of its own"
    for openness in (0.1, 0.3, 0.5):
        session.track = MouthTrack(np.full(n, openness, np.float32), np.full(n, -1.0, np.float32),
                                   np.ones(n, np.float32), np.ones(n, np.float32), ctx.fps)
        out = session.process(FrameChunk(frame[None].copy(), np.array([0]), np.array([0])))[0]
        assert not np.array_equal(out[box], frame[box])  # the mouth did move
        assert _lone_dark_pixels(out[box]) == [], openness


def _lone_dark_pixels(rgb: np.ndarray, by: float = 40.0) -> list[tuple[int, int]]:
    """(x, y) of the pixels darker than all eight of their neighbours by more than ``by`` levels."""
    lum = rgb.astype(np.float64).mean(axis=2)
    h, w = lum.shape
    centre = lum[1:-1, 1:-1]
    darkest_neighbour = np.min([lum[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx]
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx], axis=0)
    ys, xs = np.nonzero(darkest_neighbour - centre > by)
    return [(int(x) + 1, int(y) + 1) for y, x in zip(ys, xs)]


def test_the_speed_bench_pairs_each_warp_run_with_the_passthrough_run_after_it():
    from bench.warp_speed import paired_ratios

    # a shared machine's load swings from run to run; each warp run costs 5 % (warm) or
    # 15 % (cold) over the passthrough run made right after it, under the same load
    load = np.random.default_rng(7).uniform(10.0, 20.0, 10)
    runs = {"passthrough": [(float(t), 0.0) for t in load],
            "warm": [(1.05 * float(load[2 * i]), 0.0) for i in range(5)],
            "cold": [(1.15 * float(load[2 * i + 1]), 0.0) for i in range(5)]}
    assert paired_ratios(runs) == pytest.approx({"warm": 1.05, "cold": 1.15})
    # the ratio of the kinds' medians carries the swings
    medians = {k: float(np.median([t for t, _ in v])) for k, v in runs.items()}
    assert abs(medians["warm"] / medians["passthrough"] - 1.05) > 0.02

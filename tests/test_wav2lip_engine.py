"""The wav2lip engine on real media: framing, paste-back, faceless frames, errors, fallback.

The generator runs with the deterministic weights of the compatibility spec: its output is
not a mouth, but it is a real forward pass that differs from the input everywhere, so any
pixel the engine lets through outside the mouth-and-jaw mask would show.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.draw import polygon as fill_polygon

from lipsync.engine import FrameChunk, RenderContext, RenderOptions
from lipsync.engines.wav2lip import Wav2LipEngine
from lipsync.engines.wav2lip.crop import CROP, FramingSettings, framing_boxes, mouth_jaw_polygon, paste_weights
from lipsync.errors import CheckpointError
from lipsync.media.template import TemplateReader, probe_template
from tests import media_factory, wav2lip_fill

ROOT = Path(__file__).resolve().parent.parent
FACELESS = range(4, 6)  # frames of the clip with the face covered


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wav2lip")


@pytest.fixture(scope="module")
def checkpoint(workdir) -> Path:
    path = workdir / "wav2lip_gan.pth"
    torch.save({"state_dict": wav2lip_fill.deterministic_state_dict(), "global_step": 0}, path)
    return path


@pytest.fixture(scope="module")
def engine(checkpoint) -> Wav2LipEngine:
    return Wav2LipEngine(checkpoint, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def clip(workdir) -> Path:
    # 12 frames of the astronaut moving slightly, two of them without a visible face
    return media_factory.write_face_video(workdir / "face.mp4", seconds=0.48, size=(192, 192), cover=FACELESS)


def _context(template: Path, audio: Path, frames: int | None = None) -> RenderContext:
    info = probe_template(template)
    count = frames or info.frame_count
    return RenderContext(audio_path=audio, template=info, fps=info.fps, frame_count=count, options=RenderOptions(),
                         device="cpu", template_index=lambda i: min(i, info.frame_count - 1))


def _template_frames(ctx: RenderContext) -> np.ndarray:
    with TemplateReader(ctx.template) as reader:
        return np.stack([np.array(f) for f in reader.iter_forward()])


def _mouth_region(landmarks: np.ndarray, box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels the engine may change: the mouth-and-jaw outline, widened by the resampling
    of the 96×96 mask to the box (one crop pixel) and a pixel of rounding."""
    outline = mouth_jaw_polygon(landmarks)
    rr, cc = fill_polygon(outline[:, 1], outline[:, 0], shape)
    region = np.zeros(shape, bool)
    region[rr, cc] = True
    margin = math.ceil(2 * max(box[2] - box[0], box[3] - box[1]) / CROP) + 1
    return ndimage.binary_dilation(region, iterations=margin)


@pytest.fixture(scope="module")
def rendered(engine, clip):
    ctx = _context(clip, media_factory.SPEECH_SHORT)
    session = engine.start(ctx)
    before = _template_frames(ctx)
    n = len(before)
    after = session.process(FrameChunk(before.copy(), np.arange(n), np.arange(n)))
    return session, before, after


# --------------------------------------------------------------------------- framing and mask


@pytest.fixture(scope="module")
def portrait_landmarks() -> np.ndarray:
    from lipsync.face.analysis import analyze_frames

    analysis = analyze_frames([media_factory.portrait((256, 256))], fps=25.0)
    assert analysis.has_face[0]
    return analysis.landmarks


def test_framing_box_reaches_from_the_brows_to_below_the_chin(portrait_landmarks):
    box = framing_boxes(portrait_landmarks, np.array([True]), (256, 256))[0]
    points = portrait_landmarks[0]
    brow_top, chin = points[17:27, 1].min(), points[8, 1]
    assert box[1] < brow_top  # a little forehead, as the detector boxes had
    assert box[3] > chin + 0.05 * (chin - brow_top)  # padded downward: the whole chin is inside
    assert box[0] <= points[0:17, 0].min() and box[2] >= points[0:17, 0].max()
    # the mouth sits in the lower half of the crop, where the generator draws
    mouth_y = (points[48:68, 1].mean() - box[1]) / (box[3] - box[1])
    assert 0.55 < mouth_y < 0.9


def test_boxes_are_smoothed_within_a_shot_and_not_across_a_gap(portrait_landmarks):
    rng = np.random.default_rng(7)
    n = 40
    landmarks = np.repeat(portrait_landmarks, n, axis=0) + rng.normal(0, 1.5, (n, 1, 2)).astype(np.float32)
    has_face = np.ones(n, bool)
    has_face[20] = False
    landmarks[20] = np.nan
    landmarks[21:] += np.float32(30)  # a cut: the face jumps after the gap
    raw = framing_boxes(landmarks, has_face, (512, 512), FramingSettings(smooth_frames=1))
    smooth = framing_boxes(landmarks, has_face, (512, 512))
    assert (smooth[20] == -1).all()
    jitter = lambda b: np.abs(np.diff(b[2:18, :2], axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.6 * jitter(raw)
    # frames next to the cut are not pulled towards the other shot
    assert abs(smooth[21, 0] - raw[21, 0]) < 5 and abs(smooth[19, 0] - raw[19, 0]) < 5


def test_boxes_stay_inside_the_frame_and_tiny_faces_are_skipped(portrait_landmarks):
    moved = portrait_landmarks - np.float32(120)  # face partly outside the top-left corner
    box = framing_boxes(moved, np.array([True]), (256, 256))[0]
    assert box[0] == 0 and box[1] == 0 and box[2] <= 256 and box[3] <= 256
    tiny = portrait_landmarks * np.float32(0.1)
    assert (framing_boxes(tiny, np.array([True]), (256, 256))[0] == -1).all()


def test_paste_mask_covers_mouth_and_jaw_only_and_fades(portrait_landmarks):
    points = portrait_landmarks[0]
    box = framing_boxes(portrait_landmarks, np.array([True]), (256, 256))[0]
    weights = paste_weights(points, box)
    assert weights.shape == (CROP, CROP) and weights.min() >= 0 and weights.max() == pytest.approx(1.0)
    to_crop = lambda p: ((p[..., 0] - box[0]) * CROP / (box[2] - box[0]),  # noqa: E731
                         (p[..., 1] - box[1]) * CROP / (box[3] - box[1]))
    # the mouth is fully replaced; eyes, nose bridge and the crop's upper half are not touched
    mx, my = to_crop(points[48:68].mean(axis=0))
    assert weights[int(my), int(mx)] == 1.0
    for eye in (points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[28]):
        ex, ey = to_crop(eye)
        assert weights[int(ey), int(ex)] == 0.0
    assert weights[: CROP // 3].max() == 0.0
    # no hard edge: neighbouring pixels differ by far less than the reference's 0 → 1 step
    steps = max(np.abs(np.diff(weights, axis=0)).max(), np.abs(np.diff(weights, axis=1)).max())
    assert steps < 0.35


# --------------------------------------------------------------------------- the engine on a clip


def test_only_mouth_and_jaw_change_and_faceless_frames_pass_through(rendered):
    session, before, after = rendered
    assert after.shape == before.shape and after.dtype == np.uint8
    changed = np.any(after != before, axis=-1)
    for i in range(len(before)):
        box = session.boxes[i]
        if i in FACELESS:
            assert box[0] == -1, "the covered face was detected"
            assert not changed[i].any(), f"frame {i} without a face was modified"
            continue
        allowed = _mouth_region(session.analysis.landmarks[i], box, before.shape[1:3])
        assert not (changed[i] & ~allowed).any(), f"frame {i}: pixels outside the mouth and jaw changed"
        # the mouth itself was redrawn
        mouth = session.analysis.landmarks[i][48:68].mean(axis=0).round().astype(int)
        assert changed[i][mouth[1] - 2: mouth[1] + 3, mouth[0] - 2: mouth[0] + 3].all()
    assert any("2 of 12 template frames have no usable face" in n for n in session.notes)


class _ReturnsReferenceFace(torch.nn.Module):
    """A stand-in generator that draws back the unmasked reference crop it was given."""

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return face[:, 3:]


def test_crop_and_paste_are_aligned(checkpoint, clip):
    # if cropping, colour order and pasting line up, redrawing the face from itself changes
    # nothing but resampling blur; a swapped channel order, a flip or a shifted box would show
    engine = Wav2LipEngine(checkpoint, batch_size=4, device="cpu")
    engine.model = _ReturnsReferenceFace()
    session = engine.start(_context(clip, media_factory.SPEECH_SHORT))
    before = _template_frames(session.ctx)[:4]
    after = session.process(FrameChunk(before.copy(), np.arange(4), np.arange(4)))
    for i in range(4):
        region = _mouth_region(session.analysis.landmarks[i], session.boxes[i], before.shape[1:3])
        error = np.abs(after[i].astype(int) - before[i])[region].mean()
        assert error < 2.0, f"frame {i}: the redrawn face is misplaced (mean error {error:.1f} levels)"


def test_chunk_boundaries_and_batch_size_do_not_change_the_frames(checkpoint, clip, rendered):
    _, before, whole = rendered
    engine = Wav2LipEngine(checkpoint, batch_size=3, device="cpu")
    session = engine.start(_context(clip, media_factory.SPEECH_SHORT))
    parts = []
    for lo, hi in ((0, 5), (5, 7), (7, 12)):
        idx = np.arange(lo, hi)
        parts.append(session.process(FrameChunk(before[lo:hi].copy(), idx, idx)))
    # float summation order may differ with the batch size (a level here and there); frames
    # given another frame's audio window differ in thousands of values by up to 5 levels
    diff = np.abs(np.concatenate(parts).astype(int) - whole)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 0.001 * diff.size


def test_still_photo_mouth_follows_the_audio(engine, workdir):
    still = media_factory.write_still(workdir / "face.png", (192, 192))
    ctx = _context(still, media_factory.SPEECH, frames=40)
    session = engine.start(ctx)
    frame = _template_frames(ctx)[0]
    out_idx = np.array([5, 20, 35])  # three moments of speech, one template frame
    out = session.process(FrameChunk(np.repeat(frame[None], 3, axis=0), out_idx, np.zeros(3, np.int64)))
    box = session.boxes[0]
    region = _mouth_region(session.analysis.landmarks[0], box, frame.shape[:2])
    assert (out[:, ~region] == frame[~region]).all()
    assert np.abs(out[0].astype(int) - out[1]).sum() > 0 and np.abs(out[1].astype(int) - out[2]).sum() > 0


def test_render_writes_an_mp4_with_the_wav2lip_engine(engine, clip, workdir):
    from lipsync.render import render

    audio = media_factory.write_tone(workdir / "tone.wav", seconds=0.4)
    result = render(audio, clip, workdir / "out.mp4", engine=engine, options=RenderOptions(device="cpu"))
    assert result.engine == "wav2lip" and result.frames == 10
    info = media_factory.probe(result.path)
    assert info["frames"] == 10 and info["video_codec"] == "h264" and info["audio_codec"] == "aac"


# --------------------------------------------------------------------------- unusable checkpoints


def test_engine_error_names_the_checkpoint(workdir):
    missing = workdir / "models" / "wav2lip_gan.pth"
    with pytest.raises(CheckpointError) as info:
        Wav2LipEngine(missing, device="cpu")
    assert str(missing) in str(info.value) and "not found" in str(info.value)
    with pytest.raises(CheckpointError, match="no Wav2Lip checkpoint configured"):
        Wav2LipEngine(None, device="cpu")


@pytest.fixture(scope="module")
def truncated(workdir, checkpoint) -> Path:
    path = workdir / "truncated.pth"
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 3])
    return path


def test_auto_falls_back_to_warp_and_says_why(truncated):
    from lipsync.engines import create_engine

    engine = create_engine("auto", checkpoint=truncated, device="cpu", batch_size=8, precision="auto")
    assert engine.name == "warp"
    assert any(str(truncated) in note and "truncated" in note for note in engine.load_notes)


def test_cli_render_exits_non_zero_naming_the_checkpoint(truncated, clip, workdir):
    out = workdir / "cli.mp4"
    proc = subprocess.run([sys.executable, "-m", "daemon", "render", str(media_factory.SPEECH_SHORT), str(clip),
                           "-o", str(out), "--engine", "wav2lip", "--checkpoint", str(truncated), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert str(truncated) in proc.stderr and "truncated or corrupt" in proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_matches_cpu_fp32(checkpoint, clip, rendered):
    _, before, on_cpu = rendered
    engine = Wav2LipEngine(checkpoint, batch_size=8, precision="auto", device="cuda")
    assert engine.precision == "fp16"
    ctx = _context(clip, media_factory.SPEECH_SHORT)
    ctx.device = str(engine.device)
    session = engine.start(ctx)
    n = len(before)
    on_gpu = session.process(FrameChunk(before.copy(), np.arange(n), np.arange(n)))
    # same pixels touched (give or take a pixel of resampling), nearly the same values
    near_cpu_changes = ndimage.binary_dilation((on_cpu != before).any(-1), structure=np.ones((1, 3, 3), bool))
    assert not ((on_gpu != before).any(-1) & ~near_cpu_changes).any()
    assert np.abs(on_gpu.astype(int) - on_cpu).mean() < 1.0

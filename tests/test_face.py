"""Face analysis on real faces: the astronaut photograph, still and moving, some frames covered."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from lipsync.engine import RenderOptions
from lipsync.errors import EngineUnavailableError, NoFaceError
from lipsync.face import landmarks as landmarks_module
from lipsync.face.analysis import TemplateAnalysis, analyze_template, cache_path
from lipsync.face.landmarks import load_landmark_models, predictor_path
from lipsync.face.smoothing import smooth_landmarks
from lipsync.face.tracking import FaceTracker
from lipsync.media.template import probe_template
from tests import media_factory as mf

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models():
    return load_landmark_models()


@pytest.fixture(scope="module")
def moving_face(tmp_path_factory) -> Path:
    """2 s of the astronaut panning, zooming and tilting; frames 20-25 covered by a card."""
    return mf.write_face_video(tmp_path_factory.mktemp("face") / "moving.mp4", seconds=2.0, size=(256, 256),
                               cover=range(20, 26))


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_predictor_is_located_without_importing_its_package():
    code = ("import sys; from lipsync.face.landmarks import load_landmark_models, predictor_path; "
            "load_landmark_models(); print(predictor_path()); "
            "sys.exit(1 if 'face_recognition_models' in sys.modules else 0)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("shape_predictor_68_face_landmarks.dat")
    assert predictor_path().stat().st_size > 50_000_000  # the real model, not a stub


def test_missing_landmark_model_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(landmarks_module, "MODELS_PACKAGE", "no_such_models_package")
    with pytest.raises(EngineUnavailableError) as err:
        predictor_path()
    message = str(err.value)
    assert "shape_predictor_68_face_landmarks.dat" in message
    assert "not installed" in message and "pip install" in message


def test_tracker_follows_a_moving_face_with_few_detections(models, tmp_path):
    clip = mf.write_face_video(tmp_path / "pan.mp4", seconds=2.0, size=(256, 256), pan=0.04, zoom=0.08, rot_deg=5.0)
    frames = decoded(clip)
    tracker = FaceTracker(models)
    predictions = []
    tracker.models = CountingModels(models, predictions)
    tracked = [tracker.update(f) for f in frames]
    assert all(p is not None for p in tracked)
    assert tracker.detections <= len(frames) // 4  # tracking, not detecting, between key frames
    # one landmark prediction a frame: a frame the detector finds the face in is not also tracked
    assert len(predictions) == len(frames)

    # every tracked shape agrees with a fresh full detection of that frame
    errors = []
    for frame, points in zip(frames, tracked):
        gray = np.asarray(frame.mean(axis=2), np.uint8)
        box = models.detect(gray, 1)[0].box
        fresh = models.predict(gray, box)
        face = np.linalg.norm(fresh[16] - fresh[0])
        errors.append(np.linalg.norm(points - fresh, axis=1).mean() / face)
    assert np.mean(errors) < 0.03, np.mean(errors)
    # and the face really moved: its landmarks travel well beyond that error
    travel = np.linalg.norm(tracked[0] - tracked[len(frames) // 4], axis=1).mean()
    assert travel > 3.0


class CountingModels:
    """The models, counting the landmark predictions made with them."""

    def __init__(self, models, predictions: list):
        self._models, self._predictions = models, predictions

    def detect(self, *args):
        return self._models.detect(*args)

    def predict(self, *args):
        self._predictions.append(1)
        return self._models.predict(*args)


def test_an_analysis_that_fails_midway_stops_decoding_and_says_why(moving_face, monkeypatch):
    """The frames are decoded on another thread: it stops before the template is closed, and
    the error that stopped the analysis is the one raised."""
    seen = []

    def failing_update(self, frame):
        seen.append(1)
        if len(seen) == 10:
            raise RuntimeError("the tracker failed at frame 10")
        return None

    monkeypatch.setattr(FaceTracker, "update", failing_update)
    with pytest.raises(RuntimeError, match="frame 10"):
        analyze_template(probe_template(moving_face))
    assert not [t for t in threading.enumerate() if t.name == "lipsync-analysis-decode"]


def test_covered_frames_have_no_face_and_the_rest_do(moving_face):
    analysis = analyze_template(probe_template(moving_face))
    expected = np.ones(50, bool)
    expected[20:26] = False
    assert analysis.has_face.tolist() == expected.tolist()
    assert np.isnan(analysis.landmarks[~expected]).all()
    assert np.isfinite(analysis.landmarks[expected]).all()
    assert analysis.landmarks.shape == (50, 68, 2) and analysis.landmarks.dtype == np.float32
    assert np.isnan(analysis.boxes[20]).all()
    x0, y0, x1, y1 = analysis.boxes[0]
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256


def test_the_analysis_read_from_the_luma_plane_finds_the_landmarks_of_the_rgb_frames(moving_face):
    """The template is analysed on the decoder's own luma (no RGB conversion): every
    landmark within a pixel or two of the analysis of the same frames in RGB."""
    from lipsync.face.analysis import analyze_frames

    info = probe_template(moving_face)
    from_luma = analyze_template(info)
    from_rgb = analyze_frames(decoded(moving_face), fps=info.fps)
    assert np.array_equal(from_luma.has_face, from_rgb.has_face)
    both = from_luma.has_face
    error = np.linalg.norm(from_luma.landmarks[both] - from_rgb.landmarks[both], axis=-1)
    face_width = np.ptp(from_rgb.landmarks[both][:, 0:17, 0], axis=1).mean()
    assert np.median(error) < 0.01 * face_width and np.percentile(error, 99) < 0.03 * face_width, \
        (np.median(error), np.percentile(error, 99), face_width)


def test_still_portrait_is_one_frame_with_a_face(tmp_path):
    still = mf.write_still(tmp_path / "portrait.jpg", size=(200, 240))
    analysis = analyze_template(probe_template(still, RenderOptions()))
    assert analysis.frame_count == 1 and analysis.has_face.tolist() == [True]
    mouth = analysis.landmarks[0, 48:68]
    assert (mouth[:, 0] > 50).all() and (mouth[:, 0] < 150).all()  # the mouth is mid-face
    assert (mouth[:, 1] > 100).all() and (mouth[:, 1] < 200).all()


def test_template_without_a_face_fails_naming_the_file(tmp_path):
    clip = mf.write_plain_video(tmp_path / "wall.mp4", seconds=1.0, size=(160, 120))
    with pytest.raises(NoFaceError) as err:
        analyze_template(probe_template(clip))
    assert "wall.mp4" in str(err.value)
    assert "no usable face" in str(err.value)
    assert err.value.code == "no_face" and err.value.permanent


def test_analysis_is_cached_by_content(moving_face, tmp_path):
    cache = tmp_path / "faces"
    info = probe_template(moving_face)
    started = time.perf_counter()
    first = analyze_template(info, cache_dir=cache)
    first_s = time.perf_counter() - started
    assert not first.from_cache
    assert cache_path(cache, first.digest).is_file()

    # the same bytes under another name (the next job of a batch) are not analysed again
    copy = tmp_path / "job2-template.mp4"
    shutil.copy(moving_face, copy)
    started = time.perf_counter()
    second = analyze_template(probe_template(copy), cache_dir=cache)
    assert second.from_cache
    assert time.perf_counter() - started < first_s
    np.testing.assert_array_equal(second.has_face, first.has_face)
    np.testing.assert_array_equal(second.landmarks, first.landmarks)

    # a different template is analysed on its own
    other = mf.write_face_video(tmp_path / "other.mp4", seconds=0.4, size=(256, 256))
    assert not analyze_template(probe_template(other), cache_dir=cache).from_cache

    # a damaged cache file is ignored and replaced
    cache_path(cache, first.digest).write_bytes(b"not an npz")
    again = analyze_template(info, cache_dir=cache)
    assert not again.from_cache
    assert TemplateAnalysis.load(cache_path(cache, first.digest)) is not None


def test_faceless_template_fails_from_the_cache_too(tmp_path):
    clip = mf.write_plain_video(tmp_path / "wall.mp4", seconds=0.5, size=(160, 120))
    for _ in range(2):
        with pytest.raises(NoFaceError):
            analyze_template(probe_template(clip), cache_dir=tmp_path / "faces")
    assert len(list((tmp_path / "faces").glob("*.npz"))) == 1


def test_smoothing_removes_jitter_without_lagging_behind_motion():
    rng = np.random.default_rng(7)
    base = np.stack(np.meshgrid(np.linspace(0, 120, 17), np.linspace(0, 160, 4)), axis=-1).reshape(-1, 2)[:68]
    n, fps = 100, 25.0
    still = np.repeat(base[None], n, axis=0).astype(np.float32)
    noisy = still + rng.normal(0, 1.0, still.shape).astype(np.float32)
    valid = np.ones(n, bool)
    smoothed = smooth_landmarks(noisy, valid, fps)
    assert np.abs(smoothed - still).std() < np.abs(noisy - still).std() / 2.5

    # a face moving steadily at 100 px/s: the smoothed track stays on it (no filter lag)
    moving = still + (np.arange(n, dtype=np.float32) * 4.0)[:, None, None]
    follow = smooth_landmarks(moving + rng.normal(0, 1.0, moving.shape).astype(np.float32), valid, fps)
    assert np.abs((follow - moving)[5:-5].mean()) < 0.5

    # frames without a face stay NaN, and each run of faces is filtered on its own
    gaps = noisy.copy()
    valid[40:45] = False
    gaps[40:45] = np.nan
    out = smooth_landmarks(gaps, valid, fps)
    assert np.isnan(out[40:45]).all() and np.isfinite(out[valid]).all()


def test_a_process_that_renders_once_lets_the_models_go_after_the_analysis(moving_face, tmp_path):
    """A daemon keeps the landmark models for its next template; `lipsyncd render` hands
    their memory back once the face is analysed (and reloads them if it needs them again)."""
    from lipsync.face.landmarks import keep_landmark_models_loaded, landmark_models_in_use

    info = probe_template(moving_face, RenderOptions())
    analyze_template(info, cache_dir=None)
    assert landmarks_module._loaded is not None  # the default: kept
    keep_landmark_models_loaded(False)
    try:
        with landmark_models_in_use() as outer:  # another user (finishing's face follower) holds them
            analyze_template(info, cache_dir=None)
            assert landmarks_module._loaded is outer
        assert landmarks_module._loaded is None  # the last user let them go
        again = analyze_template(info, cache_dir=None)
        assert again.has_face.sum() > 40 and landmarks_module._loaded is None
    finally:
        keep_landmark_models_loaded(True)
    load_landmark_models()

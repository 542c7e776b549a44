"""The warp's compiled per-pixel loops against an independent bilinear reference
(scipy.ndimage.map_coordinates), and a warp render that never loads torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from lipsync.engines.warp_kernels import smoothstep_scalar, warp_and_sample
from lipsync.engines.warp_samples import smoothstep
from tests import media_factory as mf

REPO = Path(__file__).resolve().parent.parent
STEP = 6


def identity_grid(height: int, width: int, frames: int) -> np.ndarray:
    nh, nw = (height - 2) // STEP + 2, (width - 2) // STEP + 2
    ys, xs = np.mgrid[0:nh, 0:nw].astype(np.float32) * STEP
    return np.repeat(np.stack([xs, ys], axis=-1)[None], frames, axis=0)


def reference(crops: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The grid interpolated linearly to every pixel, then each crop sampled there with
    edge pixels repeated outward: numpy and scipy, no code of ours."""
    t, height, width, channels = crops.shape
    out = np.empty(crops.shape, np.float64)
    fine_y, fine_x = np.arange(height) / STEP, np.arange(width) / STEP
    for k in range(t):
        points = []
        for axis in (0, 1):  # x, then y
            coarse = grid[k, ..., axis].astype(np.float64)
            along_x = np.stack([np.interp(fine_x, np.arange(coarse.shape[1]), row) for row in coarse])
            points.append(np.stack([np.interp(fine_y, np.arange(coarse.shape[0]), col) for col in along_x.T], axis=1))
        xs, ys = points
        for c in range(channels):
            out[k, ..., c] = map_coordinates(crops[k, ..., c].astype(np.float64), [ys, xs], order=1, mode="nearest")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    from skimage import data

    face = data.astronaut()[40:220, 140:340]  # a real face's texture: edges, skin, hair
    return np.stack([face, face[::-1], np.ascontiguousarray(face[:, ::-1])])


def test_a_grid_that_moves_nothing_gives_every_pixel_back_exactly(crops):
    t, height, width, _ = crops.shape
    grid = identity_grid(height, width, t)
    # the warp's fields come back to a point's own position through float32 rotations
    grid += np.random.default_rng(3).uniform(-2e-5, 2e-5, grid.shape).astype(np.float32)
    assert np.array_equal(warp_and_sample(crops, grid, STEP), crops)


def test_a_smooth_warp_samples_what_an_independent_bilinear_reference_samples(crops):
    t, height, width, _ = crops.shape
    grid = identity_grid(height, width, t)
    ys, xs = grid[..., 1], grid[..., 0]
    # a bulge in the middle (up to 7 px), a shift beyond the bottom edge, and still corners
    bulge = 7.0 * np.exp(-(((xs - width / 2) / 40) ** 2 + ((ys - height / 2) / 30) ** 2))
    moved = grid.copy()
    moved[..., 0] += bulge * np.array([1.0, -0.5, 0.3], np.float32)[:, None, None]
    moved[..., 1] += bulge * 0.6 + np.where(ys > height - 20, 9.5, 0.0)
    got, want = warp_and_sample(crops, moved, STEP), reference(crops, moved)
    assert not np.array_equal(got, crops)
    difference = np.abs(got.astype(np.int16) - want)
    assert difference.max() <= 1  # rounding of the same value computed in another order
    assert np.count_nonzero(difference) < 0.001 * difference.size


def test_skipped_cells_are_left_for_the_caller(crops):
    t, height, width, _ = crops.shape
    shifted = identity_grid(height, width, t) + np.float32(2.5)
    skip = np.zeros((t, shifted.shape[1] - 1, shifted.shape[2] - 1), bool)
    skip[0, 2:5, 3:6] = skip[1, 0, 0] = True  # cells: a block in one crop, the first one in another
    skip[2, -1, -1] = True  # the last cell reaches to the crop's end
    got = warp_and_sample(crops, shifted, STEP, skip=skip)
    left = np.zeros(crops.shape[:3], bool)
    left[0, 2 * STEP:5 * STEP, 3 * STEP:6 * STEP] = left[1, :STEP, :STEP] = True
    left[2, (skip.shape[1] - 1) * STEP:, (skip.shape[2] - 1) * STEP:] = True
    assert np.array_equal(got[left], crops[left])
    assert np.abs(got[~left].astype(np.int16) - reference(crops, shifted)[~left]).max() <= 1
    assert (got[~left] != crops[~left]).mean() > 0.5  # the rest moved


def test_the_compiled_smoothstep_is_the_same_function():
    x = np.linspace(-1.0, 2.0, 61)
    assert np.allclose([smoothstep_scalar(0.2, 1.3, float(v)) for v in x], smoothstep(0.2, 1.3, x), atol=1e-12)


def in_a_new_process(code: str) -> str:
    """What the Python ``code`` prints, run in a fresh interpreter (what it imports is its own)."""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_a_warp_render_never_loads_torch_nor_scipys_linear_algebra(tmp_path):
    """torch costs a process 1.5 s and 130 MB before its first frame, scipy.linalg (which
    numba's first compile would import to probe for BLAS) 0.25-0.45 s and 16 MB; the warp
    needs neither."""
    face = mf.write_still(tmp_path / "face.png", size=(256, 256))
    code = ("import sys; from pathlib import Path; from lipsync.render import render; "
            "from lipsync.engine import RenderOptions; from lipsync.engines import create_engine; "
            f"r = render(Path({str(mf.SPEECH_SHORT)!r}), Path({str(face)!r}), Path({str(tmp_path / 'o.mp4')!r}), "
            "engine=create_engine('warp'), options=RenderOptions(device='auto', "
            f"cache_dir=Path({str(tmp_path / 'cache')!r}))); "
            "print(r.frames, sorted(m for m in ('torch', 'scipy.ndimage', 'scipy.linalg') if m in sys.modules))")
    stdout = in_a_new_process(code)
    frames, loaded = stdout.strip().split(" ", 1)
    assert int(frames) > 10 and loaded == "[]", stdout


def test_compiled_code_that_wants_blas_still_gets_it_after_the_warp_loaded_numba():
    """Skipping numba's BLAS probe is for the warp's start only: np.dot still runs on BLAS,
    and np.convolve, which would have, gives numpy's answer with numba's own loop."""
    code = ("import numpy as np, sys; import lipsync.engines.warp_kernels; from numba import njit; "
            "a, b = np.random.default_rng(1).random((2, 300)); "
            "dot = njit(lambda x, y: np.dot(x, y))(a, b); conv = njit(lambda x, y: np.convolve(x, y))(a, b[:40]); "
            "print(bool(np.isclose(dot, a @ b)), bool(np.allclose(conv, np.convolve(a, b[:40]))), "
            "'scipy.linalg' in sys.modules)")
    assert in_a_new_process(code).split() == ["True", "True", "True"]


def test_mouth_samples_are_sampled_as_scipy_samples_them():
    """The samples' bilinear lookup (numpy, so that a new template's render needs no
    scipy.ndimage) against scipy's map_coordinates, edges and beyond them included."""
    from lipsync.engines.warp_samples import bilinear_samples

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    points = np.stack([rng.uniform(-3, 53, (24, 48)), rng.uniform(-3, 43, (24, 48))], axis=-1)
    points[0, :4] = [[0, 0], [49, 39], [49.5, 39.7], [12, 7]]
    expected = np.stack([map_coordinates(image[..., c].astype(np.float32), [points[..., 1], points[..., 0]],
                                         order=1, mode="nearest") for c in range(3)], axis=-1)
    got = bilinear_samples(image, points)
    assert got.dtype == np.float32 and got.shape == (24, 48, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_a_new_video_templates_analysis_and_mouth_samples_load_no_scipy(tmp_path):
    """A template never seen: its face analysis and its mouth samples (a frame with the lips
    apart is sampled) need neither scipy.ndimage (0.15-0.25 s) nor scipy.linalg."""
    clip = mf.write_face_video(tmp_path / "face.mp4", seconds=1.0, size=(256, 256))
    code = ("import sys; from pathlib import Path; import numpy as np\n"
            "from lipsync.engine import RenderOptions; from lipsync.media.template import probe_template\n"
            "from lipsync.face.analysis import analyze_template; from lipsync.engines import warp_samples as s\n"
            f"t = probe_template(Path({str(clip)!r}), RenderOptions())\n"
            f"a = analyze_template(t, cache_dir=Path({str(tmp_path / 'cache')!r}))\n"
            "lm = a.landmarks.copy(); lm[:, 65:68, 1] += 12; lm[:, 55:60, 1] += 12  # lips apart\n"
            "sampled = []; plain = s.sample_mouth\n"
            "s.sample_mouth = lambda f, l: sampled.append(1) or plain(f, l)\n"
            "s.mouth_samples(t, lm, a.has_face)\n"
            "print(a.face_frames, len(sampled), sorted(m for m in ('scipy.ndimage', 'scipy.linalg') if m in sys.modules))")
    stdout = in_a_new_process(code)
    faces, sampled, loaded = stdout.strip().split(" ", 2)
    assert int(faces) > 20 and int(sampled) >= 1 and loaded == "[]", stdout

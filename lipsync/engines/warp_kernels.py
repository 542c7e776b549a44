"""The ``warp`` engine's per-pixel loops, compiled by numba: the crops sampled through the
coarse sampling grid (:mod:`lipsync.engines.warp_field`), and the bilinear sampling and the
division into cells that the mouth's own loops share (:mod:`lipsync.engines.warp_mouth`,
:mod:`lipsync.engines.warp_interior`).

Why compiled loops and not numpy or torch: numpy needs a temporary array per step of a
bilinear lookup (measured 6-12 ms a 230x250 crop, against under 0.5 ms here), and torch
costs a render 1.5-1.8 s of import and 130 MB of memory before its first frame, against
numba's 0.5-0.7 s and 45 MB (numba is installed anyway: librosa needs it). The loops release
the GIL, so the pipeline's decoder and encoder threads run beside them.

Compiled code is cached on disk (:func:`lipsync.compiled.compiled`).

Coordinates are pixels of the image sampled (x across, y down), and sampling clamps them to
the image (the border pixels extend outward).
"""

from __future__ import annotations

import numpy as np

from lipsync.compiled import compiled
from lipsync.engines.warp_samples import smoothstep


smoothstep_scalar = compiled(smoothstep)  # the same function, for the per-pixel loops


@compiled
def bilinear_at(width, height, x, y):  # pragma: no cover - compiled
    """Where a bilinear sample at (x, y) reads an image of width x height, clamped to it:
    (x0, y0, x1, y1, fx, fy), for :func:`bilinear`."""
    x, y = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
    x0, y0 = int(x), int(y)
    return x0, y0, min(x0 + 1, width - 1), min(y0 + 1, height - 1), x - x0, y - y0


@compiled
def bilinear(images, k, c, at):  # pragma: no cover - compiled
    """Channel c of images[k] (K, H, W, C) at a point found by :func:`bilinear_at`."""
    x0, y0, x1, y1, fx, fy = at
    top = images[k, y0, x0, c] + (images[k, y0, x1, c] - np.float64(images[k, y0, x0, c])) * fx
    bottom = images[k, y1, x0, c] + (images[k, y1, x1, c] - np.float64(images[k, y1, x0, c])) * fx
    return top + (bottom - top) * fy


@compiled
def cell_pixels(step, i, j, nh, nw, height, width):  # pragma: no cover - compiled
    """Rows and columns [ya, yb) x [xa, xb) of the cell between coarse points i..i+1 and
    j..j+1 of a grid of nh x nw points ``step`` apart on a height x width crop (the last
    cells reach to the crop's end)."""
    return (i * step, height if i >= nh - 2 else (i + 1) * step,
            j * step, width if j >= nw - 2 else (j + 1) * step)


# A grid point within this many pixels of its own pixel has not moved: sampling there differs
# from the pixel by at most 255 * 0.001 < 0.5 levels, so the rounded sample *is* the pixel.
# (The fields come back to a point's own position through float32 rotations: ~1e-5 px.)
_STILL = 1e-3


@compiled
def _warp_crops(crops, coarse, step, skip, out):  # pragma: no cover - compiled; tested through warp_and_sample
    t_count, height, width, channels = crops.shape
    nh, nw = coarse.shape[1], coarse.shape[2]
    skipping = skip.shape[0] > 0
    for t in range(t_count):
        # cell by cell: a cell whose four corners do not move keeps the copy made before
        # (most of a crop: everything outside the moving part of the face)
        for i in range(max(nh - 1, 1)):
            i1 = min(i + 1, nh - 1)
            for j in range(max(nw - 1, 1)):
                if skipping and skip[t, i, j]:
                    continue
                ya, yb, xa, xb = cell_pixels(step, i, j, nh, nw, height, width)
                j1 = min(j + 1, nw - 1)
                still = True
                for ci, cj in ((i, j), (i, j1), (i1, j), (i1, j1)):
                    if abs(coarse[t, ci, cj, 0] - cj * step) > _STILL or abs(coarse[t, ci, cj, 1] - ci * step) > _STILL:
                        still = False
                if still:
                    continue
                # the cell's corners: sampling positions x, y (bilinear across the cell)
                x00, x01, x10, x11 = coarse[t, i, j, 0], coarse[t, i, j1, 0], coarse[t, i1, j, 0], coarse[t, i1, j1, 0]
                y00, y01, y10, y11 = coarse[t, i, j, 1], coarse[t, i, j1, 1], coarse[t, i1, j, 1], coarse[t, i1, j1, 1]
                for y in range(ya, yb):
                    fy = (y - ya) / step if nh > 1 else 0.0
                    left_x, right_x = x00 + (x10 - x00) * fy, x01 + (x11 - x01) * fy
                    left_y, right_y = y00 + (y10 - y00) * fy, y01 + (y11 - y01) * fy
                    for x in range(xa, xb):
                        fx = (x - xa) / step if nw > 1 else 0.0
                        at = bilinear_at(width, height, left_x + (right_x - left_x) * fx,
                                         left_y + (right_y - left_y) * fx)
                        for c in range(channels):
                            out[t, y, x, c] = int(min(max(bilinear(crops, t, c, at) + 0.5, 0.0), 255.0))


def warp_and_sample(crops: np.ndarray, coarse_grid: np.ndarray, step: int,
                    skip: np.ndarray | None = None) -> np.ndarray:
    """Each crop resampled where its coarse sampling grid says.

    crops: (T, H, W, C) uint8; coarse_grid: (T, h, w, 2) float32, for every point ``step``
    pixels apart (point (i, j) is pixel (i * step, j * step)) the x, y of the crop pixel it
    shows. The grid is upsampled bilinearly to every pixel and the crop sampled bilinearly
    there; returns (T, H, W, C) uint8, rounded. A grid point that names its own pixel gives
    that pixel's value exactly. Cell (i, j) holds the pixels between grid points i..i+1 and
    j..j+1 (the last ones reach to the crop's end); those with
    ``skip[t, i, j]`` (T, h - 1, w - 1) are left as they were, for the caller to fill.
    """
    out = crops.copy()
    _warp_crops(np.ascontiguousarray(crops), np.ascontiguousarray(coarse_grid, np.float32), int(step),
                _NO_SKIP if skip is None else np.ascontiguousarray(skip, np.bool_), out)
    return out


_NO_SKIP = np.zeros((0, 0, 0), np.bool_)

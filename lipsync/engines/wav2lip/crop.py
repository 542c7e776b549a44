"""Where the generator looks and where its output goes back: framing boxes and paste weights.

The network was trained on face-detector boxes (S3FD) that span the brows to the chin and
the cheeks, padded a little downward so the chin is inside, and averaged over 5 frames.
:func:`framing_boxes` derives the same framing from the shared 68-point landmarks, so the
network sees faces framed the way it learned them.

The reference pasted the whole generated box back, and the hard rectangle shows as a seam
around the lower face. Here only the mouth and jaw are replaced: :func:`paste_weights`
builds, in the generator's 96×96 frame, a mask of the region between the nostrils and the
jaw line that fades to zero over a few pixels inside that region's border, so nothing
outside the mouth and jaw changes and the boundary has no edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CROP = 96  # the generator's face size

# 68-point layout: jaw contour 0..16 (ear to ear through the chin, 8 = chin), brows 17..26,
# nostril base 31..35 (left to right as seen)
_JAW_LOWER = list(range(2, 15))  # cheek at nose height, around the chin, to the other cheek
_NOSTRIL_BASE = [35, 34, 33, 32, 31]  # right to left, closing the polygon over the upper lip
_BROWS = slice(17, 27)
_JAW = slice(0, 17)
_MOUTH = slice(48, 68)


@dataclass(frozen=True)
class FramingSettings:
    brow_margin: float = 0.10  # above the brows, as a share of the brow-to-chin height
    chin_pad: float = 0.10  # below the chin ("padded downward"), same unit
    side_margin: float = 0.04  # beyond the jaw's widest points, as a share of its width
    smooth_frames: int = 5  # moving average of the boxes over this many frames
    min_size: int = 16  # boxes smaller than this (pixels) count as no face
    feather: float = 6.0  # width of the paste mask's fade, in 96×96 crop pixels
    jaw_margin: float = 0.08  # the paste region reaches this much beyond the jaw line (share of mouth→jaw)


def _raw_boxes(landmarks: np.ndarray, s: FramingSettings) -> np.ndarray:
    brow_top = np.nanmin(landmarks[:, _BROWS, 1], axis=1)
    chin = np.nanmax(landmarks[:, _JAW, 1], axis=1)
    left = np.nanmin(landmarks[:, _JAW, 0], axis=1)
    right = np.nanmax(landmarks[:, _JAW, 0], axis=1)
    height = chin - brow_top
    width = right - left
    return np.stack([left - s.side_margin * width, brow_top - s.brow_margin * height,
                     right + s.side_margin * width, chin + s.chin_pad * height], axis=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _smooth(boxes: np.ndarray, valid: np.ndarray, frames: int) -> np.ndarray:
    """Centred moving average within each run of face frames (a cut restarts it)."""
    out = boxes.copy()
    half = frames // 2
    if half == 0:
        return out
    for start, stop in _runs(valid):
        run = boxes[start:stop].astype(np.float64)
        # cumulative sums give every window's mean at once; windows shrink at the run's ends
        csum = np.concatenate([np.zeros((1, 4)), np.cumsum(run, axis=0)])
        idx = np.arange(len(run))
        lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(run))
        out[start:stop] = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    return out


def framing_boxes(landmarks: np.ndarray, has_face: np.ndarray, frame_size: tuple[int, int],
                  settings: FramingSettings = FramingSettings()) -> np.ndarray:
    """Integer boxes (N, 4) ``x0, y0, x1, y1`` (end exclusive) per template frame, inside the
    frame; -1 everywhere for frames without a usable face."""
    width, height = frame_size
    valid = np.asarray(has_face, bool).copy()
    boxes = np.zeros((len(valid), 4), np.float64)
    if valid.any():
        boxes[valid] = _raw_boxes(np.asarray(landmarks, np.float64)[valid], settings)
    boxes = _smooth(boxes, valid, settings.smooth_frames)
    rounded = np.rint(boxes)
    rounded[:, [0, 2]] = np.clip(rounded[:, [0, 2]], 0, width)
    rounded[:, [1, 3]] = np.clip(rounded[:, [1, 3]], 0, height)
    out = rounded.astype(np.int64)
    too_small = (out[:, 2] - out[:, 0] < settings.min_size) | (out[:, 3] - out[:, 1] < settings.min_size)
    valid &= ~too_small
    out[~valid] = -1
    return out


def mouth_jaw_polygon(landmarks: np.ndarray, settings: FramingSettings = FramingSettings()) -> np.ndarray:
    """(K, 2) outline of the region the generator may change: nostrils down to the jaw line,
    the jaw line pushed out a little so that a mouth opening wider than in the template
    can lower the chin instead of being cut off at the template's jaw."""
    points = np.asarray(landmarks, np.float64)
    mouth = points[_MOUTH].mean(axis=0)
    jaw = mouth + (points[_JAW_LOWER] - mouth) * (1.0 + settings.jaw_margin)
    return np.concatenate([jaw, points[_NOSTRIL_BASE]])


def _inside(polygon: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd rule for points (xs, ys) against a closed polygon."""
    inside = np.zeros(xs.shape, bool)
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1):
        if ay == by:
            continue
        crosses = (ay > ys) != (by > ys)
        x_at = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < x_at)
    return inside


def paste_weights(landmarks: np.ndarray, box: np.ndarray, settings: FramingSettings = FramingSettings()) -> np.ndarray:
    """(96, 96) float32 weights in [0, 1] for blending the generated crop into ``box``:
    zero outside the mouth-and-jaw polygon, rising smoothly to one inside it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    polygon = mouth_jaw_polygon(landmarks, settings)
    # landmarks → crop pixel coordinates (pixel centres at i + 0.5)
    px = (polygon[:, 0] - x0) * CROP / (x1 - x0)
    py = (polygon[:, 1] - y0) * CROP / (y1 - y0)
    centres = np.arange(CROP) + 0.5
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    region = _inside(np.stack([px, py], axis=1), xs, ys)
    if not region.any():
        return np.zeros((CROP, CROP), np.float32)
    # distance to the nearest outside pixel, so the fade lies entirely inside the region;
    # padding makes the crop's border count as outside too (nothing beyond it is generated)
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    ramp = np.clip((depth - 0.5) / settings.feather, 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)  # smoothstep: no visible kink

"""Where the ``warp`` engine's mouth is in each template frame: the *mouth frame* (origin at
the middle of the inner lips, ``u`` along the line through the mouth corners, ``v`` down the
chin), the lip curves in it, the face contour and the box of pixels the warp may touch.

Plain numpy, computed once per render from the face analysis (:func:`lipsync.engines.warp.prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsync.face.landmarks import MOUTH_CORNERS

JAW_POINTS = 17  # landmarks 0-16: the face contour


@dataclass(frozen=True)
class MouthGeometry:
    """Per-template-frame mouth frame, lip curves and face contour (numpy, one row per frame)."""

    origin: np.ndarray  # (N, 2) x, y of the mouth frame's origin
    axis: np.ndarray  # (N, 2) unit vector along u (left corner -> right corner)
    width: np.ndarray  # (N,) mouth width, corner to corner
    face_width: np.ndarray  # (N,) the face's width across the contour's ends (points 0 and 16): the jaw's scale
    centre_u: np.ndarray  # (N,) u of the midpoint between the corners
    half_width: np.ndarray  # (N,) half the corner-to-corner distance along u
    inner_u: np.ndarray  # (N, 2) u of the inner-lip corners (landmarks 60, 64)
    upper: np.ndarray  # (N, 3) inner upper lip  v = a u^2 + b u + c
    lower: np.ndarray  # (N, 3) inner lower lip  v = a u^2 + b u + c
    outer_upper: np.ndarray  # (N, 3) outer upper lip (48-54)
    outer_lower: np.ndarray  # (N, 3) outer lower lip (54-59, 48)
    nose_v: np.ndarray  # (N,) v of the base of the nose: nothing above it moves
    contour: np.ndarray  # (N, 17, 2) u, v of the jaw line, landmarks 0-16
    box: np.ndarray  # (N, 4) int x0, y0, x1, y1 (exclusive) of the pixels the warp may touch
    valid: np.ndarray  # (N,) bool: a usable face (landmarks present, mouth not degenerate)


def _fit_parabolas(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Least-squares v = a u^2 + b u + c for each row of (N, K) samples."""
    design = np.stack([u**2, u, np.ones_like(u)], axis=-1)  # (N, K, 3)
    gram = np.einsum("nki,nkj->nij", design, design) + np.eye(3) * 1e-6
    rhs = np.einsum("nki,nk->ni", design, v)
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def _region_box(contour: np.ndarray, nose_v: np.ndarray, origin: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """(N, 4) float pixel bounds of the face contour's part below the nose (where the warp
    may move anything): the contour's vertices below that line and its edges' crossings of it."""
    closed = np.concatenate([contour, contour[:, :1]], axis=1)  # the contour closed across the top
    a, b = closed[:, :-1], closed[:, 1:]
    line = nose_v[:, None]
    below = np.where((a[..., 1] >= line)[..., None], a, np.nan)
    crosses = (a[..., 1] - line) * (b[..., 1] - line) < 0
    t = (line - a[..., 1]) / np.where(crosses, b[..., 1] - a[..., 1], 1.0)
    hit = np.where(crosses[..., None], a + (b - a) * t[..., None], np.nan)
    uv = np.concatenate([below, hit], axis=1)  # (N, 2K, 2)
    down = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
    xy = origin[:, None] + uv[..., :1] * axis[:, None] + uv[..., 1:] * down[:, None]
    with np.errstate(all="ignore"):
        return np.concatenate([np.nanmin(xy, axis=1), np.nanmax(xy, axis=1)], axis=1)


def mouth_geometry(landmarks: np.ndarray, has_face: np.ndarray, width: int, height: int) -> MouthGeometry:
    """Mouth frames of (N, 68, 2) landmarks in a ``width`` x ``height`` image."""
    lm = np.nan_to_num(np.asarray(landmarks, np.float64))
    left, right = lm[:, MOUTH_CORNERS[0]], lm[:, MOUTH_CORNERS[1]]
    chord = right - left
    mouth_w = np.hypot(chord[:, 0], chord[:, 1])
    # a face is at least twice as wide as its mouth (real ones 2-3x): a contour squeezed by a
    # turned head or a poor fit must not shrink the opening to nothing
    face_w = np.maximum(np.hypot(*(lm[:, JAW_POINTS - 1] - lm[:, 0]).T), 2.0 * mouth_w)
    axis = chord / np.maximum(mouth_w, 1e-6)[:, None]
    down = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
    origin = lm[:, 60:68].mean(axis=1)

    def to_uv(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = points - origin[:, None, :]
        return np.einsum("nkd,nd->nk", rel, axis), np.einsum("nkd,nd->nk", rel, down)

    cu, _ = to_uv(np.stack([left, right], axis=1))
    upper = _fit_parabolas(*to_uv(lm[:, [60, 61, 62, 63, 64]]))
    lower = _fit_parabolas(*to_uv(lm[:, [60, 67, 66, 65, 64]]))
    outer_upper = _fit_parabolas(*to_uv(lm[:, 48:55]))
    outer_lower = _fit_parabolas(*to_uv(lm[:, [54, 55, 56, 57, 58, 59, 48]]))
    inner_u, _ = to_uv(lm[:, [60, 64]])
    _, v_nose = to_uv(lm[:, [31, 32, 33, 34, 35]])
    nose_v = v_nose.mean(axis=1)
    contour = np.stack(to_uv(lm[:, 0:JAW_POINTS]), axis=-1)

    bounds = _region_box(contour, nose_v, origin, axis)
    box = np.stack([np.floor(bounds[:, 0]) - 2, np.floor(bounds[:, 1]) - 2,
                    np.ceil(bounds[:, 2]) + 3, np.ceil(bounds[:, 3]) + 3], axis=1)
    box = np.clip(np.nan_to_num(box), 0, [width, height, width, height]).astype(np.int64)
    chin_v = contour[:, 8, 1]
    valid = (np.asarray(has_face, bool) & (mouth_w >= 8) & (chin_v > 0.5 * mouth_w) & (nose_v < 0)
             & (box[:, 2] - box[:, 0] >= 8) & (box[:, 3] - box[:, 1] >= 8))
    f32 = lambda x: np.ascontiguousarray(x, np.float32)  # noqa: E731
    return MouthGeometry(f32(origin), f32(axis), f32(mouth_w), f32(face_w), f32(cu.mean(axis=1)),
                         f32(np.abs(cu[:, 1] - cu[:, 0]) / 2), f32(inner_u), f32(upper), f32(lower),
                         f32(outer_upper), f32(outer_lower), f32(nose_v), f32(contour), box, valid)

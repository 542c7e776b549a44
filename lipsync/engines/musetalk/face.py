"""Where MuseTalk's face goes: the v1.5 box rule, the 256x256 crop, and pasting it back.

The box comes from our 68-point landmarks by the reference's rule (so the network sees the
framing it was trained on). Pasting back does not use the reference's face-parsing network
-- its weights were trained on CelebAMask-HQ, whose terms forbid commercial use -- but a
mask drawn from the same landmarks: the jaw line closed along the nose base, grown a
little downwards so that an opening jaw stays covered, limited to the lower half of the
square around the face, and feathered with the reference's kernel rule. Outside the mask
the frame is untouched.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

EXTRA_MARGIN = 10  # v1.5 extends the box this many pixels downwards
SIZE = 256

Box = tuple[int, int, int, int]  # x1, y1, x2, y2; half-open


def landmark_box(points: np.ndarray, frame_height: int, detector_box: Box | None = None) -> Box | None:
    """The v1.5 crop box for one frame, or None when the frame has no usable face.

    x from the landmarks' extent; y2 their lowest point; y1 as far above the nose bridge's
    lowest point (p29) as y2 is below it, clamped at 0. A degenerate or out-of-frame box
    falls back to the face detector's; then the box grows EXTRA_MARGIN px down (clamped).
    """
    if detector_box is not None and min(detector_box) < 0:
        return None  # the face detector found no face: the frame is skipped
    p = points.astype(np.int32)  # the reference truncates
    x1, x2, y2 = int(p[:, 0].min()), int(p[:, 0].max()), int(p[:, 1].max())
    nose = int(p[29, 1])
    y1 = max(0, nose - (y2 - nose))
    if y2 - y1 <= 0 or x2 - x1 <= 0 or x1 < 0:
        if detector_box is None or min(detector_box) < 0:
            return None
        x1, y1, x2, y2 = (int(v) for v in detector_box)
    return x1, y1, x2, min(y2 + EXTRA_MARGIN, frame_height)


def crop(frame_bgr: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels resized to 256x256 (Lanczos; the aspect ratio is not kept, as trained)."""
    x1, y1, x2, y2 = box
    region = Image.fromarray(np.ascontiguousarray(frame_bgr[y1:y2, x1:x2]))
    return np.asarray(region.resize((SIZE, SIZE), Image.Resampling.LANCZOS))


def _square(box: Box) -> Box:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    s = int((max(x2 - x1, y2 - y1) // 2) * 1.5)
    return cx - s, cy - s, cx + s, cy + s


Mask = tuple[np.ndarray, Box]  # alpha over the square around the face, and that square


def blend_mask(points: np.ndarray, box: Box) -> Mask:
    """(alpha in [0, 1] over the square around the face, the square) for pasting back."""
    sx1, sy1, sx2, sy2 = _square(box)
    side = sx2 - sx1
    mask = Image.new("L", (side, side), 0)
    jaw = [(float(x) - sx1, float(y) - sy1) for x, y in points[2:15]]
    drop = 0.06 * (box[3] - box[1])  # room below the chin for an opening mouth
    jaw = [(x, y + drop * (1 - abs(i - 6) / 6)) for i, (x, y) in enumerate(jaw)]
    nose = [(float(x) - sx1, float(y) - sy1) for x, y in points[35:30:-1]]
    ImageDraw.Draw(mask).polygon(jaw + nose, fill=255)
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    # only inside the face box and in the lower half of the square (about the nose line down)
    keep = np.zeros_like(alpha)
    bx1, by1, bx2, by2 = box[0] - sx1, box[1] - sy1, box[2] - sx1, box[3] - sy1
    keep[max(by1, side // 2):max(by2, 0), max(bx1, 0):max(bx2, 0)] = 1.0
    alpha = alpha * keep
    k = int(0.05 * side / 2) * 2 + 1
    if k > 1:
        alpha = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(radius=k / 6)), dtype=np.float32) / 255.0
    return alpha, (sx1, sy1, sx2, sy2)


def paste(frame_bgr: np.ndarray, face_bgr: np.ndarray, box: Box, mask: Mask) -> np.ndarray:
    """``frame`` with the generated 256x256 ``face`` blended into ``box`` through ``mask``
    (:func:`blend_mask` of the frame's landmarks) -- a new array."""
    x1, y1, x2, y2 = box
    h, w = frame_bgr.shape[:2]
    resized = np.asarray(Image.fromarray(face_bgr).resize((x2 - x1, y2 - y1), Image.Resampling.BILINEAR))
    alpha, (sx1, sy1, sx2, sy2) = mask
    generated = frame_bgr.copy()
    generated[y1:y2, x1:x2] = resized
    # composite only where the square overlaps the frame
    fx1, fy1, fx2, fy2 = max(sx1, 0), max(sy1, 0), min(sx2, w), min(sy2, h)
    a = alpha[fy1 - sy1:fy2 - sy1, fx1 - sx1:fx2 - sx1, None]
    out = frame_bgr.copy()
    region = out[fy1:fy2, fx1:fx2].astype(np.float32)
    out[fy1:fy2, fx1:fx2] = np.clip(region * (1 - a) + generated[fy1:fy2, fx1:fx2] * a + 0.5, 0, 255).astype(np.uint8)
    return out

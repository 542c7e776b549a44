"""The picture steps of finishing: reframing to a size and shape with the face kept in
frame, and compositing a watermark.

Reframing crops a window of the output's shape out of each frame and scales it to the
output size. The window follows the face the way a camera operator would: it stays put
while the face moves a little (a dead zone around the centre) and eases towards it when
it leaves, with a lag, never jumping. Where no window of that shape can hold the face
(a wide shot turned into a narrow one, the face too big for the crop), the whole frame is
fitted instead and the rest of the output filled with a blurred, darkened copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lipsync.errors import MediaError
from lipsync.finish.spec import Watermark

DETECT_EVERY = 5  # frames between face detections for the path; interpolated between
DETECT_LONG_SIDE = 480
DEAD_ZONE = 0.08  # of the window's width: face motion the window ignores
FOLLOW_SECONDS = 0.6  # time constant with which the window eases towards the face
FACE_ROOM = 2.0  # the window must hold the detector's face box (brows to chin) grown by this factor


def face_centres(frames, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(centres (N, 2) x, y, face widths (N,)) of the largest face in each frame, NaN where
    none was found; detected every DETECT_EVERY frames and interpolated between."""
    from PIL import Image

    from lipsync.face.landmarks import load_landmark_models

    models = load_landmark_models()
    found_at, centres, widths = [], [], []
    n = 0
    for i, frame in enumerate(frames):
        n = i + 1
        if i % DETECT_EVERY:
            continue
        h, w = frame.shape[:2]
        scale = min(1.0, DETECT_LONG_SIDE / max(h, w))
        gray = Image.fromarray(frame).convert("L")
        if scale < 1.0:
            gray = gray.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        boxes = models.detect(np.asarray(gray), 1 if max(gray.size) < 400 else 0)
        if boxes:
            x0, y0, x1, y1 = (v / scale for v in boxes[0])
            found_at.append(i)
            centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
            widths.append(max(x1 - x0, y1 - y0))
    out_c = np.full((n, 2), np.nan)
    out_w = np.full(n, np.nan)
    if found_at:
        idx = np.arange(n)
        c = np.array(centres)
        out_c[:, 0] = np.interp(idx, found_at, c[:, 0])
        out_c[:, 1] = np.interp(idx, found_at, c[:, 1])
        out_w[:] = np.interp(idx, found_at, widths)
    return out_c, out_w


@dataclass(frozen=True)
class FramePlan:
    """How every frame of a video is reframed."""

    mode: str  # "crop" (windows[i] is cut out) or "fit" (the whole frame, blurred fill around)
    windows: np.ndarray  # (N, 4) float x0, y0, x1, y1 in source pixels (crop mode)
    out_size: tuple[int, int]


def plan_reframe(source: tuple[int, int], out_size: tuple[int, int], centres: np.ndarray, widths: np.ndarray,
                 fps: float) -> FramePlan:
    """Windows of the output's shape that follow the face smoothly (see the module doc)."""
    sw, sh = source
    ow, oh = out_size
    ratio = ow / oh
    cw, ch = (sh * ratio, float(sh)) if ratio < sw / sh else (float(sw), sw / ratio)
    n = len(centres)
    known = np.isfinite(centres[:, 0])
    if known.any() and np.nanmax(widths) * FACE_ROOM > min(cw, ch):
        return FramePlan("fit", np.zeros((n, 4)), out_size)
    # unknown frames hold the nearest known centre; with no face at all, the middle
    target = np.tile([sw / 2, sh / 2], (n, 1)).astype(np.float64)
    if known.any():
        idx = np.arange(n)
        for k in range(2):
            target[:, k] = np.interp(idx, idx[known], centres[known, k])
    alpha = 1.0 - np.exp(-1.0 / max(FOLLOW_SECONDS * fps, 1e-6))
    pos = np.empty_like(target)
    current = target[0].copy()
    for i in range(n):
        gap = target[i] - current
        dead = np.array([DEAD_ZONE * cw, DEAD_ZONE * ch])
        moving = np.sign(gap) * np.maximum(np.abs(gap) - dead, 0.0)
        current = current + alpha * moving
        pos[i] = current
    x0 = np.clip(pos[:, 0] - cw / 2, 0, sw - cw)
    y0 = np.clip(pos[:, 1] - ch / 2, 0, sh - ch)
    return FramePlan("crop", np.stack([x0, y0, x0 + cw, y0 + ch], axis=1), out_size)


def scale(pixels: np.ndarray, width: int, height: int, interpolation: str = "BICUBIC") -> np.ndarray:
    """``pixels`` (H, W, 3) uint8 resized by FFmpeg's swscale: several times faster than PIL
    at video sizes, which matters at 25 frames a second."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
    return frame.reformat(width, height, format="rgb24", interpolation=interpolation).to_ndarray()


def reframe(frame: np.ndarray, plan: FramePlan, i: int) -> np.ndarray:
    """Frame ``i`` reframed by ``plan``: (oh, ow, 3) uint8.

    The crop window is placed on whole source pixels: at the usual scales (a 1080p source
    made 1080x1920) a step is under two output pixels, and the window moves slowly."""
    ow, oh = plan.out_size
    if plan.mode == "crop":
        x0, y0, x1, y1 = (int(round(v)) for v in plan.windows[min(i, len(plan.windows) - 1)])
        return scale(frame[y0:y1, x0:x1], ow, oh)
    return fit_into(frame, plan.out_size)


def blurred_fill(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The frame scaled to cover ``size``, blurred and darkened: the backdrop of a fitted
    picture. Made at an eighth of the size, where blurring is cheap, then scaled up."""
    from PIL import Image, ImageFilter

    ow, oh = size
    sh, sw = frame.shape[:2]
    small_w, small_h = max(8, ow // 8), max(8, oh // 8)
    cover = max(small_w / sw, small_h / sh)
    cw, ch = max(small_w, round(sw * cover)), max(small_h, round(sh * cover))
    small = scale(frame, cw, ch, "AREA")
    x, y = (cw - small_w) // 2, (ch - small_h) // 2
    small = np.asarray(Image.fromarray(small[y:y + small_h, x:x + small_w]).filter(ImageFilter.GaussianBlur(2)))
    small = (small.astype(np.uint16) * 140 // 255).astype(np.uint8)  # darker: the picture stands out
    return scale(small, ow, oh, "BILINEAR")


def fit_into(frame: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The whole frame, scaled to fit ``out_size`` (never stretched), over a blurred fill."""
    ow, oh = out_size
    sh, sw = frame.shape[:2]
    if (sw, sh) == (ow, oh):
        return frame
    fit = min(ow / sw, oh / sh)
    fw, fh = max(2, round(sw * fit) // 2 * 2), max(2, round(sh * fit) // 2 * 2)
    canvas = blurred_fill(frame, (ow, oh))
    x, y = (ow - fw) // 2, (oh - fh) // 2
    canvas[y:y + fh, x:x + fw] = scale(frame, fw, fh)
    return canvas


class WatermarkLayer:
    """A watermark image prepared once for one output size, composited into each frame."""

    def __init__(self, mark: Watermark, out_size: tuple[int, int]):
        from PIL import Image, UnidentifiedImageError

        ow, oh = out_size
        try:
            with Image.open(mark.image) as src:
                img = src.convert("RGBA")
        except (OSError, UnidentifiedImageError) as e:
            raise MediaError(f"cannot read the watermark image: {e}", path=Path(mark.image)) from None
        width = max(2, round(ow * mark.scale))
        height = max(2, round(img.height * width / img.width))
        if height > oh // 2:  # a tall logo: bounded by half the frame's height
            width, height = max(2, round(width * (oh // 2) / height)), oh // 2
        arr = np.asarray(img.resize((width, height), Image.LANCZOS), np.float32)
        self.rgb = arr[..., :3]
        self.alpha = (arr[..., 3:4] / 255.0) * float(mark.opacity)
        margin = round(min(ow, oh) * mark.margin)
        x = {"left": margin, "right": ow - width - margin}
        y = {"top": margin, "bottom": oh - height - margin}
        if mark.position == "center":
            self.x, self.y = (ow - width) // 2, (oh - height) // 2
        else:
            vertical, horizontal = mark.position.split("-")
            self.x, self.y = max(0, x[horizontal]), max(0, y[vertical])
        self.box = (self.x, self.y, self.x + width, self.y + height)

    def draw(self, frame: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = (region * (1.0 - self.alpha) + self.rgb * self.alpha + 0.5).astype(np.uint8)
        return frame

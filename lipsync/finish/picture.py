"""The picture steps of finishing: reframing to a size and shape with the face kept in
frame, and compositing a watermark.

Reframing crops a window of the output's shape out of each frame and scales it to the
output size. The window follows the face (found by :mod:`lipsync.finish.faces`, small ones
included) the way a camera operator would: it stays put while the face moves a little (a
dead zone around the centre) and eases towards it when it leaves, with a lag, never
jumping. Where no window of that shape can hold the head (a close-up made 16:9), the whole
frame is fitted instead and the rest of the output filled with a blurred, darkened copy of
it. With no face found at all, the window stays in the middle; the note says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lipsync.errors import MediaError
from lipsync.finish.faces import FacePath
from lipsync.finish.spec import Watermark
from lipsync.media.color import ColorInfo

DEAD_ZONE = 0.08  # of the window's width: face motion the window ignores
FOLLOW_SECONDS = 0.6  # time constant with which the window eases towards the face
# The window must hold the head, not only the detector's box (brows to chin, cheek to
# cheek): with hair and ears about this much more, on the usual presenter's face.
HEAD_WIDTH, HEAD_HEIGHT = 1.4, 1.8
HEAD_ROOM = 1.7  # and the window keeps this much of the face's width clear around it, where it can
FACE_SIZE_PERCENTILE = 90  # the face size judged: a few larger detections do not decide


@dataclass(frozen=True)
class FramePlan:
    """How every frame of a video is reframed, and why."""

    mode: str  # "crop" (windows[i] is cut out) or "fit" (the whole frame, blurred fill around)
    windows: np.ndarray  # (N, 4) float x0, y0, x1, y1 in source pixels (crop mode)
    out_size: tuple[int, int]
    how: str = ""  # what the note says: followed, centred (no face found) or fitted

    @property
    def note(self) -> str:
        return {"followed": "the window follows the face",
                "centred": "centred: no face was found to follow",
                "fitted": "fitted over a blurred fill: no window of that shape holds the whole face"}[self.how]


def plan_reframe(source: tuple[int, int], out_size: tuple[int, int], faces: FacePath, fps: float) -> FramePlan:
    """Windows of the output's shape that follow the face smoothly (see the module doc)."""
    sw, sh = source
    ow, oh = out_size
    ratio = ow / oh
    cw, ch = (sh * ratio, float(sh)) if ratio < sw / sh else (float(sw), sw / ratio)
    centres = faces.centres
    n = len(centres)
    known = np.isfinite(centres[:, 0])
    if known.any():
        fw, fh = (float(np.percentile(faces.sizes[known, k], FACE_SIZE_PERCENTILE)) for k in range(2))
        if fw * HEAD_WIDTH > cw or fh * HEAD_HEIGHT > ch:
            return FramePlan("fit", np.zeros((n, 4)), out_size, "fitted")
    # unknown frames hold the nearest known centre; with no face at all, the middle
    target = np.tile([sw / 2, sh / 2], (n, 1)).astype(np.float64)
    head = np.zeros((n, 2))
    if known.any():
        idx = np.arange(n)
        for k in range(2):
            target[:, k] = np.interp(idx, idx[known], centres[known, k])
            head[:, k] = np.interp(idx, idx[known], faces.sizes[known, k])
        head *= (HEAD_ROOM, HEAD_HEIGHT)
    pos = np.empty_like(target)
    for k, (window, limit) in enumerate(((cw, sw), (ch, sh))):
        pos[:, k] = _camera_path(target[:, k], head[:, k], window, limit, fps)
    x0 = np.clip(pos[:, 0] - cw / 2, 0, sw - cw)
    y0 = np.clip(pos[:, 1] - ch / 2, 0, sh - ch)
    return FramePlan("crop", np.stack([x0, y0, x0 + cw, y0 + ch], axis=1), out_size,
                     "followed" if known.any() else "centred")


def _camera_path(face: np.ndarray, head: np.ndarray, window: float, limit: float, fps: float) -> np.ndarray:
    """Window centres along one axis for a face at ``face`` (head ``head`` wide).

    The whole path is known before the first frame is drawn, so the camera can move like an
    operator who knows where the subject goes: smoothed without lag (forward and backward),
    still while the face stays within a dead zone, and never leaving the head outside.
    """
    tau = max(FOLLOW_SECONDS * fps / 2, 1e-6)
    smooth = _zero_lag(face, tau)
    dead = DEAD_ZONE * window
    path = np.empty_like(smooth)
    current = smooth[0]
    for i, want in enumerate(smooth):  # hold still inside the dead zone, catch up beyond it
        gap = want - current
        if abs(gap) > dead:
            current += gap - np.sign(gap) * dead
        path[i] = current
    path = _zero_lag(path, tau)
    # the head inside the window, with room where there is room: the smoothing may not take it out
    head = np.minimum(head, window)
    lo, hi = face + head / 2 - window / 2, face - head / 2 + window / 2
    fits = lo <= hi
    path[fits] = np.clip(path[fits], lo[fits], hi[fits])
    return np.clip(path, window / 2, limit - window / 2)


def _zero_lag(values: np.ndarray, tau: float) -> np.ndarray:
    """Exponential smoothing run forward, then backward: smooth, and no lag behind ``values``."""
    alpha = 1.0 - np.exp(-1.0 / tau)
    pad = int(np.ceil(3 * tau))  # the ends continue as they went, so neither end lags
    values = np.asarray(values, np.float64)
    head = values[0] - (values[1] - values[0]) * np.arange(pad, 0, -1) if len(values) > 1 else np.full(pad, values[0])
    tail = values[-1] + (values[-1] - values[-2]) * np.arange(1, pad + 1) if len(values) > 1 else np.full(pad,
                                                                                                       values[-1])
    out = np.concatenate([head, values, tail])
    for order in (range(1, len(out)), range(len(out) - 2, -1, -1)):
        step = 1 if order.step == 1 else -1
        for i in order:
            out[i] = out[i - step] + alpha * (out[i] - out[i - step])
    return out[pad:pad + len(values)]


def scale(pixels: np.ndarray, width: int, height: int, interpolation: str = "BICUBIC") -> np.ndarray:
    """``pixels`` (H, W, 3) uint8 resized by FFmpeg's swscale: several times faster than PIL
    at video sizes, which matters at 25 frames a second."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
    return frame.reformat(width, height, format="rgb24", interpolation=interpolation).to_ndarray()


def crop_window(frame: np.ndarray, plan: FramePlan, i: int) -> np.ndarray:
    """The part of frame ``i`` that ``plan`` (in crop mode) shows, unscaled.

    The window is placed on whole source pixels: at the usual scales (a 1080p source made
    1080x1920) a step is under two output pixels, and the window moves slowly."""
    x0, y0, x1, y1 = (int(round(v)) for v in plan.windows[min(i, len(plan.windows) - 1)])
    return frame[y0:y1, x0:x1]


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

    def overlay(self, color: ColorInfo) -> YuvOverlay:
        return YuvOverlay(self.rgb, self.alpha[..., 0], self.x, self.y, color)


class YuvOverlay:
    """A picture with transparency (RGB and alpha, at x, y) converted once to a video's YUV
    and blended into its yuv420p frames.

    Blending in YUV is blending in RGB: the conversion is affine, so a mix of two colours
    converts to the same mix of their conversions. Only the chroma of the 2x2 blocks along
    the picture's edge differs, blended with the block's mean alpha. Drawing into the frame
    the encoder takes spares converting every finished frame to RGB and back.
    """

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int, color: ColorInfo):
        h, w = alpha.shape
        # on whole 2x2 chroma blocks: even corners and sides (the frame's own sides are even)
        self.x, self.y = x - x % 2, y - y % 2
        bw, bh = w + x - self.x, h + y - self.y
        bw, bh = bw + bw % 2, bh + bh % 2
        canvas = np.zeros((bh, bw, 3), np.float32)
        cover = np.zeros((bh, bw), np.float32)
        canvas[y - self.y:y - self.y + h, x - self.x:x - self.x + w] = rgb
        cover[y - self.y:y - self.y + h, x - self.x:x - self.x + w] = alpha
        yuv = color.to_yuv420p(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
        chroma_cover = cover.reshape(bh // 2, 2, bw // 2, 2).mean(axis=(1, 3))
        self.layers = [(_plane(yuv, i).astype(np.float32), a, shift)
                       for i, (a, shift) in enumerate(((cover, 0), (chroma_cover, 1), (chroma_cover, 1)))]

    def draw(self, frame: av.VideoFrame) -> None:
        """Blend into ``frame`` (yuv420p, writable planes), in place."""
        for i, (values, cover, shift) in enumerate(self.layers):
            h, w = cover.shape
            x, y = self.x >> shift, self.y >> shift
            region = _plane(frame, i)[y:y + h, x:x + w]
            h, w = region.shape  # cut where the frame ends
            a = cover[:h, :w]
            region[:] = (region * (1.0 - a) + values[:h, :w] * a + 0.5).astype(np.uint8)


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    """Plane ``i`` of a yuv420p frame as a (rows, columns) uint8 view of its own memory."""
    plane = frame.planes[i]
    rows = frame.height >> (1 if i else 0)
    cols = frame.width >> (1 if i else 0)
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]

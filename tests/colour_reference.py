"""Colour as a player shows it, computed here independently of lipsyncd's code: the YUV
planes of a decoded frame turned into RGB with the BT.601 / BT.709 equations in numpy,
honouring the stream's tags (untagged SD as BT.601, untagged HD as BT.709, the convention
players follow), and fixtures of flat colour patches encoded with a chosen matrix and range.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# (Kr, Kb) of the luma equation
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
# AVColorSpace values
AVCOL_SPC = {"bt709": 1, "bt601": 6}  # SMPTE 170M: BT.601 for 525/625 lines
PATCHES = [(39, 58, 89), (200, 150, 120), (235, 235, 235), (20, 20, 20), (180, 40, 40), (60, 160, 70)]


def rgb_to_yuv(rgb: np.ndarray, matrix: str, full: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    r, g, b = (rgb[..., i].astype(np.float64) / 255 for i in range(3))
    y = kr * r + kg * g + kb * b
    cb = (b - y) / (2 * (1 - kb))
    cr = (r - y) / (2 * (1 - kr))
    if full:
        return y * 255, cb * 255 + 128, cr * 255 + 128
    return 16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, full: bool) -> np.ndarray:
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    if full:
        yy, cb, cr = y / 255, (u - 128) / 255, (v - 128) / 255
    else:
        yy, cb, cr = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224
    r = yy + 2 * (1 - kr) * cr
    b = yy + 2 * (1 - kb) * cb
    g = (yy - kr * r - kb * b) / kg
    return np.clip(np.stack([r, g, b], -1) * 255, 0, 255)


def displayed(frame: av.VideoFrame) -> np.ndarray:
    """The frame's RGB (float, 0..255) as a player shows it."""
    spc = frame.colorspace
    matrix = "bt709" if spc == 1 else "bt601" if spc in (5, 6) else ("bt709" if frame.height >= 720 else "bt601")
    full = frame.color_range == 2 or frame.format.name.startswith("yuvj")
    planes = frame.to_ndarray(format="yuv420p" if not frame.format.name.startswith("yuvj") else "yuvj420p")
    h, w = frame.height, frame.width
    y = planes[:h].astype(np.float64)
    u = planes[h:h + h // 4].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1).astype(np.float64)
    v = planes[h + h // 4:].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1).astype(np.float64)
    return yuv_to_rgb(y, u, v, matrix, full)


def patch_means(path: Path, frame_index: int = 0) -> list[tuple[float, float, float]]:
    """Mean displayed RGB of the centre of each patch of a :func:`write_patches_video` video."""
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == frame_index:
                rgb = displayed(frame)
                break
    h, w = rgb.shape[:2]
    cells = []
    for k in range(len(PATCHES)):
        x0, x1 = int(w * k / len(PATCHES)), int(w * (k + 1) / len(PATCHES))
        cx, cw = (x0 + x1) // 2, (x1 - x0) // 4
        cells.append(tuple(rgb[h // 4: 3 * h // 4, cx - cw: cx + cw].reshape(-1, 3).mean(0)))
    return cells


def write_patches_video(path: Path, size: tuple[int, int], *, matrix: str, full: bool, tagged: bool,
                        seconds: float = 1.0, fps: int = 25) -> Path:
    """Vertical stripes of PATCHES, converted to YUV with ``matrix`` and range by hand."""
    w, h = size
    rgb = np.zeros((h, w, 3), np.uint8)
    for k, colour in enumerate(PATCHES):
        rgb[:, int(w * k / len(PATCHES)): int(w * (k + 1) / len(PATCHES))] = colour
    y, u, v = rgb_to_yuv(rgb, matrix, full)
    sub = lambda p: p.reshape(h // 2, 2, w // 2, 2).mean((1, 3))  # noqa: E731 - 4:2:0
    planes = np.concatenate([np.round(y).clip(0, 255).astype(np.uint8).reshape(-1),
                             np.round(sub(u)).clip(0, 255).astype(np.uint8).reshape(-1),
                             np.round(sub(v)).clip(0, 255).astype(np.uint8).reshape(-1)]).reshape(h * 3 // 2, w)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "1", "preset": "ultrafast"}
        ctx = stream.codec_context
        if tagged:
            ctx.colorspace = AVCOL_SPC[matrix]
            ctx.color_primaries = 1 if matrix == "bt709" else 6
            ctx.color_trc = 1 if matrix == "bt709" else 6
        ctx.color_range = 2 if full else (1 if tagged else 0)
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            if tagged:
                frame.colorspace = AVCOL_SPC[matrix]
            frame.color_range = 2 if full else (1 if tagged else 0)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path

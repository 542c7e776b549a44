"""What the ``warp`` engine knows of a template's mouth before it draws one: the colours of
the inside of a mouth matched to the face (:func:`interior_colours`), and real open mouths
taken from the template's own frames (:class:`MouthSamples`, cached by content).

Plain numpy, prepared before the first chunk (see :mod:`lipsync.engines.warp`);
:mod:`lipsync.engines.warp_interior` draws with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync.cachefile import write_npz
from lipsync.heap import release_free_memory

log = logging.getLogger(__name__)

SAMPLE_SIZE = (24, 48)  # rows (down the opening) x columns (across it) of a mouth sample
SAMPLE_INSET = 0.12  # of the gap, kept off each lip: a sample is the inside, not the lips' edges
# inner-lip gap / mouth width: the lower edges of the opening buckets, one sample per
# bucket; a frame more closed than the first gives none
SAMPLE_LEVELS = (0.08, 0.16, 0.26)
SAMPLES_VERSION = 1

@dataclass(frozen=True)
class InteriorColours:
    cavity: tuple[float, float, float]  # RGB 0..255 at the back of the mouth, under the upper teeth
    floor: tuple[float, float, float]  # RGB 0..255 low in the mouth, lit through the opening
    tongue: tuple[float, float, float]  # RGB 0..255 of the tongue, low in a wide-open mouth
    teeth: tuple[float, float, float]  # RGB 0..255 of the upper-teeth hint (lower teeth: shaded)
    grain: float = 0.0  # std (0..255 levels) of the fine noise of the skin around the mouth


def interior_colours(frame: np.ndarray, landmarks: np.ndarray) -> InteriorColours:
    """Mouth colours matched to the face's lighting, from the lips and skin of one frame."""
    lips = lip_colour(frame, landmarks)
    skin = _mean_colour(frame, (landmarks[[3, 4, 12, 13, 30]] + landmarks[[48, 48, 54, 54, 33]]) / 2)
    light = float(np.clip(skin.mean() / 170.0, 0.35, 1.2))  # how brightly the face is lit
    # Scaling the lip colour per channel keeps the face's lighting; damping green and blue
    # more than red turns pink lips into the warm red-brown of a mouth (an even scale
    # leaves the lips' blue in and reads purple).
    cavity = lips * np.array([0.20, 0.10, 0.10])
    floor = lips * np.array([0.36, 0.17, 0.16])
    tongue = lips * np.array([0.70, 0.40, 0.38])
    teeth = np.array([236.0, 228.0, 214.0]) * light * 0.82
    return InteriorColours(tuple(cavity.tolist()), tuple(floor.tolist()), tuple(tongue.tolist()),
                           tuple(np.clip(teeth, 0, 255).tolist()), _grain_level(frame, landmarks))


def _grain_level(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """Std of the fine grain around the mouth: the median absolute deviation of each pixel
    from its 3x3 mean, which edges (lips, teeth) barely move."""
    h, w = frame.shape[:2]
    (x0, y0), (x1, y1) = landmarks[48:68].min(axis=0), landmarks[48:68].max(axis=0)
    pad = 0.3 * (x1 - x0)
    xa, xb = int(np.clip(x0 - pad, 0, w - 3)), int(np.clip(x1 + pad, 3, w))
    ya, yb = int(np.clip(y0 - pad, 0, h - 3)), int(np.clip(y1 + pad, 3, h))
    patch = frame[ya:yb, xa:xb].astype(np.float32)
    mean3 = sum(patch[1 + dy:patch.shape[0] - 1 + dy, 1 + dx:patch.shape[1] - 1 + dx]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    detail = patch[1:-1, 1:-1] - mean3
    return float(np.clip(np.median(np.abs(detail)) * 1.4826 / 0.94, 0.0, 4.0)) if detail.size else 0.0



def smoothstep(edge0, edge1, x):
    """0 below edge0, 1 above edge1, a smooth cubic between; on numpy arrays or scalars (and
    compiled as it is for the warp's per-pixel loops: lipsync.engines.warp_kernels)."""
    t = np.minimum(np.maximum((x - edge0) / (edge1 - edge0), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mean_colour(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    xy = np.clip(np.round(points).astype(np.int64), 0, [w - 1, h - 1])
    return frame[xy[:, 1], xy[:, 0]].astype(np.float64).mean(axis=0)


def lip_colour(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Mean RGB of the lips (midway between the outer and inner lip contours)."""
    return _mean_colour(frame, (landmarks[[49, 50, 52, 53, 55, 56, 58, 59]]
                                + landmarks[[61, 61, 63, 63, 65, 65, 67, 67]]) / 2)


# ---------------------------------------------------------------------------- mouth samples

@dataclass(frozen=True)
class MouthSamples:
    """Open mouths taken from the template's own frames, on the lip-coordinate grid."""

    pixels: np.ndarray  # (K, rows, cols, 3) float32 RGB
    mask: np.ndarray  # (K, rows, cols) float32 0..1: how much of each grid point is mouth interior
    opening: np.ndarray  # (K,) float32 inner-lip gap / mouth width of the frame it came from
    lips: np.ndarray  # (K, 3) float32 mean lip colour of that frame, for colour matching
    frames: np.ndarray  # (K,) int64 template frame numbers

    def __len__(self) -> int:
        return int(self.opening.shape[0])

    @classmethod
    def none(cls) -> MouthSamples:
        rows, cols = SAMPLE_SIZE
        return cls(np.zeros((0, rows, cols, 3), np.float32), np.zeros((0, rows, cols), np.float32),
                   np.zeros(0, np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.int64))

    def save(self, path: Path) -> None:
        write_npz(path, version=np.int64(SAMPLES_VERSION), pixels=self.pixels, mask=self.mask, opening=self.opening,
                  lips=self.lips, frames=self.frames)

    @classmethod
    def load(cls, path: Path) -> MouthSamples | None:
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["version"]) != SAMPLES_VERSION:
                    return None
                samples = cls(z["pixels"], z["mask"], z["opening"], z["lips"], z["frames"])
        except (OSError, KeyError, ValueError, EOFError):
            return None
        k = len(samples)
        rows, cols = SAMPLE_SIZE
        if samples.pixels.shape != (k, rows, cols, 3) or samples.mask.shape != (k, rows, cols):
            return None
        return samples


def inner_opening(landmarks: np.ndarray) -> np.ndarray:
    """(N,) inner-lip gap (mean of the three vertical inner-lip distances) / mouth width."""
    lm = np.asarray(landmarks, np.float64)
    gap = np.linalg.norm(lm[:, [61, 62, 63]] - lm[:, [67, 66, 65]], axis=2).mean(axis=1)
    width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1)
    return np.nan_to_num(gap / np.maximum(width, 1e-6))


def choose_sample_frames(landmarks: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Template frames to take mouth samples from: per opening bucket, the frame with the
    median opening of the bucket (typical of it, not an outlier). Sorted, at most one per bucket."""
    opening = np.where(usable, inner_opening(landmarks), 0.0)
    edges = list(SAMPLE_LEVELS) + [np.inf]
    chosen = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        members = np.flatnonzero((opening >= lo) & (opening < hi))
        if members.size:
            chosen.append(int(members[np.argsort(opening[members])[members.size // 2]]))
    return np.array(sorted(chosen), np.int64)


def sample_mouth(frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (rows, cols, 3), mask (rows, cols)) of the inside of the mouth in ``frame``.

    Grid column c lies at a fraction across from the left inner-lip corner (60) to the right
    one (64), row r at a fraction down from the upper inner lip to the lower one, kept
    SAMPLE_INSET of the gap off each lip.
    """
    rows, cols = SAMPLE_SIZE
    lm = np.asarray(landmarks, np.float64)
    upper = lm[[60, 61, 62, 63, 64]]
    lower = lm[[60, 67, 66, 65, 64]]
    across = np.linspace(0.0, 4.0, cols)  # in landmark steps along each inner-lip polyline
    k = np.minimum(across.astype(np.int64), 3)
    f = (across - k)[:, None]
    top = upper[k] * (1 - f) + upper[k + 1] * f  # (cols, 2)
    bottom = lower[k] * (1 - f) + lower[k + 1] * f
    down = SAMPLE_INSET + (1.0 - 2 * SAMPLE_INSET) * np.linspace(0.0, 1.0, rows)
    points = top[None] + (bottom - top)[None] * down[:, None, None]  # (rows, cols, 2) x, y
    pixels = bilinear_samples(frame, points)
    gap = np.linalg.norm(bottom - top, axis=1)  # (cols,) pixels
    width = max(float(np.linalg.norm(lm[54] - lm[48])), 1.0)
    # only where the lips are well apart is the grid inside the mouth; the corners never are
    mask = smoothstep(0.03 * width, 0.07 * width, gap) * (1.0 - smoothstep(0.8, 0.97, np.abs(np.linspace(-1, 1, cols))))
    return pixels.astype(np.float32), np.broadcast_to(mask[None, :], (rows, cols)).astype(np.float32).copy()


def bilinear_samples(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., C) float32: ``image`` (H, W, C) sampled bilinearly at ``points`` (..., 2) x, y,
    its edge pixels extended outward (what scipy.ndimage.map_coordinates does with order=1,
    mode="nearest": importing scipy.ndimage costs a new template's render 0.15-0.25 s)."""
    h, w = image.shape[:2]
    x = np.clip(np.asarray(points[..., 0], np.float64), 0.0, w - 1.0)
    y = np.clip(np.asarray(points[..., 1], np.float64), 0.0, h - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]

    def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return image[rows, cols].astype(np.float32)  # as map_coordinates sees a float32 channel

    top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx
    return (top * (1.0 - fy) + bottom * fy).astype(np.float32)


def shows_a_cavity(pixels: np.ndarray, mask: np.ndarray, lips: np.ndarray) -> bool:
    """Whether a sample shows the inside of a mouth (some of it in shadow, darker than half
    the lips) rather than only a smile's teeth: teeth alone, stretched into a wider opening
    below the frame's own teeth, would read as a second row of them."""
    luma = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    inside = luma[mask > 0.5]
    return inside.size > 0 and float(np.percentile(inside, 25)) < 0.5 * float(lips @ [0.299, 0.587, 0.114])


def mouth_samples(template, landmarks: np.ndarray, usable: np.ndarray, *, cache_dir: Path | None = None,
                  digest: str = "") -> MouthSamples:
    """The template's mouth samples: from the cache when this file was seen before, else
    decoded (only the chosen frames) and cached."""
    from lipsync.media.template import TemplateReader

    cached_at = Path(cache_dir) / f"{digest}.mouths-v{SAMPLES_VERSION}.npz" if cache_dir and digest else None
    if cached_at is not None and (cached := MouthSamples.load(cached_at)) is not None:
        return cached
    chosen = choose_sample_frames(landmarks, usable)
    if chosen.size == 0:
        samples = MouthSamples.none()
    else:
        pixels, masks, lips, kept = [], [], [], []
        with TemplateReader(template) as reader:
            for index, frame in zip(chosen, reader.frames(chosen)):
                p, m = sample_mouth(frame, landmarks[index])
                lip = lip_colour(frame, landmarks[index])
                if shows_a_cavity(p, m, lip):
                    pixels.append(p)
                    masks.append(m)
                    lips.append(lip)
                    kept.append(index)
        kept_frames = np.array(kept, np.int64)
        samples = MouthSamples(np.stack(pixels), np.stack(masks), inner_opening(landmarks[kept_frames]).astype(np.float32),
                               np.array(lips, np.float32), kept_frames) if kept else MouthSamples.none()
        release_free_memory()  # the seeks decoded whole groups of frames, on FFmpeg's threads
    if cached_at is not None:
        try:
            samples.save(cached_at)
        except OSError as e:  # a read-only or full cache costs the next job some decoding, not this one
            log.warning("cannot cache the mouth samples of %s in %s: %s", Path(template.path).name, cache_dir, e)
    return samples

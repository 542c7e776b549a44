"""What the ``warp`` engine shows between parted lips.

Two sources, in order of preference, beside the template frame's own interior where its
lips were already apart (:mod:`lipsync.engines.warp_field` keeps that one in place):

* **mouth samples** -- real pixels from the template itself: for a video whose person
  opens the mouth somewhere, a few frames with the mouth open (at different openings) are
  picked from the face analysis, and the inside of each mouth is resampled onto a small
  grid in *lip coordinates* (across: corner to corner; down: upper inner lip to lower
  inner lip). An opening in the output takes the sample nearest in size, stretched by the
  same coordinates onto its own lips, colour-matched to the frame's lips and blended in;
* **a drawn interior** -- when no sample suits (a photo with closed lips, an opening much
  wider than any in the template): a cavity shaded by depth, upper teeth, the lower teeth
  at mid openings, the tongue when wide open, all in colours taken from the face's lips
  and skin, grained like the skin around them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipsync.cachefile import write_npz

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


def grain_noise(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Fixed per-pixel noise with std 1 (uniform), from an integer hash of the frame
    coordinates: identical on every device and in every frame, so it adds texture without
    flicker (which the encoder would also pay bits for)."""
    h = xs.to(torch.int64) * 73856093 + ys.to(torch.int64) * 19349663
    h = ((h ^ (h >> 13)) & 0xFFFFFFF) * 1274126177  # masked first: no int64 overflow
    h = (h ^ (h >> 16)) & 0xFFFF
    return (h.float() / 65535.0 - 0.5) * 3.4641  # uniform on +-sqrt(3): std 1


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
    """Works on numpy arrays and torch tensors alike (edges may be either, or floats)."""
    t = (x - edge0) / (edge1 - edge0)
    t = t.clamp(0.0, 1.0) if isinstance(t, torch.Tensor) else np.clip(t, 0.0, 1.0)
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
    from scipy.ndimage import map_coordinates

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
    coords = [points[..., 1], points[..., 0]]
    pixels = np.stack([map_coordinates(frame[..., c].astype(np.float32), coords, order=1, mode="nearest")
                       for c in range(3)], axis=-1)
    gap = np.linalg.norm(bottom - top, axis=1)  # (cols,) pixels
    width = max(float(np.linalg.norm(lm[54] - lm[48])), 1.0)
    # only where the lips are well apart is the grid inside the mouth; the corners never are
    mask = smoothstep(0.03 * width, 0.07 * width, gap) * (1.0 - smoothstep(0.8, 0.97, np.abs(np.linspace(-1, 1, cols))))
    return pixels.astype(np.float32), np.broadcast_to(mask[None, :], (rows, cols)).astype(np.float32).copy()


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
    if cached_at is not None:
        try:
            samples.save(cached_at)
        except OSError as e:  # a read-only or full cache costs the next job some decoding, not this one
            log.warning("cannot cache the mouth samples of %s in %s: %s", Path(template.path).name, cache_dir, e)
    return samples


@dataclass(frozen=True)
class SampleChoice:
    """Per frame of a batch: which mouth sample to show, how much of it and in what colour."""

    index: torch.Tensor  # (T,) int64
    weight: torch.Tensor  # (T,) 0..1
    gain: torch.Tensor  # (T, 3) per-channel colour gain


class SampleBank:
    """A session's mouth samples on the render device, and the rule for picking one."""

    def __init__(self, samples: MouthSamples, lips_now: np.ndarray, device: torch.device):
        self.count = len(samples)
        self.opening = samples.opening.astype(np.float64)
        if self.count:
            both = np.concatenate([samples.pixels, samples.mask[..., None]], axis=-1)  # (K, rows, cols, 4)
            self.images = torch.from_numpy(np.ascontiguousarray(both.transpose(0, 3, 1, 2))).to(device)
            # the light may differ between the sample's frame and this render's: match the lips
            gain = np.clip(np.asarray(lips_now, np.float64)[None] / np.maximum(samples.lips, 1.0), 0.75, 1.33)
            self.gain = gain.astype(np.float32)
        self.device = device

    def choose(self, target_opening: np.ndarray) -> SampleChoice | None:
        """The sample nearest (in ratio) to each frame's target opening; weighted down when
        even the nearest would have to be stretched to more than about twice its size."""
        if self.count == 0:
            return None
        target = np.maximum(np.asarray(target_opening, np.float64), 1e-3)
        ratio = np.log(self.opening[None, :] / target[:, None])
        index = np.argmin(np.abs(ratio), axis=1)
        scale = self.opening[index] / target
        weight = smoothstep(0.35, 0.6, scale) * smoothstep(0.02, 0.05, target)
        return SampleChoice(torch.from_numpy(index).to(self.device),
                            torch.from_numpy(weight.astype(np.float32)).to(self.device),
                            torch.from_numpy(self.gain[index]).to(self.device))


def _grid_sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def draw_interior(across: torch.Tensor, down: torch.Tensor, gap: torch.Tensor, width: torch.Tensor,
                  half_width: torch.Tensor, colours: InteriorColours, bank: SampleBank | None,
                  choice: SampleChoice | None) -> torch.Tensor:
    """(T, 3, H, W) colour of the inside of the mouth.

    across: position from the mouth's middle, in half-widths of the opening (-1..1 at its
    corners); down: 0 at the upper inner lip, 1 at the lower one; gap: the opening's height
    (pixels) at that column; width, half_width: (T, 1, 1) mouth width and half the opening's
    width (pixels).
    """
    dev = across.device

    def rgb(c: tuple[float, float, float]) -> torch.Tensor:
        return torch.tensor(c, device=dev).view(1, 3, 1, 1)

    side = across.abs()
    depth = down * gap  # pixels below the upper lip
    to_lower = (1.0 - down) * gap
    centre = 1.0 - smoothstep(0.6, 0.9, side)  # the upper teeth: all but the very corners

    # upper teeth hang from the upper lip; the lower teeth show above the lower lip while the
    # jaw is half open (wide open, the lip drops below them and the tongue takes over)
    teeth_h = torch.minimum(0.35 * gap, 0.09 * width)
    upper_teeth = (1.0 - smoothstep(0.6 * teeth_h, teeth_h, depth)) * centre
    low_h = torch.minimum(0.25 * gap, 0.06 * width)
    mid_open = smoothstep(0.04 * width, 0.10 * width, gap) * (1.0 - smoothstep(0.20 * width, 0.32 * width, gap))
    lower_teeth = (smoothstep(0.15 * low_h, 0.5 * low_h, to_lower) * (1.0 - smoothstep(0.6 * low_h, low_h, to_lower))
                   * (1.0 - smoothstep(0.35, 0.65, side)) * mid_open)
    # the tongue: a dome rising from the floor of the mouth, highest in the middle, seen
    # once the jaw is well open
    dome = down - (0.62 + 0.3 * side * side)
    tongue = smoothstep(-0.04, 0.1, dome) * (1.0 - smoothstep(0.55, 0.8, side)) \
        * smoothstep(0.08 * width, 0.2 * width, gap)
    # a tooth's edge: each tooth a little darker where it meets the next
    tooth_pitch = (across * half_width / (0.07 * width.clamp(min=1.0)) * torch.pi).cos().abs()
    tooth_shade = (0.86 + 0.14 * tooth_pitch.pow(0.3)).unsqueeze(1)

    # depth: darkest at the back, under the upper teeth; warmer towards the lower lip,
    # which the light reaches through the opening; darker again towards the cheeks
    floor = smoothstep(0.2, 1.0, down).unsqueeze(1)
    interior = rgb(colours.cavity) + (rgb(colours.floor) - rgb(colours.cavity)) * floor
    interior = interior * (1.0 - 0.4 * smoothstep(0.45, 0.95, side)).unsqueeze(1)
    # lit from the front: brightest along its ridge, darker towards its sides
    tongue_rgb = rgb(colours.tongue) * (1.05 - 0.35 * smoothstep(0.0, 0.3, dome) - 0.3 * side).unsqueeze(1)
    interior = interior + (tongue_rgb - interior) * (0.9 * tongue).unsqueeze(1)
    interior = interior + (rgb(colours.teeth) * 0.7 * tooth_shade - interior) * (0.6 * lower_teeth).unsqueeze(1)
    interior = interior + (rgb(colours.teeth) * tooth_shade - interior) * (0.85 * upper_teeth).unsqueeze(1)
    # towards the corners the inside of the cheeks and lips shows, in shadow: not a black hole
    corner = smoothstep(0.7, 1.0, side).unsqueeze(1)
    interior = interior + (rgb(colours.tongue) * 0.55 - interior) * (0.6 * corner)

    if bank is not None and choice is not None and bank.count:
        # the template's own mouth at the nearest opening, stretched onto these lips
        t = across.shape[0]
        grid = torch.stack([across.clamp(-1.0, 1.0),
                            ((down - SAMPLE_INSET) / (1.0 - 2 * SAMPLE_INSET) * 2.0 - 1.0).clamp(-1.0, 1.0)], dim=-1)
        sampled = _grid_sample(bank.images[choice.index], grid)  # (T, 4, H, W)
        colour = sampled[:, :3] * choice.gain.view(t, 3, 1, 1)
        share = (sampled[:, 3:4] * choice.weight.view(t, 1, 1, 1)).clamp(0.0, 1.0)
        interior = interior + (colour - interior) * share
    return interior

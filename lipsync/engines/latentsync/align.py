"""Where LatentSync's face goes: the aligned square it sees, the mouth mask, and the paste-back.

Alignment follows the reference's rule with our own 68-point landmarks: three points (the
two brow centres and the nose centre) are matched by a similarity transform to a fixed
template, scaled with the resolution (2.8 px per template unit at 256); the frame is
warped bilinearly into a 75x100-unit face image (grey 127 outside the frame), which is
resized to the square the network works at. The translation is smoothed from frame to
frame (0.8 new, 0.2 previous, in the template's normalised units), as the reference does.

The mask is the reference's fixed image (``mask.json``: the 256x256 ``mask.png`` of
bytedance/LatentSync, Apache-2.0, as runs of the region the network paints), resized like a
picture to the working size.

Pasting back differs from the reference on purpose. The reference warps the whole
aligned square back, so every pixel of the face is resampled three times even where
nothing changed. Here only the mask region comes back: the generated face is warped
into the frame, and blended through the mask warped the same way and feathered inwards,
so every pixel outside the mask region is the template's own, bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

FILL = 127.0  # the grey outside the frame
SMOOTH = 0.2  # share of the previous frame's translation correction


def three_points(landmarks68: np.ndarray) -> np.ndarray:
    """Brow centres (left, right) and nose centre, rounded to whole pixels, from iBUG-68 points."""
    p = np.asarray(landmarks68, dtype=np.float64)
    return np.round(np.stack([p[17:22].mean(0), p[22:27].mean(0), p[[30, 31, 33, 35]].mean(0)]))


@lru_cache(maxsize=1)
def mask_256() -> np.ndarray:
    """The reference's mask at 256x256: True where the network paints (mouth, jaw, chin)."""
    runs = json.loads(resources.files(__package__).joinpath("mask.json").read_text())
    mask = np.zeros((256, 256), dtype=bool)
    for y, x0, x1 in runs:
        mask[y, x0:x1] = True
    return mask


@lru_cache(maxsize=4)
def keep_mask(resolution: int) -> np.ndarray:
    """(resolution, resolution) float32 in [0, 1]: 1 where the face is kept, 0 where painted."""
    image = Image.fromarray(np.where(mask_256(), 0, 255).astype(np.uint8))
    return np.asarray(image.resize((resolution, resolution), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0


@lru_cache(maxsize=4)
def painted_at_face_size(resolution: int) -> torch.Tensor:
    """(1, 1, height, width): the painted region (1) over the aligned face before its resize
    to the square -- what the paste-back carries into the frame, the same for every frame."""
    aligner = Aligner(resolution)
    w, h = aligner.face_size
    painted = 1.0 - torch.from_numpy(keep_mask(resolution))[None, None]
    return F.interpolate(painted, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


@dataclass(frozen=True)
class Aligner:
    resolution: int

    @property
    def scale(self) -> float:
        return self.resolution / 256 * 2.8

    @property
    def face_size(self) -> tuple[int, int]:
        """(width, height) of the aligned face before the resize to the square."""
        return int(75 * self.scale), int(100 * self.scale)

    @property
    def template(self) -> np.ndarray:
        return np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]]) * self.scale

    def matrices(self, points: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """The 2x3 frame -> face matrices of consecutive frames (None where no face), the
        translation smoothed along the sequence as the reference smooths it."""
        out: list[np.ndarray | None] = []
        bias = None
        for p in points:
            if p is None:
                out.append(None)
                continue
            m, bias = similarity(p, self.template, bias)
            out.append(m)
        return out

    def warp(self, frame_rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """The aligned face (height, width, 3) uint8 of the face size."""
        w, h = self.face_size
        src = torch.from_numpy(np.ascontiguousarray(frame_rgb)).permute(2, 0, 1)[None].float()
        out = warp_affine(src, matrix, (h, w), fill=FILL)
        return out[0].permute(1, 2, 0).numpy().astype(np.uint8)  # truncated, as the reference

    def square(self, face: np.ndarray) -> np.ndarray:
        """The aligned face resized to the working square (Lanczos)."""
        return np.asarray(Image.fromarray(face).resize((self.resolution, self.resolution), Image.Resampling.LANCZOS))

    def paste(self, frame_rgb: np.ndarray, generated: torch.Tensor, matrix: np.ndarray) -> np.ndarray:
        """``frame_rgb`` with the mask region of ``generated`` (3, res, res, values in [-1, 1])
        put back; pixels outside the mask region are returned unchanged."""
        h_img, w_img = frame_rgb.shape[:2]
        w, h = self.face_size
        inverse = invert(matrix)
        corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64) @ inverse.T
        x0, y0 = (max(int(np.floor(corners[:, i].min())) - 1, 0) for i in (0, 1))
        x1 = min(int(np.ceil(corners[:, 0].max())) + 2, w_img)
        y1 = min(int(np.ceil(corners[:, 1].max())) + 2, h_img)
        if x1 <= x0 or y1 <= y0:
            return frame_rgb
        face = F.interpolate(generated[None].float(), size=(h, w), mode="bicubic", align_corners=False,
                             antialias=True)
        painted = painted_at_face_size(self.resolution)
        # face -> frame, into the box (x0, y0)-(x1, y1) only
        shifted = inverse.copy()
        shifted[:, 2] -= (x0, y0)
        box = (y1 - y0, x1 - x0)
        face_px = (warp_affine(face, shifted, box, fill=0.0)[0] / 2 + 0.5).clamp(0, 1) * 255
        alpha = warp_affine(painted, shifted, box, fill=0.0)[0, 0].numpy()
        # feathered inwards: zero on and outside the mask's edge (concave corners included),
        # one well inside it
        inside = alpha > 0.5
        sigma = max(1.0, np.sqrt(float(inside.sum())) / 40)
        alpha = np.where(inside, np.clip(2.0 * gaussian_filter(alpha, sigma) - 1.0, 0.0, 1.0), 0.0)
        rows, cols = np.nonzero(alpha)
        if not len(rows):
            return frame_rgb
        out = frame_rgb.copy()
        region = out[y0:y1, x0:x1].astype(np.float32)
        a = alpha[..., None]
        blended = a * face_px.permute(1, 2, 0).numpy() + (1 - a) * region
        touched = alpha > 0
        out[y0:y1, x0:x1][touched] = np.round(blended[touched]).astype(np.uint8)
        return out


def similarity(points: np.ndarray, template: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The reference's three-point similarity (2x3, frame -> face) and its smoothed bias."""
    p1, p2 = np.asarray(points, dtype=np.float64), np.asarray(template, dtype=np.float64)
    c1, c2 = p1.mean(0), p2.mean(0)
    s1, s2 = (p1 - c1).std(ddof=1), (p2 - c2).std(ddof=1)
    n1, n2 = (p1 - c1) / s1, (p2 - c2) / s2
    u, _, vt = np.linalg.svd(n1.T @ n2)
    v = vt.T
    r = v @ u.T
    if np.linalg.det(r) < 0:
        v[:, -1] = -v[:, -1]
        r = v @ u.T
    m = np.concatenate([(s2 / s1) * r, (c2 - (s2 / s1) * r @ c1)[:, None]], axis=1)
    new_bias = n2[2] - n1[2]
    if bias is not None:
        new_bias = bias * SMOOTH + new_bias * (1 - SMOOTH)
    m[:, 2] += new_bias
    return m, new_bias


def invert(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(src: torch.Tensor, matrix: np.ndarray, size: tuple[int, int], *, fill: float) -> torch.Tensor:
    """Bilinear warp of (n, c, h, w) by the 2x3 source -> destination ``matrix`` into
    ``size`` (height, width); pixel centres at integer coordinates (corner-aligned grid),
    ``fill`` blended in where the source ends, as kornia's ``warp_affine`` does."""
    n, c, h_src, w_src = src.shape
    h, w = size
    inverse = torch.from_numpy(invert(matrix)).float()
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    grid = torch.stack([2 * sx / max(w_src - 1, 1) - 1, 2 * sy / max(h_src - 1, 1) - 1], dim=-1)[None]
    grid = grid.expand(n, h, w, 2)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if fill:
        inside = F.grid_sample(torch.ones(n, 1, h_src, w_src), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=True)
        out = out + (1 - inside) * fill
    return out

"""The lower-face warp of the ``warp`` engine, batched in torch over crops of many frames.

Everything is expressed in a *mouth frame* per template frame: origin at the middle of the
inner lips, ``u`` along the line through the mouth corners, ``v`` perpendicular to it and
pointing down the chin, both in pixels. In that frame:

* the lower lip and the jaw move down (``v``) to open the mouth: at the lip edge by a
  lens-shaped profile that is zero at the corners (so the corners stay sealed), deeper down
  by a broad jaw profile, fading out below the chin;
* the upper lip moves up by a quarter of the opening, fading out towards the nose;
* the corners move in or out along ``u`` with the shape (rounded vs spread);
* where the lips part, the mouth interior is drawn: the template's own teeth when its mouth
  was open, otherwise a cavity shaded by depth with a hint of upper teeth, a faint edge of
  lower teeth at mid openings and the tongue when wide open, grained like the face and
  with a soft inner-lip edge.

The fields above are *forward* displacements (where a template pixel goes); sampling needs
the inverse (where an output pixel comes from), found by a few fixed-point iterations,
which converge because the fields are smooth and compress nothing more than ~2x. The whole
warp fades to exactly zero at the edge of an ellipse from the nose to below the chin (cut
off under the jaw line, so the neck beside the chin stays put); outside it the output
equals the input bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.face.landmarks import MOUTH_CORNERS

# Shape of the motion, in mouth widths / fractions. Chosen by eye on real faces.
MAX_OPENING = 0.42  # lip gap at openness 1, mid-mouth
UPPER_SHARE = 0.25  # share of the opening taken by the upper lip
SPREAD = 0.10  # corner displacement at shape +-1
NARROW_WHEN_OPEN = 0.05  # corners come in this much at openness 1
JAW_SIGMA = 0.8  # lateral extent of the jaw motion
LIP_TO_JAW_DEPTH = 0.4  # below the lower lip, how quickly the lip profile becomes the jaw's
BELOW_CHIN = 0.45  # the motion fades out this far below the chin
LENS_POWER = 0.7  # opening profile across the mouth: (1 - x^2)^power
_FIXED_POINT_STEPS = 3
COARSE_STEP = 4  # pixels between the points where the smooth fields are evaluated


@dataclass(frozen=True)
class MouthGeometry:
    """Per-template-frame mouth frame and lip curves (numpy, one row per frame)."""

    origin: np.ndarray  # (N, 2) x, y of the mouth frame's origin
    axis: np.ndarray  # (N, 2) unit vector along u (left corner -> right corner)
    width: np.ndarray  # (N,) mouth width, corner to corner
    centre_u: np.ndarray  # (N,) u of the midpoint between the corners
    half_width: np.ndarray  # (N,) half the corner-to-corner distance along u
    inner_u: np.ndarray  # (N, 2) u of the inner-lip corners (landmarks 60, 64)
    upper: np.ndarray  # (N, 3) inner upper lip  v = a u^2 + b u + c
    lower: np.ndarray  # (N, 3) inner lower lip  v = a u^2 + b u + c
    jaw: np.ndarray  # (N, 3) jaw line (landmarks 4-12)  v = a u^2 + b u + c
    ellipse: np.ndarray  # (N, 4) centre u, centre v, semi-axis along u, semi-axis along v
    box: np.ndarray  # (N, 4) int x0, y0, x1, y1 (exclusive) of the pixels the warp may touch
    valid: np.ndarray  # (N,) bool: a usable face (landmarks present, mouth not degenerate)


def _fit_parabolas(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Least-squares v = a u^2 + b u + c for each row of (N, K) samples."""
    design = np.stack([u**2, u, np.ones_like(u)], axis=-1)  # (N, K, 3)
    gram = np.einsum("nki,nkj->nij", design, design) + np.eye(3) * 1e-6
    rhs = np.einsum("nki,nk->ni", design, v)
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def mouth_geometry(landmarks: np.ndarray, has_face: np.ndarray, width: int, height: int) -> MouthGeometry:
    """Mouth frames of (N, 68, 2) landmarks in a ``width`` x ``height`` image."""
    lm = np.nan_to_num(np.asarray(landmarks, np.float64))
    left, right = lm[:, MOUTH_CORNERS[0]], lm[:, MOUTH_CORNERS[1]]
    chord = right - left
    mouth_w = np.hypot(chord[:, 0], chord[:, 1])
    axis = chord / np.maximum(mouth_w, 1e-6)[:, None]
    down = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
    origin = lm[:, 60:68].mean(axis=1)

    def to_uv(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = points - origin[:, None, :]
        return np.einsum("nkd,nd->nk", rel, axis), np.einsum("nkd,nd->nk", rel, down)

    cu, _ = to_uv(np.stack([left, right], axis=1))
    upper = _fit_parabolas(*to_uv(lm[:, [60, 61, 62, 63, 64]]))
    lower = _fit_parabolas(*to_uv(lm[:, [60, 67, 66, 65, 64]]))
    inner_u, _ = to_uv(lm[:, [60, 64]])
    _, v_nose = to_uv(lm[:, [31, 32, 33, 34, 35]])
    _, v_chin = to_uv(lm[:, 7:10])
    jaw = _fit_parabolas(*to_uv(lm[:, 4:13]))
    top = v_nose.mean(axis=1)
    bottom = v_chin.max(axis=1) + BELOW_CHIN * mouth_w
    centre_u = cu.mean(axis=1)
    # as wide as the cheeks at mouth height (jaw landmarks 3 and 13), so the background
    # beside a narrow face is never dragged along
    cheeks_u, _ = to_uv(lm[:, [3, 13]])
    half_face = np.clip(np.abs(cheeks_u - centre_u[:, None]).mean(axis=1), 0.75 * mouth_w, 1.2 * mouth_w)
    ellipse = np.stack([centre_u, (top + bottom) / 2, half_face, (bottom - top) / 2], axis=1)

    # pixel box of the ellipse (rotated with the mouth), plus room for the sampled margin
    a, b = ellipse[:, 2], ellipse[:, 3]
    centre = origin + axis * ellipse[:, :1] + down * ellipse[:, 1:2]
    ext_x = np.hypot(a * axis[:, 0], b * down[:, 0]) + 2
    ext_y = np.hypot(a * axis[:, 1], b * down[:, 1]) + 2
    box = np.stack([np.floor(centre[:, 0] - ext_x), np.floor(centre[:, 1] - ext_y),
                    np.ceil(centre[:, 0] + ext_x) + 1, np.ceil(centre[:, 1] + ext_y) + 1], axis=1)
    box = np.clip(box, 0, [width, height, width, height]).astype(np.int64)

    valid = (np.asarray(has_face, bool) & (mouth_w >= 8) & (b > 0.5 * mouth_w)
             & (box[:, 2] - box[:, 0] >= 8) & (box[:, 3] - box[:, 1] >= 8))
    return MouthGeometry(origin.astype(np.float32), axis.astype(np.float32), mouth_w.astype(np.float32),
                         centre_u.astype(np.float32), (np.abs(cu[:, 1] - cu[:, 0]) / 2).astype(np.float32),
                         inner_u.astype(np.float32), upper.astype(np.float32), lower.astype(np.float32),
                         jaw.astype(np.float32), ellipse.astype(np.float32), box, valid)


def _smoothstep(edge0: torch.Tensor | float, edge1: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(x: torch.Tensor) -> torch.Tensor:
    """exp(-x^2), with the tail cut at e^-30: denormal floats are very slow on CPUs."""
    return torch.exp(-(x * x).clamp(max=30.0))


def _poly(coeffs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return (coeffs[..., 0:1, None] * u + coeffs[..., 1:2, None]) * u + coeffs[..., 2:3, None]


@dataclass(frozen=True)
class InteriorColours:
    cavity: tuple[float, float, float]  # RGB 0..255 at the back of the mouth, under the upper teeth
    floor: tuple[float, float, float]  # RGB 0..255 low in the mouth, lit through the opening
    tongue: tuple[float, float, float]  # RGB 0..255 of the tongue, low in a wide-open mouth
    teeth: tuple[float, float, float]  # RGB 0..255 of the upper-teeth hint (lower teeth: shaded)
    grain: float = 0.0  # std (0..255 levels) of the fine noise of the skin around the mouth


def interior_colours(frame: np.ndarray, landmarks: np.ndarray) -> InteriorColours:
    """Mouth colours matched to the face's lighting, from the lips and skin of one frame."""
    h, w = frame.shape[:2]

    def mean_colour(points: np.ndarray) -> np.ndarray:
        xy = np.clip(np.round(points).astype(np.int64), 0, [w - 1, h - 1])
        return frame[xy[:, 1], xy[:, 0]].astype(np.float64).mean(axis=0)

    lip_points = (landmarks[[49, 50, 52, 53, 55, 56, 58, 59]] + landmarks[[61, 61, 63, 63, 65, 65, 67, 67]]) / 2
    skin_points = (landmarks[[3, 4, 12, 13, 30]] + landmarks[[48, 48, 54, 54, 33]]) / 2
    lips, skin = mean_colour(lip_points), mean_colour(skin_points)
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


def _grain(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
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


def _coarse_size(n: int) -> int:
    return (max(n, 2) - 2) // COARSE_STEP + 2


def _upsample(coarse: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """Bilinear upsampling of (T, C, h, w) coarse values to pixels, cropped to rows x cols.

    Returns (T, H, W, C). Channels-last runs several times faster on the CPU, and its
    memory layout is already the (T, H, W, 2) that grid_sample wants for C = 2.
    """
    h, w = coarse.shape[2:]
    size = ((h - 1) * COARSE_STEP + 1, (w - 1) * COARSE_STEP + 1)
    fine = F.interpolate(coarse.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                         align_corners=True)
    return fine.permute(0, 2, 3, 1)[:, rows, cols]


def warp_crops(crops: torch.Tensor, offsets: torch.Tensor, geometry: dict[str, torch.Tensor],
               openness: torch.Tensor, shape: torch.Tensor, colours: InteriorColours) -> torch.Tensor:
    """Warp a batch of crops.

    crops: (T, Hc, Wc, 3) uint8; offsets: (T, 2) x, y of each crop's top-left pixel in the
    frame; geometry: the :class:`MouthGeometry` rows of these frames as float tensors (see
    :func:`geometry_tensors`); openness, shape: (T,). Returns (T, Hc, Wc, 3) uint8.

    The smooth parts (displacement fields, their inversion, the lip curves) are computed
    on a grid COARSE_STEP pixels apart and interpolated. Only around the mouth, where the
    lips part and the field jumps from the upper lip's to the lower lip's, does the warp
    run per pixel. Where the displacement is zero the interpolated sampling grid hits
    pixel centres to ~1e-5 px, so after rounding those pixels come out exactly as they went in.
    """
    t, hc, wc, _ = crops.shape
    dev = crops.device
    field = _MouthField(geometry, openness, shape, offsets, hc, wc)

    # ---- coarse grid: both lips' fields, inverted; the lip lines; where the mouth is
    nh, nw = _coarse_size(hc), _coarse_size(wc)
    cy = torch.arange(nh, device=dev, dtype=torch.float32).view(1, nh, 1) * COARSE_STEP
    cx = torch.arange(nw, device=dev, dtype=torch.float32).view(1, 1, nw) * COARSE_STEP
    u, v = field.to_uv(cx + offsets[:, 0].view(t, 1, 1), cy + offsets[:, 1].view(t, 1, 1))
    keep = field.keep(u, v)
    low_u, low_v = field.invert(u, v, field.lower_field)
    up_u, up_v = field.invert(u, v, field.upper_field)
    low = field.to_grid(u + (low_u - u) * keep, v + (low_v - v) * keep)  # (T, 2, nh, nw)
    upper = field.to_grid(u + (up_u - u) * keep, v + (up_v - v) * keep)
    rise, down, up, lo = field.lip_motion(u)
    top_out, bottom_out = up + rise, lo + down
    below = (v >= (top_out + bottom_out) * 0.5).unsqueeze(1).float()

    img = crops.permute(0, 3, 1, 2).float()
    grid = _upsample(upper + (low - upper) * below, slice(0, hc), slice(0, wc))
    warped = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)

    # ---- around the mouth, per pixel: the lip split, the opening and the interior
    near = ((u - field.uc).abs() <= field.hw + 2 * COARSE_STEP) & (v >= top_out - 2 * COARSE_STEP) \
        & (v <= bottom_out + 2 * COARSE_STEP) & (keep > 0)
    rows = torch.nonzero(near.any(dim=2).any(dim=0)).flatten()
    cols = torch.nonzero(near.any(dim=1).any(dim=0)).flatten()
    if rows.numel():
        i0, i1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, nh)
        j0, j1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, nw)
        r0, r1 = i0 * COARSE_STEP, min((i1 - 1) * COARSE_STEP + 1, hc)
        c0, c1 = j0 * COARSE_STEP, min((j1 - 1) * COARSE_STEP + 1, wc)
        coarse = torch.cat([low, upper, torch.stack([top_out, bottom_out, rise, keep], dim=1)], dim=1)
        fine = _upsample(coarse[:, :, i0:i1, j0:j1], slice(0, r1 - r0), slice(0, c1 - c0))
        low_g, up_g, (f_top, f_bottom, f_rise, f_keep) = fine[..., 0:2], fine[..., 2:4], fine[..., 4:8].unbind(-1)
        ys = torch.arange(r0, r1, device=dev, dtype=torch.float32).view(1, -1, 1) + offsets[:, 1].view(t, 1, 1)
        xs = torch.arange(c0, c1, device=dev, dtype=torch.float32).view(1, 1, -1) + offsets[:, 0].view(t, 1, 1)
        bu, bv = field.to_uv(xs, ys)
        b_below = (bv >= (f_top + f_bottom) * 0.5).float().unsqueeze(-1)
        depth = bv - f_top
        in_gap = depth.clamp(0.0, 1.0) * (f_bottom - bv).clamp(0.0, 1.0) * f_keep
        opening = (in_gap > 0).float().unsqueeze(-1)
        # inside the opening the template's own interior hangs from the upper lip
        hanging = field.to_grid(bu, bv - f_rise * f_keep).permute(0, 2, 3, 1)
        box_grid = up_g + (low_g - up_g) * b_below
        box_grid = box_grid + (hanging - box_grid) * opening
        box = F.grid_sample(img, box_grid, mode="bilinear", padding_mode="border", align_corners=True)
        if bool(opening.any()):
            box = _draw_interior(box, field, (bu, bv, xs, ys, depth, f_top, f_bottom, f_keep, in_gap), colours)
        warped[:, :, r0:r1, c0:c1] = box

    return warped.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


_EDGE_PX = 2.5  # half-width of the softened band along each inner lip
_WINDOW_MARGIN = 4  # pixels kept around the opening: more than the band plus the blur's reach


def _draw_interior(box: torch.Tensor, field: _MouthField, where: tuple[torch.Tensor, ...],
                   colours: InteriorColours) -> torch.Tensor:
    """Paint the mouth interior into the (T, 3, H, W) pixels ``box`` around the mouth.

    ``where`` holds the per-pixel mouth-frame coordinates (u, v), frame coordinates (x, y),
    depth below the upper lip, the upper and lower lip lines, the warp's fade and how much
    of each pixel is inside the opening. Only the window that holds the opening in some
    frame of the batch is computed: usually well under half of ``box``.
    """
    bu, bv, xs, ys, depth, top, bottom, keep, in_gap = where
    inside_any = in_gap > 0
    rows = torch.nonzero(inside_any.any(dim=2).any(dim=0)).flatten()
    cols = torch.nonzero(inside_any.any(dim=1).any(dim=0)).flatten()
    h, w = box.shape[2:]
    r = slice(max(int(rows[0]) - _WINDOW_MARGIN, 0), min(int(rows[-1]) + _WINDOW_MARGIN + 1, h))
    c = slice(max(int(cols[0]) - _WINDOW_MARGIN, 0), min(int(cols[-1]) + _WINDOW_MARGIN + 1, w))
    bu, bv, depth, top, bottom, keep, in_gap = (x[:, r, c] for x in (bu, bv, depth, top, bottom, keep, in_gap))
    xs, ys = xs[..., c], ys[:, r]
    win = box[:, :, r, c]

    inside = field.interior(bu, bv, depth, top, bottom, win, colours)
    if colours.grain > 0:  # grain as fine and as strong as the face's own, or the mouth looks pasted on
        shade = (inside.mean(dim=1, keepdim=True) / 80.0).clamp(0.3, 1.0)  # dark areas show less
        inside = inside + (colours.grain * _grain(xs, ys)).unsqueeze(1) * shade
    win = win + (inside - win) * in_gap.unsqueeze(1)
    # a soft inner-lip edge: blur a band along both lips where they part (never where they
    # meet, so a closed mouth stays exactly as warped)
    parted = _smoothstep(0.5, 2.5, bottom - top) * keep
    band = torch.maximum(1.0 - _smoothstep(0.0, _EDGE_PX, depth.abs()),
                         1.0 - _smoothstep(0.0, _EDGE_PX, (bottom - bv).abs()))
    soft = F.avg_pool2d(win, 3, stride=1, padding=1, count_include_pad=False)
    win = win + (soft - win) * (0.8 * band * parted).unsqueeze(1)
    box[:, :, r, c] = win  # box is this batch's own scratch tensor
    return box


class _MouthField:
    """The motion model of one batch, as functions of mouth-frame coordinates (u, v)."""

    def __init__(self, g: dict[str, torch.Tensor], openness: torch.Tensor, shape: torch.Tensor,
                 offsets: torch.Tensor, hc: int, wc: int):
        t = offsets.shape[0]

        def col(name: str, i: int | None = None) -> torch.Tensor:
            x = g[name] if i is None else g[name][:, i]
            return x.view(t, 1, 1)

        self.t = t
        self.off_x, self.off_y = offsets[:, 0].view(t, 1, 1), offsets[:, 1].view(t, 1, 1)
        self.sx, self.sy = 2.0 / max(wc - 1, 1), 2.0 / max(hc - 1, 1)
        self.ox, self.oy = col("origin", 0), col("origin", 1)
        self.ax, self.ay = col("axis", 0), col("axis", 1)
        self.w = col("width")
        self.uc, self.hw = col("centre_u"), col("half_width").clamp(min=1.0)
        self.u_in0, self.u_in1 = col("inner_u", 0), col("inner_u", 1)
        self.upper, self.lower, self.jaw = g["upper"], g["lower"], g["jaw"]
        self.ell_u, self.ell_v, self.ell_a, self.ell_b = (col("ellipse", i) for i in range(4))
        self.o = openness.view(t, 1, 1)
        self.s = shape.view(t, 1, 1)
        self.nose_v = self.ell_v - self.ell_b
        _, self.jaw_drop, _, _ = self.lip_motion(self.uc)  # the jaw follows the lower lip's middle

    def to_uv(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rx, ry = x - self.ox, y - self.oy
        return rx * self.ax + ry * self.ay, ry * self.ax - rx * self.ay

    def to_grid(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(T, 2, h, w) grid_sample coordinates (-1..1 across the crop) of mouth-frame points."""
        x = self.ox + u * self.ax - v * self.ay - self.off_x
        y = self.oy + u * self.ay + v * self.ax - self.off_y
        return torch.stack([x * self.sx - 1.0, y * self.sy - 1.0], dim=1)

    def keep(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """1 near the mouth, fading to exactly 0 at the edge of the ellipse and, below the
        jaw line, before the neck (the ellipse alone would reach the neck beside the chin)."""
        r = torch.sqrt(((u - self.ell_u) / self.ell_a) ** 2 + ((v - self.ell_v) / self.ell_b) ** 2)
        below_jaw = v - _poly(self.jaw, u)
        return (1.0 - _smoothstep(0.62, 0.97, r)) * (1.0 - _smoothstep(0.2 * self.w, BELOW_CHIN * self.w, below_jaw))

    def lip_motion(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(upper lip shift, lower lip shift, upper inner lip v, lower inner lip v) at u; down is +."""
        clamped = torch.minimum(torch.maximum(u, self.u_in0), self.u_in1)
        up, lo = _poly(self.upper, clamped), _poly(self.lower, clamped)
        lens = (1.0 - ((u - self.uc) / self.hw) ** 2).clamp(min=0.0) ** LENS_POWER
        change = self.o * MAX_OPENING * self.w * lens - (lo - up).clamp(min=0.0)
        return -UPPER_SHARE * change, (1.0 - UPPER_SHARE) * change, up, lo

    def corner_shift(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        w = self.w
        amount = w * (SPREAD * self.s - NARROW_WHEN_OPEN * self.o)
        rel = (u - self.uc) / self.hw
        beyond = (rel.abs() - 1.0).clamp(min=0.0) * self.hw / (0.3 * w)
        return amount * rel.clamp(-1.0, 1.0) * _gauss(beyond) * _gauss(v / (0.4 * w))

    def lower_field(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, down, _, lo = self.lip_motion(u)
        w = self.w
        blend = _smoothstep(0.0, LIP_TO_JAW_DEPTH * w, v - lo)
        jaw = self.jaw_drop * _gauss((u - self.uc) / (JAW_SIGMA * w))
        jaw_line = _poly(self.jaw, u)
        fade = 1.0 - _smoothstep(jaw_line, jaw_line + BELOW_CHIN * w, v)
        return (down + (jaw - down) * blend) * fade

    def upper_field(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rise, _, up, _ = self.lip_motion(u)
        fade = 1.0 - _smoothstep(0.0, (up - self.nose_v).clamp(min=1.0), up - v)
        return rise * fade

    def invert(self, u: torch.Tensor, v: torch.Tensor, vertical) -> tuple[torch.Tensor, torch.Tensor]:
        """Template point that a forward field moves onto (u, v): fixed-point iteration."""
        pu, pv = u, v
        for _ in range(_FIXED_POINT_STEPS):
            pu, pv = u - self.corner_shift(pu, pv), v - vertical(pu, pv)
        return pu, pv

    def interior(self, u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, top: torch.Tensor,
                 bottom: torch.Tensor, sampled: torch.Tensor, colours: InteriorColours) -> torch.Tensor:
        """Colour inside the opening: the template's own interior where it had one, below
        it a cavity shaded from the dark back (under the upper teeth) to the warmer floor by
        the lower lip, a hint of upper teeth, a faint edge of lower teeth for mid openings
        and, when wide open, the tongue."""
        dev = u.device

        def rgb(c: tuple[float, float, float]) -> torch.Tensor:
            return torch.tensor(c, device=dev).view(1, 3, 1, 1)

        _, _, up, lo = self.lip_motion(u)
        gap = (bottom - top).clamp(min=1e-3)
        gap0 = (lo - up).clamp(min=0.0)
        across = (u - self.uc).abs()
        down = (depth / gap).clamp(0.0, 1.0)  # 0 at the upper lip, 1 at the lower
        to_lower = (bottom - v).clamp(min=0.0)
        own = 1.0 - _smoothstep(0.6 * gap0, gap0 + 1e-3, depth)
        centre = 1.0 - _smoothstep(0.45 * self.hw, 0.75 * self.hw, across)

        teeth_h = torch.minimum(0.35 * gap, 0.09 * self.w)
        teeth = (1.0 - _smoothstep(0.6 * teeth_h, teeth_h, depth)) * centre
        # the lower teeth just show above the lower lip while the jaw is half open; wide
        # open, the lip drops below them and the tongue takes over
        low_h = torch.minimum(0.22 * gap, 0.05 * self.w)
        mid = _smoothstep(0.04 * self.w, 0.10 * self.w, gap) * (1.0 - _smoothstep(0.18 * self.w, 0.30 * self.w, gap))
        lower_teeth = (_smoothstep(0.2 * low_h, 0.6 * low_h, to_lower)
                       * (1.0 - _smoothstep(0.6 * low_h, low_h, to_lower))
                       * (1.0 - _smoothstep(0.3 * self.hw, 0.6 * self.hw, across)) * mid)
        tongue = (_smoothstep(0.5, 0.95, down) * (1.0 - _smoothstep(0.25 * self.hw, 0.65 * self.hw, across))
                  * _smoothstep(0.08 * self.w, 0.22 * self.w, gap))

        # depth: darkest at the back, under the upper teeth; warmer towards the lower lip,
        # which the light reaches through the opening; darker again towards the cheeks
        floor = _smoothstep(0.2, 1.0, down).unsqueeze(1)
        interior = rgb(colours.cavity) + (rgb(colours.floor) - rgb(colours.cavity)) * floor
        interior = interior * (1.0 - 0.35 * _smoothstep(0.45 * self.hw, 0.95 * self.hw, across)).unsqueeze(1)
        tongue_rgb = rgb(colours.tongue) * (0.75 + 0.25 * down).unsqueeze(1)  # lit from the front
        interior = interior + (tongue_rgb - interior) * (0.7 * tongue).unsqueeze(1)
        interior = interior + (rgb(colours.teeth) * 0.62 - interior) * (0.4 * lower_teeth).unsqueeze(1)
        interior = interior + (rgb(colours.teeth) - interior) * (0.85 * teeth).unsqueeze(1)
        return interior + (sampled - interior) * own.unsqueeze(1)


GEOMETRY_FIELDS = ("origin", "axis", "width", "centre_u", "half_width", "inner_u", "upper", "lower", "jaw", "ellipse")


def geometry_tensors(geometry: MouthGeometry, rows: np.ndarray, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The rows of ``geometry`` the warp needs, as float32 tensors on ``device``."""
    return {name: torch.from_numpy(np.ascontiguousarray(getattr(geometry, name)[rows])).to(device)
            for name in GEOMETRY_FIELDS}

"""The lower-face warp of the ``warp`` engine, batched in torch over crops of many frames.

Everything is expressed in a *mouth frame* per template frame: origin at the middle of the
inner lips, ``u`` along the line through the mouth corners, ``v`` perpendicular to it and
pointing down the chin, both in pixels. Four numbers per output frame drive it
(:class:`lipsync.mouth.MouthTrack`): openness, spread, protrusion and activity. In the
mouth frame:

* the lips open *relative to the template's own mouth*: the gap between the inner lips
  becomes ``activity`` of the way from the template's own gap to the target opening, so in
  silence (activity 0) nothing moves at all and the template's expression is what shows;
* each lip moves as a whole, from its inner edge to its outer edge (its texture is carried,
  not stretched); protrusion moves the outer edges outward (a pout reads as fuller lips);
* below the lower lip the motion blends into a gentler jaw motion, above the upper lip it
  fades out before the nose;
* the corners move in (rounded, and a little as the jaw opens) or out (spread) along ``u``;
* where the lips part, the mouth interior is drawn (:mod:`lipsync.engines.warp_interior`).

All of it is confined by the face's own contour: the jaw line of the 68 landmarks
(points 0-16) closed across the top. The motion fades to zero over a band inside the
contour and is exactly zero for some pixels before it, so a collar, a background edge
or hair beside the cheek never bends; outside it the output equals the input bit for bit.

The fields above are *forward* displacements (where a template pixel goes); sampling needs
the inverse (where an output pixel comes from), found by a few fixed-point iterations,
which converge because the fields are smooth and compress nothing more than ~2x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.engines.warp_interior import SampleBank, SampleChoice, draw_interior, grain_noise
from lipsync.engines.warp_samples import InteriorColours
from lipsync.engines.warp_samples import smoothstep as _smoothstep
from lipsync.engines.warp_geometry import MouthGeometry

# Shape of the motion, in mouth widths / fractions. Chosen by eye on real faces.
MAX_OPENING = 0.38  # lip gap at openness 1, mid-mouth
UPPER_SHARE = 0.25  # share of the opening taken by the upper lip
SPREAD = 0.16  # corner displacement at spread +-1 (each corner, in mouth widths); at 0.10 /i/ read no wider than rest
SPREAD_CLOSES = 0.3  # and the opening is this much smaller at spread 1 (/i/: lips drawn flat, jaw nearly shut)
ROUND = 0.16  # corners come in this much at protrusion 1
ROUND_OPENING = 0.3  # and the opening narrows by this share of its half-width
NARROW_WHEN_OPEN = 0.05  # corners come in this much at openness 1
POUT = 0.07  # outer lip edges move outward this much at protrusion 1
JAW_SHARE = 0.6  # the chin follows the lower lip's drop this much (before the contour's falloff)
JAW_SIGMA = 0.8  # lateral extent of the jaw motion
LIP_TO_JAW_DEPTH = 0.35  # below the lower lip, how quickly the lip's motion becomes the jaw's
LENS_POWER = 0.7  # opening profile across the mouth: (1 - x^2)^power, rounder when rounded
CONTOUR_FALLOFF = 0.3  # inside the face contour, the motion fades in over this many mouth widths
_FIXED_POINT_STEPS = 3
COARSE_STEP = 6  # pixels between the points where the smooth fields are evaluated
# Exactly no motion this close to the contour: a pixel takes its field from the four coarse
# points around it (at most COARSE_STEP * sqrt(2) away), and every one of those must be 0
# for a pixel on the contour to come out unchanged.
CONTOUR_ZERO_BAND = COARSE_STEP * 1.5 + 0.5


def _gauss(x: torch.Tensor) -> torch.Tensor:
    """exp(-x^2), with the tail cut at e^-30: denormal floats are very slow on CPUs."""
    return torch.exp(-(x * x).clamp(max=30.0))


def _poly(coeffs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return (coeffs[..., 0:1, None] * u + coeffs[..., 1:2, None]) * u + coeffs[..., 2:3, None]


def _coarse_size(n: int) -> int:
    return (max(n, 2) - 2) // COARSE_STEP + 2


def _upsample(coarse: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """Bilinear upsampling of (T, C, h, w) coarse values to pixels, cropped to rows x cols.

    Returns (T, H, W, C). With torch 2.13 on the CPU, channels-last is faster for many
    channels (the mouth's 8: 2.7 against 3.6 ms a batch) and over twice as slow for the
    sampling grid's 2 (upsampling and grid_sample together: 26 against 12 ms).
    """
    h, w = coarse.shape[2:]
    size = ((h - 1) * COARSE_STEP + 1, (w - 1) * COARSE_STEP + 1)
    if coarse.shape[1] > 2:
        coarse = coarse.contiguous(memory_format=torch.channels_last)
    fine = F.interpolate(coarse, size=size, mode="bilinear", align_corners=True)
    return fine.permute(0, 2, 3, 1)[:, rows, cols]


@dataclass(frozen=True)
class MouthPose:
    """The viseme of each frame of a batch, as (T,) tensors (see :class:`lipsync.mouth.MouthTrack`)."""

    openness: torch.Tensor
    spread: torch.Tensor
    protrusion: torch.Tensor
    activity: torch.Tensor


def warp_crops(crops: torch.Tensor, offsets: torch.Tensor, geometry: dict[str, torch.Tensor], pose: MouthPose,
               colours: InteriorColours, bank: SampleBank | None = None,
               choice: SampleChoice | None = None) -> torch.Tensor:
    """Warp a batch of crops.

    crops: (T, Hc, Wc, 3) uint8; offsets: (T, 2) x, y of each crop's top-left pixel in the
    frame; geometry: the :class:`MouthGeometry` rows of these frames as float tensors (see
    :func:`geometry_tensors`); pose: the frames' visemes; colours, bank, choice: what the
    mouth interior is drawn from. Returns (T, Hc, Wc, 3) uint8.

    The smooth parts (displacement fields, their inversion, the lip curves, the contour's
    falloff) are computed on a grid COARSE_STEP pixels apart and interpolated. Only around
    the mouth, where the lips part and the field jumps from the upper lip's to the lower
    lip's, does the warp run per pixel. Where the displacement is zero the interpolated
    sampling grid hits pixel centres to ~1e-5 px, so after rounding those pixels come out
    exactly as they went in.
    """
    t, hc, wc, _ = crops.shape
    dev = crops.device
    field = _MouthField(geometry, pose, offsets, hc, wc)

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
    rise, drop, up, lo, _ = field.lip_motion(u)
    top_out, bottom_out = up + rise * keep, lo + drop * keep
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
        hanging = field.to_grid(bu, bv - f_rise).permute(0, 2, 3, 1)
        box_grid = up_g + (low_g - up_g) * b_below
        box_grid = box_grid + (hanging - box_grid) * opening
        box = F.grid_sample(img, box_grid, mode="bilinear", padding_mode="border", align_corners=True)
        if bool(opening.any()):
            painted = _paint_opening(box.clone(), field, (bu, bv, xs, ys, depth, f_top, f_bottom, f_keep, in_gap),
                                     colours, bank, choice)
            # in silence the template's own mouth, parted or not, is shown exactly as it is
            box = box + (painted - box) * field.a.unsqueeze(1)
        warped[:, :, r0:r1, c0:c1] = box

    return warped.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


_EDGE_PX = 2.5  # half-width of the softened band along each inner lip
_WINDOW_MARGIN = 4  # pixels kept around the opening: more than the band plus the blur's reach


def _paint_opening(box: torch.Tensor, field: _MouthField, where: tuple[torch.Tensor, ...],
                   colours: InteriorColours, bank: SampleBank | None, choice: SampleChoice | None) -> torch.Tensor:
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

    gap = (bottom - top).clamp(min=1e-3)
    _, _, up, lo, _ = field.lip_motion(bu)
    gap0 = (lo - up).clamp(min=0.0)  # the template's own opening here
    half_open = field.half_open
    drawn = draw_interior((bu - field.uc) / half_open, (depth / gap).clamp(0.0, 1.0), gap, field.w, half_open,
                          colours, bank, choice)
    # the template's own interior, hanging from the upper lip, where it had one
    own = (1.0 - _smoothstep(0.6 * gap0, gap0 + 1e-3, depth)).unsqueeze(1)
    inside = drawn + (win - drawn) * own
    if colours.grain > 0:  # grain as fine and as strong as the face's own, or the mouth looks pasted on
        shade = (inside.mean(dim=1, keepdim=True) / 80.0).clamp(0.3, 1.0)  # dark areas show less
        inside = inside + (colours.grain * grain_noise(xs, ys)).unsqueeze(1) * shade * (1.0 - own)
    win = win + (inside - win) * in_gap.unsqueeze(1)
    # a soft inner-lip edge: blur a band along both lips where they part (never where they
    # meet, so a closed mouth stays exactly as warped)
    parted = _smoothstep(0.5, 2.5, bottom - top) * keep
    band = torch.maximum(1.0 - _smoothstep(0.0, _EDGE_PX, depth.abs()),
                         1.0 - _smoothstep(0.0, _EDGE_PX, (bottom - bv).abs()))
    soft = _box_blur3(win)
    win = win + (soft - win) * (0.8 * band * parted).unsqueeze(1)
    box[:, :, r, c] = win  # box is this batch's own scratch tensor
    return box


def _box_blur3(x: torch.Tensor) -> torch.Tensor:
    """The mean of each pixel's 3x3 neighbourhood within the image (the border's smaller
    ones): avg_pool2d(x, 3, 1, 1, count_include_pad=False), from shifted sums, ten times
    faster on the CPU for the mouth's small windows."""
    def sums(t: torch.Tensor) -> torch.Tensor:
        p = F.pad(t, (1, 1, 1, 1))
        s = p[..., :-2] + p[..., 1:-1] + p[..., 2:]
        return s[..., :-2, :] + s[..., 1:-1, :] + s[..., 2:, :]

    return sums(x) / sums(torch.ones((1, 1) + x.shape[-2:], dtype=x.dtype, device=x.device))


class _MouthField:
    """The motion model of one batch, as functions of mouth-frame coordinates (u, v)."""

    def __init__(self, g: dict[str, torch.Tensor], pose: MouthPose, offsets: torch.Tensor, hc: int, wc: int):
        t = offsets.shape[0]

        def col(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(t, 1, 1)

        self.t = t
        self.off_x, self.off_y = col(offsets[:, 0]), col(offsets[:, 1])
        self.sx, self.sy = 2.0 / max(wc - 1, 1), 2.0 / max(hc - 1, 1)
        self.ox, self.oy = col(g["origin"][:, 0]), col(g["origin"][:, 1])
        self.ax, self.ay = col(g["axis"][:, 0]), col(g["axis"][:, 1])
        self.w = col(g["width"])
        self.uc, self.hw = col(g["centre_u"]), col(g["half_width"]).clamp(min=1.0)
        self.u_in0, self.u_in1 = col(g["inner_u"][:, 0]), col(g["inner_u"][:, 1])
        self.hw_in = ((self.u_in1 - self.u_in0) / 2).clamp(min=1.0)
        self.upper, self.lower = g["upper"], g["lower"]
        self.outer_upper, self.outer_lower = g["outer_upper"], g["outer_lower"]
        self.nose_v = col(g["nose_v"])
        self.contour = g["contour"]  # (T, 17, 2)
        self.o, self.s = col(pose.openness), col(pose.spread)
        self.p, self.a = col(pose.protrusion), col(pose.activity)
        # corners: spread out, rounded in, a little in as the jaw opens; all only while speaking
        self.corner_amount = self.a * self.w * (SPREAD * self.s - ROUND * self.p - NARROW_WHEN_OPEN * self.o)
        # half the width of the opening: between the inner-lip corners (the outer ones are
        # where the lips meet, never apart), moved with the corners, and pursed to a smaller,
        # rounder hole when the lips push forward
        self.half_open = ((self.hw_in + self.corner_amount) * (1.0 - ROUND_OPENING * self.p)).clamp(min=1.0)
        # rounded lips make a rounder, spread ones a flatter opening
        self.lens_power = LENS_POWER - 0.25 * self.p + 0.15 * self.s.clamp(min=0.0)
        _, drop_mid, _, _, _ = self.lip_motion(self.uc)
        self.jaw_drop = JAW_SHARE * drop_mid.clamp(min=0.0)  # the chin follows the lower lip's middle
        self.top_v = self.nose_v + 0.5 * (_poly(self.outer_upper, self.uc) - self.nose_v)

    def to_uv(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rx, ry = x - self.ox, y - self.oy
        return rx * self.ax + ry * self.ay, ry * self.ax - rx * self.ay

    def to_grid(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(T, 2, h, w) grid_sample coordinates (-1..1 across the crop) of mouth-frame points."""
        x = self.ox + u * self.ax - v * self.ay - self.off_x
        y = self.oy + u * self.ay + v * self.ax - self.off_y
        return torch.stack([x * self.sx - 1.0, y * self.sy - 1.0], dim=1)

    def keep(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """How much of the motion a point keeps: 0 outside the face contour and in a band just
        inside it, rising to 1 over CONTOUR_FALLOFF mouth widths; 0 above the nose base."""
        inside_by = self._inside_distance(u, v)
        contour = _smoothstep(CONTOUR_ZERO_BAND, CONTOUR_ZERO_BAND + CONTOUR_FALLOFF * self.w, inside_by)
        return contour * _smoothstep(self.nose_v, self.top_v, v)

    def _inside_distance(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Distance (pixels) from (u, v) to the jaw line, positive inside the contour (the jaw
        line closed across the top), negative outside."""
        pts = self.contour
        a, b = pts[:, :-1], pts[:, 1:]  # (T, 16, 2): the jaw line's segments
        au, av = a[..., 0].view(self.t, 1, 1, -1), a[..., 1].view(self.t, 1, 1, -1)
        eu, ev = (b[..., 0] - a[..., 0]).view(self.t, 1, 1, -1), (b[..., 1] - a[..., 1]).view(self.t, 1, 1, -1)
        pu, pv = u.unsqueeze(-1) - au, v.unsqueeze(-1) - av
        along = ((pu * eu + pv * ev) / (eu * eu + ev * ev).clamp(min=1e-6)).clamp(0.0, 1.0)
        dist = ((pu - along * eu) ** 2 + (pv - along * ev) ** 2).min(dim=-1).values.sqrt()
        # even-odd rule along +u, over the jaw line's segments and the closing one
        closed = torch.cat([pts, pts[:, :1]], dim=1)
        ca, cb = closed[:, :-1], closed[:, 1:]
        cau, cav = ca[..., 0].view(self.t, 1, 1, -1), ca[..., 1].view(self.t, 1, 1, -1)
        cbu, cbv = cb[..., 0].view(self.t, 1, 1, -1), cb[..., 1].view(self.t, 1, 1, -1)
        vv = v.unsqueeze(-1)
        straddles = (cav > vv) != (cbv > vv)
        cross_u = cau + (vv - cav) * (cbu - cau) / torch.where(straddles, cbv - cav, torch.ones_like(cav))
        inside = ((straddles & (u.unsqueeze(-1) < cross_u)).sum(dim=-1) % 2) == 1
        return torch.where(inside, dist, -dist)

    def lip_motion(self, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(upper lip shift, lower lip shift, upper inner lip v, lower inner lip v, pout) at u;
        down is +. The shifts take the inner lips from the template's own gap ``activity`` of
        the way to the target opening; pout is how far each lip's outer edge moves outward
        beyond its inner edge."""
        clamped = torch.minimum(torch.maximum(u, self.u_in0), self.u_in1)
        up, lo = _poly(self.upper, clamped), _poly(self.lower, clamped)
        x2 = ((u - self.uc) / self.half_open) ** 2
        lens = (1.0 - x2).clamp(min=0.0) ** self.lens_power
        target = self.o * MAX_OPENING * self.w * lens * (1.0 - SPREAD_CLOSES * self.s.clamp(min=0.0))
        change = self.a * (target - (lo - up).clamp(min=0.0))
        pout = self.a * self.p * POUT * self.w * (1.0 - x2).clamp(min=0.0).sqrt()
        return -UPPER_SHARE * change, (1.0 - UPPER_SHARE) * change, up, lo, pout

    def corner_shift(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rel = (u - self.uc) / self.hw
        beyond = (rel.abs() - 1.0).clamp(min=0.0) * self.hw / (0.3 * self.w)
        return self.corner_amount * rel.clamp(-1.0, 1.0) * _gauss(beyond) * _gauss(v / (0.4 * self.w))

    def lower_field(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, drop, _, lo, pout = self.lip_motion(u)
        clamped = u.clamp(min=self.uc - self.hw, max=self.uc + self.hw)
        outer = torch.maximum(_poly(self.outer_lower, clamped), lo + 1.0)
        # the lower lip moves as a whole (its outer edge further when pouting)...
        lip = drop + pout * ((v - lo) / (outer - lo)).clamp(0.0, 1.0)
        # ...and below it the motion becomes the jaw's, which the contour's falloff then ends
        jaw = self.jaw_drop * _gauss((u - self.uc) / (JAW_SIGMA * self.w))
        blend = _smoothstep(0.0, LIP_TO_JAW_DEPTH * self.w, v - outer)
        return lip + (jaw - lip) * blend

    def upper_field(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rise, _, up, _, pout = self.lip_motion(u)
        clamped = u.clamp(min=self.uc - self.hw, max=self.uc + self.hw)
        outer = torch.minimum(_poly(self.outer_upper, clamped), up - 1.0)
        lip = rise - pout * ((up - v) / (up - outer)).clamp(0.0, 1.0)
        fade = 1.0 - _smoothstep(0.0, (outer - self.nose_v).clamp(min=1.0), outer - v)
        return lip * fade

    def invert(self, u: torch.Tensor, v: torch.Tensor, vertical) -> tuple[torch.Tensor, torch.Tensor]:
        """Template point that a forward field moves onto (u, v): fixed-point iteration."""
        pu, pv = u, v
        for _ in range(_FIXED_POINT_STEPS):
            pu, pv = u - self.corner_shift(pu, pv), v - vertical(pu, pv)
        return pu, pv


GEOMETRY_FIELDS = ("origin", "axis", "width", "centre_u", "half_width", "inner_u", "upper", "lower",
                   "outer_upper", "outer_lower", "nose_v", "contour")


def geometry_tensors(geometry: MouthGeometry, rows: np.ndarray, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The rows of ``geometry`` the warp needs, as float32 tensors on ``device``."""
    return {name: torch.from_numpy(np.ascontiguousarray(getattr(geometry, name)[rows])).to(device)
            for name in GEOMETRY_FIELDS}

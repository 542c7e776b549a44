"""The lower-face warp of the ``warp`` engine, batched in numpy over crops of many frames
(the per-pixel loops compiled: :mod:`lipsync.engines.warp_kernels`).

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

from lipsync.engines.warp_geometry import MouthGeometry
from lipsync.engines.warp_interior import SampleBank, SampleChoice, draw_interior, grain_noise
from lipsync.engines.warp_kernels import bilinear, bilinear_at, compiled, smoothstep_scalar, warp_and_sample
from lipsync.engines.warp_samples import InteriorColours
from lipsync.engines.warp_samples import smoothstep as _smoothstep

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


def _gauss(x: np.ndarray) -> np.ndarray:
    """exp(-x^2), with the tail cut at e^-30: denormal floats are very slow on CPUs."""
    return np.exp(-np.minimum(x * x, 30.0))


def _poly(coeffs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The quadratic a u^2 + b u + c of each frame's (T, 3) coefficients, at u (T, h, w)."""
    a, b, c = (coeffs[:, k, None, None] for k in range(3))
    return (a * u + b) * u + c


def _coarse_size(n: int) -> int:
    return (max(n, 2) - 2) // COARSE_STEP + 2


@dataclass(frozen=True)
class MouthPose:
    """The viseme of each frame of a batch, as (T,) float32 arrays (see :class:`lipsync.mouth.MouthTrack`)."""

    openness: np.ndarray
    spread: np.ndarray
    protrusion: np.ndarray
    activity: np.ndarray


def warp_crops(crops: np.ndarray, offsets: np.ndarray, geometry: MouthGeometry, rows: np.ndarray, pose: MouthPose,
               colours: InteriorColours, bank: SampleBank | None = None,
               choice: SampleChoice | None = None) -> np.ndarray:
    """Warp a batch of crops.

    crops: (T, Hc, Wc, 3) uint8; offsets: (T, 2) x, y of each crop's top-left pixel in the
    frame; geometry, rows: the template's mouth frames and which row of them each crop's
    frame is; pose: the frames' visemes; colours, bank, choice: what the mouth interior is
    drawn from. Returns (T, Hc, Wc, 3) uint8.

    The smooth parts (displacement fields, their inversion, the lip curves, the contour's
    falloff) are computed on a grid COARSE_STEP pixels apart and interpolated. Only around
    the mouth, where the lips part and the field jumps from the upper lip's to the lower
    lip's, does the warp run per pixel. Where the displacement is zero (to float32's
    rounding) the pixels come out exactly as they went in (:func:`warp_and_sample`).
    """
    t, hc, wc, _ = crops.shape
    offsets = np.asarray(offsets, np.float32)
    field = _MouthField(geometry, rows, pose, offsets)

    # ---- coarse grid: both lips' fields, inverted; the lip lines; where the mouth is
    nh, nw = _coarse_size(hc), _coarse_size(wc)
    cy = (np.arange(nh, dtype=np.float32) * COARSE_STEP).reshape(1, nh, 1)
    cx = (np.arange(nw, dtype=np.float32) * COARSE_STEP).reshape(1, 1, nw)
    u, v = field.to_uv(cx + field.off_x, cy + field.off_y)
    keep = field.keep(u, v)
    low_u, low_v = field.invert(u, v, field.lower_field)
    up_u, up_v = field.invert(u, v, field.upper_field)
    low = field.to_grid(u + (low_u - u) * keep, v + (low_v - v) * keep)  # (T, nh, nw, 2)
    upper = field.to_grid(u + (up_u - u) * keep, v + (up_v - v) * keep)
    rise, drop, up, lo, _ = field.lip_motion(u)
    top_out, bottom_out = up + rise * keep, lo + drop * keep
    below = (v >= (top_out + bottom_out) * 0.5)[..., None]
    grid = np.where(below, low, upper)

    # ---- around the mouth, per pixel: the lip split, the opening and the interior
    near = (np.abs(u - field.uc) <= field.hw + 2 * COARSE_STEP) & (v >= top_out - 2 * COARSE_STEP) \
        & (v <= bottom_out + 2 * COARSE_STEP) & (keep > 0)
    near_rows = np.flatnonzero(near.any(axis=2).any(axis=0))
    near_cols = np.flatnonzero(near.any(axis=1).any(axis=0))
    if not near_rows.size:
        return warp_and_sample(crops, grid, COARSE_STEP)
    i0, i1 = max(int(near_rows[0]) - 1, 0), min(int(near_rows[-1]) + 2, nh)
    j0, j1 = max(int(near_cols[0]) - 1, 0), min(int(near_cols[-1]) + 2, nw)
    r0, r1 = i0 * COARSE_STEP, min((i1 - 1) * COARSE_STEP + 1, hc)
    c0, c1 = j0 * COARSE_STEP, min((j1 - 1) * COARSE_STEP + 1, wc)
    out = warp_and_sample(crops, grid, COARSE_STEP, skip=(i0, i1 - 1, j0, j1 - 1))  # the mouth's cells come next
    coarse = np.concatenate([low, upper, np.stack([top_out, bottom_out, rise, keep], axis=-1)], axis=-1)
    box = np.empty((t, r1 - r0, c1 - c0, 3), np.float32)
    lips = np.empty((t, r1 - r0, c1 - c0, len(_LIPS)), np.float32)
    _mouth_pixels(np.ascontiguousarray(crops), np.ascontiguousarray(coarse[:, i0:i1, j0:j1]), COARSE_STEP,
                  r0, c0, field.frame_to_crop(), box, lips)
    if (lips[..., _IN_GAP] > 0).any():
        _paint_opening(box, lips, (r0, c0), field, colours, bank, choice)
    out[:, r0:r1, c0:c1] = np.clip(np.rint(box), 0, 255).astype(np.uint8)
    return out


# What _mouth_pixels gives for each pixel around the mouth, in this order: its mouth-frame
# coordinates; the inner lip lines after the motion; the motion's fade; how much of the
# pixel is inside the opening.
_LIPS = ("u", "v", "top", "bottom", "keep", "in_gap")
_U, _V, _TOP, _BOTTOM, _KEEP, _IN_GAP = range(len(_LIPS))


@compiled
def _mouth_pixels(crops, coarse, step, r0, c0, frame, box, lips):  # pragma: no cover - compiled
    """Around the mouth, per pixel of the crops' rows r0.. and columns c0.. (box's size):
    the lip split (below the line between the moved inner lips, the lower lip's field;
    above it, the upper lip's), and inside the opening the template's own interior hanging
    from the upper lip. Writes the sampled colours to box and what the painting needs
    (_LIPS) to lips.

    coarse: (T, h, w, 8) on points ``step`` apart from pixel (r0, c0): the lower and upper
    lips' sampling positions (x, y each), the moved upper and lower inner lips, the upper
    lip's rise and the fade; frame: (T, 6) per frame the mouth
    frame and the crop's offset (see _MouthField.frame_to_crop).
    """
    height, width, channels = crops.shape[1], crops.shape[2], crops.shape[3]
    nh, nw = coarse.shape[1], coarse.shape[2]
    for t in range(box.shape[0]):
        ox, oy, ax, ay, off_x, off_y = frame[t, 0], frame[t, 1], frame[t, 2], frame[t, 3], frame[t, 4], frame[t, 5]
        for y in range(box.shape[1]):
            gy = y / step
            i = min(int(gy), max(nh - 2, 0))
            fy = gy - i if nh > 1 else 0.0
            i1 = min(i + 1, nh - 1)
            for x in range(box.shape[2]):
                gx = x / step
                j = min(int(gx), max(nw - 2, 0))
                fx = gx - j if nw > 1 else 0.0
                j1 = min(j + 1, nw - 1)
                w00, w01, w10, w11 = (1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy
                top = _at(coarse, t, i, j, i1, j1, 4, w00, w01, w10, w11)
                bottom = _at(coarse, t, i, j, i1, j1, 5, w00, w01, w10, w11)
                keep = _at(coarse, t, i, j, i1, j1, 7, w00, w01, w10, w11)
                rx, ry = x + c0 + off_x - ox, y + r0 + off_y - oy
                u, v = rx * ax + ry * ay, ry * ax - rx * ay
                in_gap = min(max(v - top, 0.0), 1.0) * min(max(bottom - v, 0.0), 1.0) * keep
                if in_gap > 0:  # the template's own interior, hanging from the upper lip
                    hung = v - _at(coarse, t, i, j, i1, j1, 6, w00, w01, w10, w11)
                    sx, sy = ox + u * ax - hung * ay - off_x, oy + u * ay + hung * ax - off_y
                else:
                    k = 0 if v >= (top + bottom) * 0.5 else 2  # the lower lip's field, or the upper's
                    sx = _at(coarse, t, i, j, i1, j1, k, w00, w01, w10, w11)
                    sy = _at(coarse, t, i, j, i1, j1, k + 1, w00, w01, w10, w11)
                at = bilinear_at(width, height, sx, sy)
                for c in range(channels):
                    box[t, y, x, c] = bilinear(crops, t, c, at)
                lips[t, y, x, _U], lips[t, y, x, _V], lips[t, y, x, _TOP] = u, v, top
                lips[t, y, x, _BOTTOM], lips[t, y, x, _KEEP], lips[t, y, x, _IN_GAP] = bottom, keep, in_gap


@compiled
def _at(coarse, t, i, j, i1, j1, k, w00, w01, w10, w11):  # pragma: no cover - compiled
    """Channel k of coarse between its points (i, j) and (i1, j1), bilinearly."""
    return coarse[t, i, j, k] * w00 + coarse[t, i, j1, k] * w01 + coarse[t, i1, j, k] * w10 + coarse[t, i1, j1, k] * w11


_EDGE_PX = 2.5  # half-width of the softened band along each inner lip
_WINDOW_MARGIN = 4  # pixels kept around the opening: more than the band plus the blur's reach


def _paint_opening(box: np.ndarray, lips: np.ndarray, origin: tuple[int, int], field: _MouthField,
                   colours: InteriorColours, bank: SampleBank | None, choice: SampleChoice | None) -> None:
    """Paint the mouth interior into the (T, H, W, 3) pixels ``box`` around the mouth, in place.

    ``lips`` holds what :func:`_mouth_pixels` found for each of those pixels (_LIPS);
    ``origin`` is the crop pixel (row, column) of box's first. Only the window that holds
    the opening in some frame of the batch is touched, and within it the interior is drawn
    only where the lips part.
    """
    inside_any = lips[..., _IN_GAP] > 0
    rows = np.flatnonzero(inside_any.any(axis=2).any(axis=0))
    cols = np.flatnonzero(inside_any.any(axis=1).any(axis=0))
    h, w = box.shape[1:3]
    r = slice(max(int(rows[0]) - _WINDOW_MARGIN, 0), min(int(rows[-1]) + _WINDOW_MARGIN + 1, h))
    c = slice(max(int(cols[0]) - _WINDOW_MARGIN, 0), min(int(cols[-1]) + _WINDOW_MARGIN + 1, w))
    win, near = box[:, r, c], lips[:, r, c]  # views: painting win paints box
    before = win.copy()

    t_of, y_of, x_of = np.nonzero(near[..., _IN_GAP] > 0)
    at = (t_of, y_of, x_of)
    u, v, top, bottom, in_gap = (near[..., k][at] for k in (_U, _V, _TOP, _BOTTOM, _IN_GAP))
    gap = np.maximum(bottom - top, 1e-3)
    depth = v - top
    # the template's own opening, exactly: where the drawn interior gives way to the
    # template's own is a sharp edge, which interpolating it from the coarse grid moves
    up, lo = field.inner_lips(near[..., _U])
    own_gap = np.maximum(lo - up, 0.0)[at]
    drawn = draw_interior(t_of, (u - field.uc[t_of, 0, 0]) / field.half_open[t_of, 0, 0],
                          np.clip(depth / gap, 0.0, 1.0), gap, field.w, field.half_open, colours, bank, choice)
    own_px = win[at]
    # the template's own interior, hanging from the upper lip, where it had one
    own = (1.0 - _smoothstep(0.6 * own_gap, own_gap + 1e-3, depth))[:, None]
    inside = drawn + (own_px - drawn) * own
    if colours.grain > 0:  # grain as fine and as strong as the face's own, or the mouth looks pasted on
        shade = np.clip(inside.mean(axis=-1, keepdims=True) / 80.0, 0.3, 1.0)  # dark areas show less
        xs = x_of + (origin[1] + c.start) + field.off_x[t_of, 0, 0]  # frame pixels: the grain stays put
        ys = y_of + (origin[0] + r.start) + field.off_y[t_of, 0, 0]
        inside += (np.float32(colours.grain) * grain_noise(xs, ys))[:, None] * shade * (1.0 - own)
    win[at] = own_px + (inside - own_px) * in_gap[:, None]
    # a soft inner-lip edge: blur a band along both lips where they part (never where they
    # meet, so a closed mouth stays exactly as warped)
    _soften_inner_lips(win, win.copy(), np.ascontiguousarray(near), _EDGE_PX)
    # in silence the template's own mouth, parted or not, is shown exactly as it is
    win[...] = before + (win - before) * field.a[..., None]


@compiled
def _soften_inner_lips(win, painted, near, edge):  # pragma: no cover - compiled
    """Blend each pixel of win towards the mean of its 3x3 neighbourhood in ``painted`` (the
    window's border pixels: of the neighbours inside it), by 0.8 in a band ``edge`` pixels
    wide along both inner lips, where they part."""
    rows, cols, channels = win.shape[1], win.shape[2], win.shape[3]
    for t in range(win.shape[0]):
        for y in range(rows):
            for x in range(cols):
                v, top = near[t, y, x, _V], near[t, y, x, _TOP]
                bottom, keep = near[t, y, x, _BOTTOM], near[t, y, x, _KEEP]
                parted = smoothstep_scalar(0.5, 2.5, bottom - top) * keep
                band = max(1.0 - smoothstep_scalar(0.0, edge, abs(v - top)),
                           1.0 - smoothstep_scalar(0.0, edge, abs(bottom - v)))
                weight = 0.8 * band * parted
                if weight <= 0.0:
                    continue
                ya, yb, xa, xb = max(y - 1, 0), min(y + 2, rows), max(x - 1, 0), min(x + 2, cols)
                count = (yb - ya) * (xb - xa)
                for ch in range(channels):
                    total = 0.0
                    for yy in range(ya, yb):
                        for xx in range(xa, xb):
                            total += painted[t, yy, xx, ch]
                    win[t, y, x, ch] += (total / count - win[t, y, x, ch]) * weight


@compiled
def _signed_distance(u, v, contour, out):  # pragma: no cover - compiled; tested through the warp
    """out[t, i, j]: distance from (u, v)[t, i, j] to frame t's jaw line (contour: (T, P, 2)
    points in the mouth frame), positive inside the line closed across the top."""
    points = contour.shape[1]
    for t in range(u.shape[0]):
        for i in range(u.shape[1]):
            for j in range(u.shape[2]):
                pu, pv = u[t, i, j], v[t, i, j]
                nearest = np.inf
                crossings = 0
                for k in range(points):
                    au, av = contour[t, k, 0], contour[t, k, 1]
                    last = k + 1 == points  # the closing segment counts for inside, not for distance
                    bu, bv = contour[t, 0 if last else k + 1, 0], contour[t, 0 if last else k + 1, 1]
                    if not last:
                        eu, ev = bu - au, bv - av
                        along = min(max(((pu - au) * eu + (pv - av) * ev) / max(eu * eu + ev * ev, 1e-6), 0.0), 1.0)
                        du, dv = pu - au - along * eu, pv - av - along * ev
                        nearest = min(nearest, du * du + dv * dv)
                    # even-odd rule along +u
                    if (av > pv) != (bv > pv) and pu < au + (pv - av) * (bu - au) / (bv - av):
                        crossings += 1
                distance = np.sqrt(nearest)
                out[t, i, j] = distance if crossings % 2 == 1 else -distance


class _MouthField:
    """The motion model of one batch, as functions of mouth-frame coordinates (u, v)."""

    def __init__(self, g: MouthGeometry, rows: np.ndarray, pose: MouthPose, offsets: np.ndarray):
        t = offsets.shape[0]

        def take(name: str) -> np.ndarray:
            return np.asarray(getattr(g, name)[rows], np.float32)

        def col(x: np.ndarray) -> np.ndarray:
            return np.asarray(x, np.float32).reshape(t, 1, 1)

        self.t = t
        self.off_x, self.off_y = col(offsets[:, 0]), col(offsets[:, 1])
        origin, axis, inner_u = take("origin"), take("axis"), take("inner_u")
        self.ox, self.oy = col(origin[:, 0]), col(origin[:, 1])
        self.ax, self.ay = col(axis[:, 0]), col(axis[:, 1])
        self.w = col(take("width"))
        self.uc, self.hw = col(take("centre_u")), np.maximum(col(take("half_width")), 1.0)
        self.u_in0, self.u_in1 = col(inner_u[:, 0]), col(inner_u[:, 1])
        self.hw_in = np.maximum((self.u_in1 - self.u_in0) / 2, 1.0)
        self.upper, self.lower = take("upper"), take("lower")
        self.outer_upper, self.outer_lower = take("outer_upper"), take("outer_lower")
        self.nose_v = col(take("nose_v"))
        self.contour = take("contour")  # (T, 17, 2)
        self.o, self.s = col(pose.openness), col(pose.spread)
        self.p, self.a = col(pose.protrusion), col(pose.activity)
        # corners: spread out, rounded in, a little in as the jaw opens; all only while speaking
        self.corner_amount = self.a * self.w * (SPREAD * self.s - ROUND * self.p - NARROW_WHEN_OPEN * self.o)
        # half the width of the opening: between the inner-lip corners (the outer ones are
        # where the lips meet, never apart), moved with the corners, and pursed to a smaller,
        # rounder hole when the lips push forward
        self.half_open = np.maximum((self.hw_in + self.corner_amount) * (1.0 - ROUND_OPENING * self.p), 1.0)
        # rounded lips make a rounder, spread ones a flatter opening
        self.lens_power = LENS_POWER - 0.25 * self.p + 0.15 * np.maximum(self.s, 0.0)
        _, drop_mid, _, _, _ = self.lip_motion(self.uc)
        self.jaw_drop = JAW_SHARE * np.maximum(drop_mid, 0.0)  # the chin follows the lower lip's middle
        self.top_v = self.nose_v + 0.5 * (_poly(self.outer_upper, self.uc) - self.nose_v)

    def to_uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rx, ry = x - self.ox, y - self.oy
        return rx * self.ax + ry * self.ay, ry * self.ax - rx * self.ay

    def frame_to_crop(self) -> np.ndarray:
        """(T, 6) float64 per frame: the mouth frame's origin x, y and axis x, y, and the
        crop's offset x, y (what :func:`_mouth_pixels` needs to do to_uv and to_grid)."""
        return np.stack([x.reshape(self.t) for x in (self.ox, self.oy, self.ax, self.ay, self.off_x, self.off_y)],
                        axis=1).astype(np.float64)

    def to_grid(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(T, h, w, 2) crop pixel x, y of mouth-frame points."""
        x = self.ox + u * self.ax - v * self.ay - self.off_x
        y = self.oy + u * self.ay + v * self.ax - self.off_y
        return np.stack([x, y], axis=-1)

    def keep(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """How much of the motion a point keeps: 0 outside the face contour and in a band just
        inside it, rising to 1 over CONTOUR_FALLOFF mouth widths; 0 above the nose base."""
        inside_by = self._inside_distance(u, v)
        contour = _smoothstep(CONTOUR_ZERO_BAND, CONTOUR_ZERO_BAND + CONTOUR_FALLOFF * self.w, inside_by)
        return contour * _smoothstep(self.nose_v, self.top_v, v)

    def _inside_distance(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Distance (pixels) from (u, v) to the jaw line, positive inside the contour (the jaw
        line closed across the top), negative outside."""
        out = np.empty(u.shape, np.float32)
        _signed_distance(np.ascontiguousarray(u, np.float32), np.ascontiguousarray(v, np.float32),
                         np.ascontiguousarray(self.contour), out)
        return out

    def inner_lips(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The template's own upper and lower inner lip lines (v) at u."""
        clamped = np.minimum(np.maximum(u, self.u_in0), self.u_in1)
        return _poly(self.upper, clamped), _poly(self.lower, clamped)

    def lip_motion(self, u: np.ndarray) -> tuple[np.ndarray, ...]:
        """(upper lip shift, lower lip shift, upper inner lip v, lower inner lip v, pout) at u;
        down is +. The shifts take the inner lips from the template's own gap ``activity`` of
        the way to the target opening; pout is how far each lip's outer edge moves outward
        beyond its inner edge."""
        up, lo = self.inner_lips(u)
        x2 = ((u - self.uc) / self.half_open) ** 2
        lens = np.maximum(1.0 - x2, 0.0) ** self.lens_power
        target = self.o * MAX_OPENING * self.w * lens * (1.0 - SPREAD_CLOSES * np.maximum(self.s, 0.0))
        change = self.a * (target - np.maximum(lo - up, 0.0))
        pout = self.a * self.p * POUT * self.w * np.sqrt(np.maximum(1.0 - x2, 0.0))
        return -UPPER_SHARE * change, (1.0 - UPPER_SHARE) * change, up, lo, pout

    def corner_shift(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        rel = (u - self.uc) / self.hw
        beyond = np.maximum(np.abs(rel) - 1.0, 0.0) * self.hw / (0.3 * self.w)
        return self.corner_amount * np.clip(rel, -1.0, 1.0) * _gauss(beyond) * _gauss(v / (0.4 * self.w))

    def lower_field(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        _, drop, _, lo, pout = self.lip_motion(u)
        clamped = np.clip(u, self.uc - self.hw, self.uc + self.hw)
        outer = np.maximum(_poly(self.outer_lower, clamped), lo + 1.0)
        # the lower lip moves as a whole (its outer edge further when pouting)...
        lip = drop + pout * np.clip((v - lo) / (outer - lo), 0.0, 1.0)
        # ...and below it the motion becomes the jaw's, which the contour's falloff then ends
        jaw = self.jaw_drop * _gauss((u - self.uc) / (JAW_SIGMA * self.w))
        blend = _smoothstep(0.0, LIP_TO_JAW_DEPTH * self.w, v - outer)
        return lip + (jaw - lip) * blend

    def upper_field(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        rise, _, up, _, pout = self.lip_motion(u)
        clamped = np.clip(u, self.uc - self.hw, self.uc + self.hw)
        outer = np.minimum(_poly(self.outer_upper, clamped), up - 1.0)
        lip = rise - pout * np.clip((up - v) / (up - outer), 0.0, 1.0)
        fade = 1.0 - _smoothstep(0.0, np.maximum(outer - self.nose_v, 1.0), outer - v)
        return lip * fade

    def invert(self, u: np.ndarray, v: np.ndarray, vertical) -> tuple[np.ndarray, np.ndarray]:
        """Template point that a forward field moves onto (u, v): fixed-point iteration."""
        pu, pv = u, v
        for _ in range(_FIXED_POINT_STEPS):
            pu, pv = u - self.corner_shift(pu, pv), v - vertical(pu, pv)
        return pu, pv

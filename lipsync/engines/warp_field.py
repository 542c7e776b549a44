"""The motion model of the ``warp`` engine's lower face, and its sampling grid: compiled
loops over the points of a coarse grid on each crop (the per-pixel work is in
:mod:`lipsync.engines.warp_mouth` and :mod:`lipsync.engines.warp_kernels`).

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
  how far a lip moves is the opening's profile *where the lip is shown*: with the corners
  drawn in, a point of the lip lands nearer the middle than it stood;
* below the lower lip the motion blends into a gentler jaw motion, above the upper lip it
  fades out before the nose;
* the corners move in (rounded -- by a low F2 or by protrusion, counted once -- and a
  little as the jaw opens) or out (spread) along ``u``;
* where the lips part, the mouth interior is drawn (:mod:`lipsync.engines.warp_interior`).

All of it is confined by the face's own contour: the jaw line of the 68 landmarks
(points 0-16) closed across the top. The motion fades to zero over a band inside the
contour and is exactly zero for some pixels before it, so a collar, a background edge
or hair beside the cheek never bends; outside it the output equals the input bit for bit.

The fields above are *forward* displacements (where a template pixel goes); sampling needs
the inverse (where an output pixel comes from), found by a few fixed-point iterations,
which converge because the fields are smooth and compress nothing more than ~2x. They are
computed only on a grid COARSE_STEP pixels apart, and only where the motion reaches:
everywhere else a grid point samples its own pixel.

Each frame of a batch is described by one row of numbers (:func:`frame_parameters`), which
the compiled functions below read by the column names ``F_OX`` ... (numba compiles them in
as constants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsync.engines.warp_geometry import MouthGeometry
from lipsync.engines.warp_kernels import compiled, smoothstep_scalar

# Shape of the motion, in mouth widths / fractions. Chosen by eye on real faces.
# The lip gap at openness 1, mid-mouth, in face widths (contour point 0 to 16): the jaw
# drops by a share of the face, not of the lips -- a small mouth opens as far as a wide one
# (0.185 keeps the astronaut fixtures' opening where it was chosen, 0.38 of their smiling
# mouths; a painted face's narrow mouth opened 0.38 of its own width, too little to read)
FULL_OPENING = 0.185
UPPER_SHARE = 0.25  # share of the opening taken by the upper lip
SPREAD = 0.16  # corners move out this much at spread 1 (each, in mouth widths); at 0.10 /i/ read no wider than rest
SPREAD_CLOSES = 0.3  # and the opening is this much smaller at spread 1 (/i/: lips drawn flat, jaw nearly shut)
ROUND = 0.16  # corners come in this much when rounded (spread -1 or protrusion 1, or both)
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


# The columns of a frame's row of parameters (frame_parameters): the crop's offset in the
# frame; the mouth frame's origin and axis; the mouth's width, the middle and half-width
# between its corners, the inner lips' corners (u); the nose's base and where the upper
# lip's fade ends (v); the frame's viseme; what follows from it (the corners' shift, half
# the opening's width, the opening's profile, the chin's drop); then the lip curves' three
# coefficients each; last the lip gap at full opening.
(F_OFF_X, F_OFF_Y, F_OX, F_OY, F_AX, F_AY, F_WIDTH, F_UC, F_HW, F_U_IN0, F_U_IN1, F_NOSE_V, F_TOP_V,
 F_OPEN, F_SPREAD, F_PROTRUDE, F_ACTIVE, F_CORNER, F_HALF_OPEN, F_LENS_POWER, F_JAW_DROP) = range(21)
F_UPPER, F_LOWER, F_OUTER_UPPER, F_OUTER_LOWER = 21, 24, 27, 30
F_FULL_OPEN = 33  # the lip gap at openness 1 (pixels)
PARAMETERS = 34

# What coarse_fields gives for each coarse point, in this order: the crop pixel (x, y) the
# lower and the upper lip's fields sample; the inner lips after the motion (v); how much of
# the motion the point keeps.
COARSE_CHANNELS = ("low_x", "low_y", "up_x", "up_y", "top", "bottom", "keep")
C_LOW_X, C_LOW_Y, C_UP_X, C_UP_Y, C_TOP, C_BOTTOM, C_KEEP = range(len(COARSE_CHANNELS))


@dataclass(frozen=True)
class MouthPose:
    """The viseme of each frame of a batch, as (T,) float32 arrays (see :class:`lipsync.mouth.MouthTrack`)."""

    openness: np.ndarray
    spread: np.ndarray
    protrusion: np.ndarray
    activity: np.ndarray


def frame_parameters(g: MouthGeometry, rows: np.ndarray, pose: MouthPose, offsets: np.ndarray) -> np.ndarray:
    """(T, PARAMETERS) float64: each frame's row of the motion model, for template frames
    ``rows`` of ``g`` posed as ``pose``, in crops whose top-left pixels are ``offsets`` (T, 2)."""
    t = len(rows)
    table = np.empty((t, PARAMETERS), np.float64)
    table[:, F_OFF_X], table[:, F_OFF_Y] = offsets[:, 0], offsets[:, 1]
    table[:, F_OX], table[:, F_OY] = g.origin[rows, 0], g.origin[rows, 1]
    table[:, F_AX], table[:, F_AY] = g.axis[rows, 0], g.axis[rows, 1]
    width = table[:, F_WIDTH] = g.width[rows]
    table[:, F_FULL_OPEN] = full_opening(g, rows)
    table[:, F_UC], table[:, F_HW] = g.centre_u[rows], np.maximum(g.half_width[rows], 1.0)
    table[:, F_U_IN0], table[:, F_U_IN1] = g.inner_u[rows, 0], g.inner_u[rows, 1]
    table[:, F_NOSE_V] = g.nose_v[rows]
    for column, curve in ((F_UPPER, g.upper), (F_LOWER, g.lower), (F_OUTER_UPPER, g.outer_upper),
                          (F_OUTER_LOWER, g.outer_lower)):
        table[:, column:column + 3] = curve[rows]
    o, s, p, a = (np.asarray(x, np.float64) for x in (pose.openness, pose.spread, pose.protrusion, pose.activity))
    table[:, F_OPEN], table[:, F_SPREAD], table[:, F_PROTRUDE], table[:, F_ACTIVE] = o, s, p, a
    # corners: spread out, rounded in, a little in as the jaw opens; all only while speaking.
    # Rounding is one gesture with two cues, a low second formant (spread < 0) and energy
    # low in the spectrum (protrusion): together they bring the corners in ROUND at most.
    # Added up, a loud /u/ with both at full drew each corner 0.37 mouth widths in, and on
    # a wide smile the opening closed to a sliver that the referee read as shut at every openness
    rounding = np.minimum(np.maximum(-s, 0.0) + p, 1.0)
    corner = table[:, F_CORNER] = a * width * (SPREAD * np.maximum(s, 0.0) - ROUND * rounding - NARROW_WHEN_OPEN * o)
    # half the width of the opening: between the inner-lip corners (the outer ones are
    # where the lips meet, never apart), moved with the corners, and pursed to a smaller,
    # rounder hole when the lips push forward
    inner_half = np.maximum((table[:, F_U_IN1] - table[:, F_U_IN0]) / 2, 1.0)
    table[:, F_HALF_OPEN] = np.maximum((inner_half + corner) * (1.0 - ROUND_OPENING * p), 1.0)
    # rounded lips make a rounder, spread ones a flatter opening
    table[:, F_LENS_POWER] = LENS_POWER - 0.25 * p + 0.15 * np.maximum(s, 0.0)
    _complete_parameters(table)
    return table


def full_opening(g: MouthGeometry, rows: np.ndarray) -> np.ndarray:
    """(T,) the lip gap (pixels) at openness 1 in template frames ``rows`` of ``g``."""
    return FULL_OPENING * g.face_width[rows]


@compiled
def _complete_parameters(table):  # pragma: no cover - compiled
    """The columns that need the model itself: the chin's drop and the upper lip's fade."""
    for t in range(table.shape[0]):
        uc = table[t, F_UC]
        table[t, F_JAW_DROP] = JAW_SHARE * max(lip_motion(table[t], uc)[1], 0.0)  # the chin follows the lip's middle
        nose = table[t, F_NOSE_V]
        table[t, F_TOP_V] = nose + 0.5 * (_poly(table[t], F_OUTER_UPPER, uc) - nose)


@compiled(inline=True)
def _gauss(x):  # pragma: no cover - compiled
    """exp(-x^2), with the tail cut at e^-30 (denormal floats are very slow on CPUs); 1 at 0
    without calling exp."""
    return 1.0 if x == 0.0 else np.exp(-min(x * x, 30.0))


@compiled(inline=True)
def _poly(frame, column, u):  # pragma: no cover - compiled
    """The quadratic a u^2 + b u + c whose coefficients start at frame[column]."""
    return (frame[column] * u + frame[column + 1]) * u + frame[column + 2]


@compiled(inline=True)
def to_uv(frame, x, y):  # pragma: no cover - compiled
    """Mouth-frame (u, v) of the crop pixel (x, y)."""
    rx, ry = x + frame[F_OFF_X] - frame[F_OX], y + frame[F_OFF_Y] - frame[F_OY]
    return rx * frame[F_AX] + ry * frame[F_AY], ry * frame[F_AX] - rx * frame[F_AY]


@compiled(inline=True)
def to_crop(frame, u, v):  # pragma: no cover - compiled
    """Crop pixel (x, y) of the mouth-frame point (u, v)."""
    ax, ay = frame[F_AX], frame[F_AY]
    return frame[F_OX] + u * ax - v * ay - frame[F_OFF_X], frame[F_OY] + u * ay + v * ax - frame[F_OFF_Y]


@compiled(inline=True)
def inner_lips(frame, u):  # pragma: no cover - compiled
    """The template's own upper and lower inner lip lines (v) at u."""
    clamped = min(max(u, frame[F_U_IN0]), frame[F_U_IN1])
    return _poly(frame, F_UPPER, clamped), _poly(frame, F_LOWER, clamped)


@compiled(inline=True)
def lip_motion(frame, u):  # pragma: no cover - compiled
    """(upper lip shift, lower lip shift, upper inner lip v, lower inner lip v, pout) at u;
    down is +. The shifts take the inner lips from the template's own gap ``activity`` of
    the way to the target opening; pout is how far each lip's outer edge moves outward
    beyond its inner edge."""
    up, lo = inner_lips(frame, u)
    across = (u - frame[F_UC]) / frame[F_HALF_OPEN]
    inside = 1.0 - across * across
    lens = inside ** frame[F_LENS_POWER] if inside > 0.0 else 0.0
    width, active = frame[F_WIDTH], frame[F_ACTIVE]
    target = frame[F_OPEN] * frame[F_FULL_OPEN] * lens * (1.0 - SPREAD_CLOSES * max(frame[F_SPREAD], 0.0))
    change = active * (target - max(lo - up, 0.0))
    pout = active * frame[F_PROTRUDE] * POUT * width * np.sqrt(max(inside, 0.0))
    return -UPPER_SHARE * change, (1.0 - UPPER_SHARE) * change, up, lo, pout


@compiled(inline=True)
def _corner_shift(frame, u, v):  # pragma: no cover - compiled
    corner = frame[F_CORNER]
    if corner == 0.0:
        return 0.0
    hw, width = frame[F_HW], frame[F_WIDTH]
    rel = (u - frame[F_UC]) / hw
    beyond = max(abs(rel) - 1.0, 0.0) * hw / (0.3 * width)
    return corner * min(max(rel, -1.0), 1.0) * _gauss(beyond) * _gauss(v / (0.4 * width))


@compiled(inline=True)
def _lower_field(frame, u, v, shown_u):  # pragma: no cover - compiled
    # the lip's motion is the one wanted where the point is shown (shown_u): with the
    # corners drawn in, it lands nearer the middle than it stood (u), and taken where it
    # stood, the lip's drop was narrowed once more than the opening -- a loud rounded
    # vowel's lower lip hung in a V inside its oval
    _, drop, _, _, pout = lip_motion(frame, shown_u)
    lo = inner_lips(frame, u)[1]
    uc, hw, width = frame[F_UC], frame[F_HW], frame[F_WIDTH]
    outer = max(_poly(frame, F_OUTER_LOWER, min(max(u, uc - hw), uc + hw)), lo + 1.0)
    # the lower lip moves as a whole (its outer edge further when pouting)...
    lip = drop + pout * min(max((v - lo) / (outer - lo), 0.0), 1.0)
    # ...and below it the motion becomes the jaw's, which the contour's falloff then ends
    jaw = frame[F_JAW_DROP] * _gauss((u - uc) / (JAW_SIGMA * width))
    blend = smoothstep_scalar(0.0, LIP_TO_JAW_DEPTH * width, v - outer)
    return lip + (jaw - lip) * blend


@compiled(inline=True)
def _upper_field(frame, u, v, shown_u):  # pragma: no cover - compiled
    rise, _, _, _, pout = lip_motion(frame, shown_u)  # as the lower lip's (_lower_field)
    up = inner_lips(frame, u)[0]
    uc, hw = frame[F_UC], frame[F_HW]
    outer = min(_poly(frame, F_OUTER_UPPER, min(max(u, uc - hw), uc + hw)), up - 1.0)
    lip = rise - pout * min(max((up - v) / (up - outer), 0.0), 1.0)
    fade = 1.0 - smoothstep_scalar(0.0, max(outer - frame[F_NOSE_V], 1.0), outer - v)
    return lip * fade


@compiled(inline=True)
def _invert(frame, u, v, lower):  # pragma: no cover - compiled
    """The template point that the lower (or the upper) lip's forward field moves onto (u, v):
    fixed-point iteration."""
    pu, pv = u, v
    for _ in range(_FIXED_POINT_STEPS):
        shift = _lower_field(frame, pu, pv, u) if lower else _upper_field(frame, pu, pv, u)
        pu, pv = u - _corner_shift(frame, pu, pv), v - shift
    return pu, pv


@compiled(inline=True)
def _keep(frame, contour, u, v):  # pragma: no cover - compiled
    """How much of the motion a point keeps: 0 outside the face contour and in a band just
    inside it, rising to 1 over CONTOUR_FALLOFF mouth widths; 0 above the nose base."""
    below_nose = smoothstep_scalar(frame[F_NOSE_V], frame[F_TOP_V], v)
    if below_nose == 0.0:
        return 0.0
    zero = CONTOUR_ZERO_BAND
    inside_by = _inside_distance(contour, u, v)
    return smoothstep_scalar(zero, zero + CONTOUR_FALLOFF * frame[F_WIDTH], inside_by) * below_nose


@compiled(inline=True)
def _inside_distance(contour, pu, pv):  # pragma: no cover - compiled
    """Distance (pixels) from (pu, pv) to the jaw line (contour: (P, 2) points in the mouth
    frame), positive inside the line closed across the top, negative outside."""
    points = contour.shape[0]
    nearest = np.inf
    crossings = 0
    for k in range(points):
        au, av = contour[k, 0], contour[k, 1]
        last = k + 1 == points  # the closing segment counts for inside, not for distance
        bu, bv = contour[0 if last else k + 1, 0], contour[0 if last else k + 1, 1]
        if not last:
            eu, ev = bu - au, bv - av
            along = min(max(((pu - au) * eu + (pv - av) * ev) / max(eu * eu + ev * ev, 1e-6), 0.0), 1.0)
            du, dv = pu - au - along * eu, pv - av - along * ev
            nearest = min(nearest, du * du + dv * dv)
        # even-odd rule along +u
        if (av > pv) != (bv > pv) and pu < au + (pv - av) * (bu - au) / (bv - av):
            crossings += 1
    distance = np.sqrt(nearest)
    return distance if crossings % 2 == 1 else -distance


def coarse_size(n: int) -> int:
    """Points of the coarse grid along a crop side of n pixels (the last one at or past its end)."""
    return (max(n, 2) - 2) // COARSE_STEP + 2


@compiled
def coarse_fields(table, contour, grid, coarse, near):  # pragma: no cover - compiled; tested through the warp
    """The motion on the coarse grid of every crop of a batch: points COARSE_STEP pixels apart
    (point (i, j) is crop pixel (j * step, i * step)).

    table: (T, PARAMETERS) frame_parameters; contour: (T, 17, 2) the face contours (u, v).
    Writes grid (T, h, w, 2), the crop pixel x, y each point samples (the upper lip's field
    above the line between the moved inner lips, the lower's below it); coarse (T, h, w, 7),
    COARSE_CHANNELS; and near (T, 4), each crop's points [i0, i1) x [j0, j1) around the
    moving lips: those within 2 steps of them, and one point more on every side (i0 >= i1
    where no lip moves). A point that keeps none of the motion samples its own pixel exactly.
    """
    step = COARSE_STEP
    nh, nw = grid.shape[1], grid.shape[2]
    for t in range(grid.shape[0]):
        frame = table[t]
        uc, hw = frame[F_UC], frame[F_HW]
        i0, i1, j0, j1 = nh, 0, nw, 0
        for i in range(nh):
            for j in range(nw):
                x, y = float(j * step), float(i * step)
                u, v = to_uv(frame, x, y)
                rise, drop, up, lo, _ = lip_motion(frame, u)
                keep = _keep(frame, contour[t], u, v)
                low_x, low_y, up_x, up_y = x, y, x, y
                if keep > 0.0:
                    low_u, low_v = _invert(frame, u, v, True)
                    low_x, low_y = to_crop(frame, u + (low_u - u) * keep, v + (low_v - v) * keep)
                    up_u, up_v = _invert(frame, u, v, False)
                    up_x, up_y = to_crop(frame, u + (up_u - u) * keep, v + (up_v - v) * keep)
                top, bottom = up + rise * keep, lo + drop * keep
                grid[t, i, j, 0], grid[t, i, j, 1] = (low_x, low_y) if v >= (top + bottom) * 0.5 else (up_x, up_y)
                coarse[t, i, j, C_LOW_X], coarse[t, i, j, C_LOW_Y] = low_x, low_y
                coarse[t, i, j, C_UP_X], coarse[t, i, j, C_UP_Y] = up_x, up_y
                coarse[t, i, j, C_TOP], coarse[t, i, j, C_BOTTOM] = top, bottom
                coarse[t, i, j, C_KEEP] = keep
                if keep > 0.0 and abs(u - uc) <= hw + 2 * step and top - 2 * step <= v <= bottom + 2 * step:
                    i0, i1, j0, j1 = min(i0, i), max(i1, i + 1), min(j0, j), max(j1, j + 1)
        if i0 < i1:
            i0, i1, j0, j1 = max(i0 - 1, 0), min(i1 + 1, nh), max(j0 - 1, 0), min(j1 + 1, nw)
        near[t, 0], near[t, 1], near[t, 2], near[t, 3] = i0, i1, j0, j1

"""The ``warp`` engine's work per pixel around the mouth, one compiled pass per crop.

Around the mouth the warp cannot be interpolated from the coarse grid alone: where the
lips part, the motion jumps from the upper lip's field to the lower lip's, and the opening
between them shows the mouth's interior. :func:`mouth_cells` marks the cells of the coarse
grid where that happens (on a 720p presenter, about a tenth of the crop's cells), and for
every pixel of them :func:`mouth_pixels`

1. samples the template: below the line between the moved inner lips with the lower lip's
   field, above it with the upper lip's, and inside the opening the template's own interior
   hanging from the upper lip;
2. where the lips part, paints the interior (:func:`lipsync.engines.warp_interior.interior_colour`)
   over it, giving way to the template's own where the template's mouth was already that
   far open, grained like the skin around it;
3. softens a band along both inner lips where they part (never where they meet, so a
   closed mouth stays exactly as warped);
4. and blends the painting by the frame's activity: in silence the template's own mouth,
   parted or not, is shown exactly as it is.

Everything else the warp does (:func:`lipsync.engines.warp_kernels.warp_and_sample`) skips
those cells; their pixels are written to the output once, rounded. A frame comes out the
same whatever frames share its batch.
"""

from __future__ import annotations

import numpy as np

from lipsync.engines.warp_field import (C_BOTTOM, C_KEEP, C_TOP, COARSE_STEP, F_ACTIVE, F_HALF_OPEN, F_OFF_X,
                                        F_OFF_Y, F_UC, F_WIDTH, inner_lips, to_uv)
from lipsync.engines.warp_interior import grain_noise, interior_colour
from lipsync.engines.warp_kernels import bilinear, bilinear_at, cell_pixels, compiled, smoothstep_scalar

_EDGE_PX = 2.5  # half-width of the softened band along each inner lip
_PARTED = 0.5  # lips less than this far apart (pixels) meet: no band is softened there
_WINDOW_MARGIN = 4  # pixels painted and softened around the opening: more than the band plus the blur's reach

# What mouth_pixels keeps of each pixel between its passes: the warped colour (3), the
# painted one (3), then the pixel's mouth-frame coordinates, the inner lip lines after the
# motion, the motion's fade and how much of the pixel is inside the opening
_BEFORE, _PAINTED, _U, _V, _LIP_TOP, _LIP_BOTTOM, _LIP_KEEP, _IN_GAP = 0, 3, 6, 7, 8, 9, 10, 11
_WORK = 12


@compiled
def mouth_cells(coarse, table, near, mouth):  # pragma: no cover - compiled; tested through the warp
    """Mark in ``mouth`` (T, h - 1, w - 1) the cells of the coarse grid whose pixels need the
    work per pixel: those between each crop's points ``near`` (T, 4) (see
    :func:`lipsync.engines.warp_field.coarse_fields`) that the line between the moved inner
    lips crosses (where the field jumps from one lip's to the other's), that may hold the
    opening, or a pixel of the softened band along a parted lip. Everywhere else,
    interpolating the coarse grid gives what the work per pixel would: between a cell's
    corners, v and the lip lines are interpolated the same way."""
    step = COARSE_STEP
    mouth[...] = False
    for t in range(mouth.shape[0]):
        frame = table[t]
        i0, i1, j0, j1 = near[t, 0], near[t, 1], near[t, 2], near[t, 3]
        for i in range(i0, min(i1, mouth.shape[1] + 1) - 1):
            for j in range(j0, min(j1, mouth.shape[2] + 1) - 1):
                below = above = 0
                widest, kept = -np.inf, 0.0
                # v - top and bottom - v at the corners: every pixel's between them lie within their range
                a_lo, a_hi, b_lo, b_hi = np.inf, -np.inf, np.inf, -np.inf
                for ci, cj in ((i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)):
                    v = to_uv(frame, float(cj * step), float(ci * step))[1]
                    top, bottom = coarse[t, ci, cj, C_TOP], coarse[t, ci, cj, C_BOTTOM]
                    if v >= (top + bottom) * 0.5:
                        below += 1
                    else:
                        above += 1
                    widest, kept = max(widest, bottom - top), max(kept, coarse[t, ci, cj, C_KEEP])
                    a_lo, a_hi = min(a_lo, v - top), max(a_hi, v - top)
                    b_lo, b_hi = min(b_lo, bottom - v), max(b_hi, bottom - v)
                crossed = below > 0 and above > 0
                opening = kept > 0.0 and a_hi > 0.0 and b_hi > 0.0
                edge = (kept > 0.0 and widest > _PARTED
                        and ((a_lo < _EDGE_PX and a_hi > -_EDGE_PX) or (b_lo < _EDGE_PX and b_hi > -_EDGE_PX)))
                mouth[t, i, j] = crossed or opening or edge


@compiled
def mouth_pixels(crops, coarse, mouth, table, palette, grain, images, sample, share, gain,
                 out):  # pragma: no cover - compiled; tested through the warp
    """Write the pixels of the cells marked in ``mouth`` (T, h - 1, w - 1) into ``out`` (T, H,
    W, 3) uint8, from ``crops`` (the same shape); ``out`` holds the rest of the warp already.

    coarse: (T, h, w, 7) COARSE_CHANNELS of points COARSE_STEP pixels apart
    (:func:`lipsync.engines.warp_field.coarse_fields`, which also marks the cells); table:
    the frames' parameters (:func:`lipsync.engines.warp_field.frame_parameters`). What the
    interior is drawn from: palette (4, 3), grain (the skin's noise, levels), and per frame
    the mouth sample images[sample[t]] shown share[t] of the way, its colours times gain[t]
    (see :class:`lipsync.engines.warp_interior.SampleBank`).
    """
    step = COARSE_STEP
    height, width = crops.shape[1], crops.shape[2]
    nh, nw = coarse.shape[1], coarse.shape[2]
    # the work's pixels: every marked cell of the batch, and the painting's margin around them
    oy, y_end, ox, x_end = height, 0, width, 0
    for t in range(crops.shape[0]):
        for i in range(nh - 1):
            for j in range(nw - 1):
                if mouth[t, i, j]:
                    ya, yb, xa, xb = cell_pixels(step, i, j, nh, nw, height, width)
                    oy, y_end, ox, x_end = min(oy, ya), max(y_end, yb), min(ox, xa), max(x_end, xb)
    oy, ox = max(oy - _WINDOW_MARGIN, 0), max(ox - _WINDOW_MARGIN, 0)
    y_end, x_end = min(y_end + _WINDOW_MARGIN, height), min(x_end + _WINDOW_MARGIN, width)
    work = np.empty((max(y_end - oy, 0), max(x_end - ox, 0), _WORK))
    for t in range(crops.shape[0]):
        frame = table[t]
        y0, y1, x0, x1 = height, 0, width, 0  # the opening
        for i in range(nh - 1):
            for j in range(nw - 1):
                if mouth[t, i, j]:
                    ya, yb, xa, xb = cell_pixels(step, i, j, nh, nw, height, width)
                    opening = _sample_lips(crops, coarse, t, i, j, ya, yb, xa, xb, frame, work, oy, ox)
                    y0, y1, x0, x1 = min(y0, opening[0]), max(y1, opening[1]), min(x0, opening[2]), max(x1, opening[3])
        # painted and softened: the opening and _WINDOW_MARGIN pixels around it
        wy0, wy1 = max(y0 - _WINDOW_MARGIN, 0), min(y1 + _WINDOW_MARGIN, height)
        wx0, wx1 = max(x0 - _WINDOW_MARGIN, 0), min(x1 + _WINDOW_MARGIN, width)
        opened = y0 < y1
        if opened:
            _paint_opening(out, mouth, t, frame, work, oy, ox, wy0, wy1, wx0, wx1, palette, grain, images,
                           sample[t], share[t], gain[t])
        active = frame[F_ACTIVE]
        for i in range(nh - 1):
            for j in range(nw - 1):
                if not mouth[t, i, j]:
                    continue
                ya, yb, xa, xb = cell_pixels(step, i, j, nh, nw, height, width)
                for y in range(ya, yb):
                    for x in range(xa, xb):
                        painting = opened and wy0 <= y < wy1 and wx0 <= x < wx1
                        py, px = y - oy, x - ox
                        weight = _soften_weight(work, py, px) if painting else 0.0
                        for c in range(3):
                            value = work[py, px, _BEFORE + c]
                            if painting:
                                shown = work[py, px, _PAINTED + c]
                                if weight > 0.0:  # a soft inner-lip edge: towards the mean of the 3x3 around it
                                    mean = _window_mean(work, py, px, _PAINTED + c, wy0 - oy, wy1 - oy,
                                                        wx0 - ox, wx1 - ox)
                                    shown += (mean - shown) * weight
                                value += (shown - value) * active
                            out[t, y, x, c] = np.uint8(min(max(np.rint(value), 0.0), 255.0))


@compiled
def _window_mean(work, y, x, k, ya, yb, xa, xb):  # pragma: no cover - compiled
    """Mean of channel k over the 3x3 pixels around (y, x) that lie in the window [ya, yb) x [xa, xb)."""
    total = 0.0
    for yy in range(max(y - 1, ya), min(y + 2, yb)):
        for xx in range(max(x - 1, xa), min(x + 2, xb)):
            total += work[yy, xx, k]
    return total / ((min(y + 2, yb) - max(y - 1, ya)) * (min(x + 2, xb) - max(x - 1, xa)))


@compiled
def _sample_lips(crops, coarse, t, i, j, ya, yb, xa, xb, frame, work, oy, ox):  # pragma: no cover - compiled
    """Pass 1 on cell (i, j) of crop t, its pixels [ya, yb) x [xa, xb): each sampled, with
    what the painting needs, into ``work`` (whose first pixel is crop pixel (oy, ox)); returns
    the rows and columns [y0, y1) x [x0, x1) of the opening in it (y0 = y1: none)."""
    height, width = crops.shape[1], crops.shape[2]
    step = COARSE_STEP
    i1, j1 = i + 1, j + 1
    y0, y1, x0, x1 = yb, ya, xb, xa
    for y in range(ya, yb):
        fy = (y - ya) / step
        for x in range(xa, xb):
            fx = (x - xa) / step
            w00, w01, w10, w11 = (1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy
            top = _at(coarse, t, i, j, i1, j1, C_TOP, w00, w01, w10, w11)
            bottom = _at(coarse, t, i, j, i1, j1, C_BOTTOM, w00, w01, w10, w11)
            keep = _at(coarse, t, i, j, i1, j1, C_KEEP, w00, w01, w10, w11)
            u, v = to_uv(frame, float(x), float(y))
            in_gap = min(max(v - top, 0.0), 1.0) * min(max(bottom - v, 0.0), 1.0) * keep
            if in_gap > 0:  # the opening: y0, y1, x0, x1 enclose it
                y0, y1, x0, x1 = min(y0, y), max(y1, y + 1), min(x0, x), max(x1, x + 1)
            # the lower lip's field, or the upper's, which the template's own interior hangs
            # from: it moves with the upper lip, corners and all (sampled where it stood, a
            # piece of it stayed behind beside a corner drawn in for a rounded vowel)
            k = 0 if v >= (top + bottom) * 0.5 and in_gap <= 0 else 2
            sx = _at(coarse, t, i, j, i1, j1, k, w00, w01, w10, w11)
            sy = _at(coarse, t, i, j, i1, j1, k + 1, w00, w01, w10, w11)
            at = bilinear_at(width, height, sx, sy)
            py, px = y - oy, x - ox
            for c in range(3):
                work[py, px, _BEFORE + c] = bilinear(crops, t, c, at)
            work[py, px, _U], work[py, px, _V], work[py, px, _LIP_TOP] = u, v, top
            work[py, px, _LIP_BOTTOM], work[py, px, _LIP_KEEP], work[py, px, _IN_GAP] = bottom, keep, in_gap
    return y0, y1, x0, x1


@compiled
def _paint_opening(out, mouth, t, frame, work, oy, ox, ya, yb, xa, xb, palette, grain, images, sample, share,
                   gain):  # pragma: no cover - compiled
    """Pass 2: the painted colour of crop t's pixels in the window [ya, yb) x [xa, xb): the
    warped crop (pass 1's in the mouth's cells, ``out``'s elsewhere) with the interior drawn
    where the lips part."""
    uc, half_open, width = frame[F_UC], frame[F_HALF_OPEN], frame[F_WIDTH]
    nh, nw = mouth.shape[1] + 1, mouth.shape[2] + 1
    step = COARSE_STEP
    for y in range(ya, yb):
        i = min(y // step, nh - 2)
        for x in range(xa, xb):
            py, px = y - oy, x - ox
            if not mouth[t, i, min(x // step, nw - 2)]:
                for c in range(3):
                    work[py, px, _PAINTED + c] = out[t, y, x, c]
                continue
            in_gap = work[py, px, _IN_GAP]
            for c in range(3):
                work[py, px, _PAINTED + c] = work[py, px, _BEFORE + c]
            if in_gap <= 0.0:
                continue
            u, v, top, bottom = work[py, px, _U], work[py, px, _V], work[py, px, _LIP_TOP], work[py, px, _LIP_BOTTOM]
            gap = max(bottom - top, 1e-3)
            depth = v - top
            # the template's own opening, exactly: where the drawn interior gives way to the
            # template's own is a sharp edge, which interpolating it from the coarse grid moves
            own_up, own_lo = inner_lips(frame, u)
            own_gap = max(own_lo - own_up, 0.0)
            drawn = interior_colour((u - uc) / half_open, min(max(depth / gap, 0.0), 1.0), gap, width, half_open,
                                    palette, images, sample, share, gain)
            # the template's own interior, hanging from the upper lip, where it had one
            own = 1.0 - smoothstep_scalar(0.6 * own_gap, own_gap + 1e-3, depth)
            warped = work[py, px, _BEFORE], work[py, px, _BEFORE + 1], work[py, px, _BEFORE + 2]
            inside = (drawn[0] + (warped[0] - drawn[0]) * own, drawn[1] + (warped[1] - drawn[1]) * own,
                      drawn[2] + (warped[2] - drawn[2]) * own)
            added = 0.0
            if grain > 0.0:  # grain as fine and as strong as the face's own, or the mouth looks pasted on
                shade = min(max((inside[0] + inside[1] + inside[2]) / 3.0 / 80.0, 0.3), 1.0)  # dark areas show less
                noise = grain_noise(x + frame[F_OFF_X], y + frame[F_OFF_Y])  # frame pixels: the grain stays put
                added = grain * noise * shade * (1.0 - own)
            for c in range(3):
                work[py, px, _PAINTED + c] += (inside[c] + added - work[py, px, _BEFORE + c]) * in_gap


@compiled
def _soften_weight(work, py, px):  # pragma: no cover - compiled
    """How far the work's pixel (py, px) moves towards its neighbours' mean: 0.8 in a band
    _EDGE_PX wide along both inner lips, where they part; 0 elsewhere."""
    v, top, bottom = work[py, px, _V], work[py, px, _LIP_TOP], work[py, px, _LIP_BOTTOM]
    keep = work[py, px, _LIP_KEEP]
    parted = smoothstep_scalar(_PARTED, 2.5, bottom - top) * keep
    band = max(1.0 - smoothstep_scalar(0.0, _EDGE_PX, abs(v - top)),
               1.0 - smoothstep_scalar(0.0, _EDGE_PX, abs(bottom - v)))
    return 0.8 * band * parted


@compiled
def _at(coarse, t, i, j, i1, j1, k, w00, w01, w10, w11):  # pragma: no cover - compiled
    """Channel k of coarse between its points (i, j) and (i1, j1), bilinearly."""
    return coarse[t, i, j, k] * w00 + coarse[t, i, j1, k] * w01 + coarse[t, i1, j, k] * w10 + coarse[t, i1, j1, k] * w11

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

What those are made from (colours, samples) is prepared in numpy by
:mod:`lipsync.engines.warp_samples`; this module draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsync.engines.warp_kernels import bilinear, bilinear_at, compiled
from lipsync.engines.warp_kernels import smoothstep_scalar as _smoothstep
from lipsync.engines.warp_samples import SAMPLE_INSET, InteriorColours, MouthSamples, smoothstep


@compiled
def grain_noise(x, y):  # pragma: no cover - compiled; tested through the warp
    """Fixed noise with std 1 (uniform) at the frame pixel (x, y), from an integer hash of
    its coordinates: identical in every frame, so it adds texture without flicker (which
    the encoder would also pay bits for)."""
    h = np.int64(x) * 73856093 + np.int64(y) * 19349663
    h = ((h ^ (h >> 13)) & 0xFFFFFFF) * 1274126177  # masked first: no int64 overflow
    h = (h ^ (h >> 16)) & 0xFFFF
    return (h / 65535.0 - 0.5) * 3.4641  # uniform on +-sqrt(3)


@dataclass(frozen=True)
class SampleChoice:
    """Per frame of a batch: which mouth sample to show, how much of it and in what colour."""

    index: np.ndarray  # (T,) int64
    weight: np.ndarray  # (T,) float32 0..1
    gain: np.ndarray  # (T, 3) float32 per-channel colour gain


class SampleBank:
    """A session's mouth samples, and the rule for picking one."""

    def __init__(self, samples: MouthSamples, lips_now: np.ndarray):
        self.count = len(samples)
        self.opening = samples.opening.astype(np.float64)
        if self.count:
            # pixels and how much of each is interior, sampled together: (K, rows, cols, 4)
            self.images = np.ascontiguousarray(np.concatenate([samples.pixels, samples.mask[..., None]], axis=-1),
                                               np.float32)
            # the light may differ between the sample's frame and this render's: match the lips
            gain = np.clip(np.asarray(lips_now, np.float64)[None] / np.maximum(samples.lips, 1.0), 0.75, 1.33)
            self.gain = gain.astype(np.float32)

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
        return SampleChoice(index.astype(np.int64), weight.astype(np.float32), self.gain[index])


def interior_palette(colours: InteriorColours) -> np.ndarray:
    """(4, 3) the drawn interior's colours, in the order :func:`interior_colour` reads them."""
    return np.array([colours.cavity, colours.floor, colours.tongue, colours.teeth], np.float64)


@compiled
def interior_colour(across, down, gap, width, half_width, palette, images, sample, share,
                    gain):  # pragma: no cover - compiled; tested through the warp
    """(r, g, b) of the inside of the mouth at one pixel of an opening.

    across: the pixel's position from the mouth's middle, in half-widths of the opening
    (-1..1 at its corners); down: 0 at the upper inner lip and 1 at the lower one; gap: the
    opening's height (pixels) at that column; width: the mouth's width and half_width half
    the opening's width (pixels); palette: :func:`interior_palette`. Where ``share`` > 0, the
    mouth sample ``images[sample]`` (a :class:`SampleBank`'s) shows through that much, its
    colours times ``gain`` (3,).
    """
    a, d, g, w = across, down, gap, width
    side = abs(a)
    depth = d * g  # pixels below the upper lip
    to_lower = (1.0 - d) * g
    centre = 1.0 - _smoothstep(0.6, 0.9, side)  # the upper teeth: all but the very corners
    # upper teeth hang from the upper lip; the lower teeth show above the lower lip while
    # the jaw is half open (wide open, the lip drops below them and the tongue takes over)
    teeth_h = min(0.35 * g, 0.09 * w)
    upper_teeth = (1.0 - _smoothstep(0.6 * teeth_h, teeth_h, depth)) * centre
    low_h = min(0.25 * g, 0.06 * w)
    mid_open = _smoothstep(0.04 * w, 0.10 * w, g) * (1.0 - _smoothstep(0.20 * w, 0.32 * w, g))
    lower_teeth = (_smoothstep(0.15 * low_h, 0.5 * low_h, to_lower)
                   * (1.0 - _smoothstep(0.6 * low_h, low_h, to_lower))
                   * (1.0 - _smoothstep(0.35, 0.65, side)) * mid_open)
    # the tongue: a dome rising from the floor of the mouth, highest in the middle, seen
    # once the jaw is well open
    dome = d - (0.62 + 0.3 * side * side)
    tongue = (_smoothstep(-0.04, 0.1, dome) * (1.0 - _smoothstep(0.55, 0.8, side))
              * _smoothstep(0.08 * w, 0.2 * w, g))
    # a tooth's edge: each tooth a little darker where it meets the next
    pitch = abs(np.cos(a * half_width / (0.07 * max(w, 1.0)) * np.pi))
    tooth_shade = 0.86 + 0.14 * pitch ** 0.3
    # depth: darkest at the back, under the upper teeth; warmer towards the lower lip,
    # which the light reaches through the opening; darker again towards the cheeks
    floor = _smoothstep(0.2, 1.0, d)
    darker = 1.0 - 0.4 * _smoothstep(0.45, 0.95, side)
    # the tongue lit from the front: brightest along its ridge, darker towards its sides
    lit = 1.05 - 0.35 * _smoothstep(0.0, 0.3, dome) - 0.3 * side
    # towards the corners the inside of the cheeks and lips shows, in shadow: not a black hole
    corner = _smoothstep(0.7, 1.0, side)
    rows, cols = images.shape[1], images.shape[2]
    at = bilinear_at(cols, rows, 0.0, 0.0)
    if share > 0.0:  # the template's own mouth at the nearest opening, stretched onto these lips
        at = bilinear_at(cols, rows, (min(max(a, -1.0), 1.0) + 1.0) * (0.5 * (cols - 1)),
                         min(max((d - SAMPLE_INSET) / (1.0 - 2 * SAMPLE_INSET), 0.0), 1.0) * (rows - 1))
        share = min(max(bilinear(images, sample, 3, at) * share, 0.0), 1.0)
    shading = (floor, darker, tongue, lit, lower_teeth, tooth_shade, upper_teeth, corner)
    red, green, blue = _layered(palette, 0, shading), _layered(palette, 1, shading), _layered(palette, 2, shading)
    if share > 0.0:
        red += (bilinear(images, sample, 0, at) * gain[0] - red) * share
        green += (bilinear(images, sample, 1, at) * gain[1] - green) * share
        blue += (bilinear(images, sample, 2, at) * gain[2] - blue) * share
    return red, green, blue


@compiled(inline=True)
def _layered(palette, c, shading):  # pragma: no cover - compiled
    """Channel c of the drawn interior: the cavity, then the tongue, the lower and the
    upper teeth and the corners' shadow laid over it."""
    cavity, floor_colour, tongue_colour, teeth = palette[0, c], palette[1, c], palette[2, c], palette[3, c]
    floor, darker, tongue, lit, lower_teeth, tooth_shade, upper_teeth, corner = shading
    value = (cavity + (floor_colour - cavity) * floor) * darker
    value += (tongue_colour * lit - value) * (0.9 * tongue)
    value += (teeth * 0.7 * tooth_shade - value) * (0.6 * lower_teeth)
    value += (teeth * tooth_shade - value) * (0.85 * upper_teeth)
    return value + (tongue_colour * 0.55 - value) * (0.6 * corner)

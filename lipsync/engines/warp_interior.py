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
:mod:`lipsync.engines.warp_samples`; this module draws them in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lipsync.engines.warp_samples import SAMPLE_INSET, InteriorColours, MouthSamples, smoothstep

def grain_noise(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Fixed per-pixel noise with std 1 (uniform), from an integer hash of the frame
    coordinates: identical on every device and in every frame, so it adds texture without
    flicker (which the encoder would also pay bits for)."""
    h = xs.to(torch.int64) * 73856093 + ys.to(torch.int64) * 19349663
    h = ((h ^ (h >> 13)) & 0xFFFFFFF) * 1274126177  # masked first: no int64 overflow
    h = (h ^ (h >> 16)) & 0xFFFF
    return (h.float() / 65535.0 - 0.5) * 3.4641  # uniform on +-sqrt(3): std 1


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

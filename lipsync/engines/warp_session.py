"""The ``warp`` engine's per-render work: the batched warp of each chunk (see
:mod:`lipsync.engines.warp`, which prepares the render): the motion on a coarse grid
(:mod:`lipsync.engines.warp_field`), the crops sampled through it
(:mod:`lipsync.engines.warp_kernels`) and the pixels around the mouth
(:mod:`lipsync.engines.warp_mouth`), all in compiled loops that release the GIL."""

from __future__ import annotations

import numpy as np

from lipsync.engine import EngineSession, FrameChunk, RenderContext
from lipsync.engines.warp import PreparedRender
from lipsync.engines.warp_field import (COARSE_CHANNELS, COARSE_STEP, MouthPose, coarse_fields,
                                        coarse_size, frame_parameters, full_opening)
from lipsync.engines.warp_geometry import MouthGeometry
from lipsync.engines.warp_interior import SampleBank, SampleChoice, interior_palette
from lipsync.engines.warp_kernels import warp_and_sample
from lipsync.engines.warp_mouth import mouth_cells, mouth_pixels
from lipsync.engines.warp_samples import InteriorColours, interior_colours, lip_colour

# Crop pixels warped per batch: the cap bounds memory (the crops and their warp: 3 MB), which
# the render's peak shows directly; larger batches save only a few calls.
_BATCH_PIXELS = 500_000


class WarpSession(EngineSession):
    def __init__(self, ctx: RenderContext, prepared: PreparedRender):
        super().__init__()
        self.analysis = analysis = prepared.analysis
        self.track = prepared.track
        self.geometry = prepared.geometry
        self.samples = prepared.samples
        self._colours: InteriorColours | None = None
        self._bank: SampleBank | None = None
        unusable = analysis.frame_count - int(np.count_nonzero(self.geometry.valid))
        if unusable:
            self.notes.append(f"no face in {unusable} of {analysis.frame_count} template frames; passed through")

    def process(self, chunk: FrameChunk) -> np.ndarray:
        frames = chunk.frames
        rows = np.minimum(np.maximum(chunk.template_indices.astype(np.int64), 0), self.analysis.frame_count - 1)
        last = len(self.track) - 1
        frame_no = np.clip(chunk.out_indices.astype(np.int64), 0, max(last, 0))
        # at rest (nobody speaking) the warp is the identity: those frames go out as they came
        speaking = self.track.activity[frame_no] > 0 if last >= 0 else np.zeros(len(rows), bool)
        todo = np.flatnonzero(self.geometry.valid[rows] & speaking)
        if todo.size == 0:
            return frames
        if not frames.flags.writeable:
            frames = frames.copy()
        if self._colours is None:  # fixed for the whole render, so the mouth never flickers
            first, landmarks = todo[0], self.analysis.landmarks[rows[todo[0]]]
            self._colours = interior_colours(frames[first], landmarks)
            self._bank = SampleBank(self.samples, lip_colour(frames[first], landmarks))
        boxes = self.geometry.box[rows[todo]]
        crop_pixels = int(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).max())
        batch = max(1, _BATCH_PIXELS // max(crop_pixels, 1))
        for start in range(0, todo.size, batch):
            part = todo[start:start + batch]
            self._warp(frames, part, rows[part], frame_no[part])
        return frames

    def _warp(self, frames: np.ndarray, which: np.ndarray, rows: np.ndarray, frame_no: np.ndarray) -> None:
        """Warp frames[which] in place, as one batch of equally sized crops."""
        _, height, width, _ = frames.shape
        boxes = self.geometry.box[rows]
        crop_w = int((boxes[:, 2] - boxes[:, 0]).max())
        crop_h = int((boxes[:, 3] - boxes[:, 1]).max())
        x0 = _crop_starts(boxes[:, 0], crop_w, width)
        y0 = _crop_starts(boxes[:, 1], crop_h, height)
        crops = np.stack([frames[i, y:y + crop_h, x:x + crop_w] for i, x, y in zip(which, x0, y0)])
        track = self.track
        pose = MouthPose(*(values[frame_no] for values in (track.openness, track.spread, track.protrusion,
                                                           track.activity)))
        out = warp_crops(crops, np.stack([x0, y0], axis=1).astype(np.float32), self.geometry, rows, pose,
                         self._colours, self._bank,
                         self._bank.choose(self._opening(frame_no, rows)) if self._bank else None)
        for k, (i, x, y) in enumerate(zip(which, x0, y0)):
            frames[i, y:y + crop_h, x:x + crop_w] = out[k]

    def _opening(self, frame_no: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The lip gap each frame opens to, in mouth widths (as the mouth samples are sorted)."""
        g = self.geometry
        return self.track.openness[frame_no] * full_opening(g, rows) / np.maximum(g.width[rows], 1.0)


def _crop_starts(box_starts: np.ndarray, size: int, limit: int) -> np.ndarray:
    """Where each crop of ``size`` pixels starts along a side ``limit`` long, for boxes
    starting at ``box_starts`` (each box fits in the crop's size): at its box, or whole
    coarse steps before it where the crop would leave the frame. So the coarse grid falls on
    the same pixels of a frame whatever frames share its batch, and a frame is warped the
    same in any batch (only a frame less than a step wider than the crop falls back to
    the crop flush with its end)."""
    over = np.maximum(box_starts + size - limit, 0)
    starts = box_starts - (-(-over // COARSE_STEP)) * COARSE_STEP
    return np.where(starts >= 0, starts, max(limit - size, 0))


_NO_SAMPLES = np.zeros((1, 2, 2, 4), np.float32)  # the sample images where a render has none


def warp_crops(crops: np.ndarray, offsets: np.ndarray, geometry: MouthGeometry, rows: np.ndarray, pose: MouthPose,
               colours: InteriorColours, bank: SampleBank | None = None,
               choice: SampleChoice | None = None) -> np.ndarray:
    """Warp a batch of crops.

    crops: (T, Hc, Wc, 3) uint8; offsets: (T, 2) x, y of each crop's top-left pixel in the
    frame; geometry, rows: the template's mouth frames and which row of them each crop's
    frame is; pose: the frames' visemes; colours, bank, choice: what the mouth interior is
    drawn from. Returns (T, Hc, Wc, 3) uint8.

    The smooth parts (displacement fields, their inversion, the lip lines, the contour's
    falloff) are computed on a grid COARSE_STEP pixels apart and interpolated. Only around
    the mouth, where the lips part and the field jumps from the upper lip's to the lower
    lip's, does the warp run per pixel. Where the displacement is zero the pixels come out
    exactly as they went in.
    """
    t, height, width, _ = crops.shape
    crops = np.ascontiguousarray(crops)
    table = frame_parameters(geometry, rows, pose, np.asarray(offsets, np.float64))
    nh, nw = coarse_size(height), coarse_size(width)
    grid = np.empty((t, nh, nw, 2), np.float32)
    coarse = np.empty((t, nh, nw, len(COARSE_CHANNELS)), np.float64)
    near = np.empty((t, 4), np.int64)
    coarse_fields(table, np.ascontiguousarray(geometry.contour[rows], np.float64), grid, coarse, near)
    mouth = np.empty((t, nh - 1, nw - 1), np.bool_)
    mouth_cells(coarse, table, near, mouth)
    out = warp_and_sample(crops, grid, COARSE_STEP, skip=mouth)  # the mouth's cells come next
    if not mouth.any():
        return out
    if bank is not None and choice is not None:
        images, sample, share, gain = bank.images, choice.index, choice.weight, choice.gain
    else:
        images, sample, share, gain = _NO_SAMPLES, np.zeros(t, np.int64), np.zeros(t), np.ones((t, 3))
    mouth_pixels(crops, coarse, mouth, table, interior_palette(colours), float(colours.grain), images,
                 np.asarray(sample, np.int64), np.asarray(share, np.float64), np.ascontiguousarray(gain, np.float64),
                 out)
    return out

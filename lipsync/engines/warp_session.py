"""The ``warp`` engine's per-render work: the batched warp of each chunk (see
:mod:`lipsync.engines.warp`, which prepares the render)."""

from __future__ import annotations

import numpy as np

from lipsync.engine import EngineSession, FrameChunk, RenderContext
from lipsync.engines.warp import PreparedRender
from lipsync.engines.warp_field import MAX_OPENING, MouthPose, warp_crops
from lipsync.engines.warp_interior import SampleBank
from lipsync.engines.warp_samples import InteriorColours, interior_colours, lip_colour

# Crop pixels warped per batch: large batches amortise the fixed cost of the ~600 small
# array operations on the coarse grid, but beyond ~16 crops of a 720p face they gain
# nothing; the cap bounds memory (~40 bytes per pixel: 20 MB), which the render's peak
# shows directly.
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
        # grow every box to the largest one, kept inside the frame (each box already fits)
        x0 = np.clip(boxes[:, 0] - (crop_w - (boxes[:, 2] - boxes[:, 0])) // 2, 0, width - crop_w)
        y0 = np.clip(boxes[:, 1] - (crop_h - (boxes[:, 3] - boxes[:, 1])) // 2, 0, height - crop_h)
        crops = np.stack([frames[i, y:y + crop_h, x:x + crop_w] for i, x, y in zip(which, x0, y0)])
        track = self.track
        pose = MouthPose(*(values[frame_no] for values in (track.openness, track.spread, track.protrusion,
                                                           track.activity)))
        out = warp_crops(crops, np.stack([x0, y0], axis=1).astype(np.float32), self.geometry, rows, pose,
                         self._colours, self._bank,
                         self._bank.choose(track.openness[frame_no] * MAX_OPENING) if self._bank else None)
        for k, (i, x, y) in enumerate(zip(which, x0, y0)):
            frames[i, y:y + crop_h, x:x + crop_w] = out[k]

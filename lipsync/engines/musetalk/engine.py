"""The ``musetalk`` engine: MuseTalk 1.5 repainting the lower face of every face frame.

Per render the session computes the audio prompts once (whisper encoder, a window per
output frame) and takes the template's face analysis from the shared cache (the same
68-point landmarks warp and wav2lip use); per chunk it crops each face by the v1.5 box
rule, encodes it (VAE posterior mean), runs one UNet step per batch, decodes, and blends
the new face back through a feathered mask drawn from the landmarks. Frames without a
face pass through untouched. CUDA runs under fp16 autocast; the CPU in float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lipsync.device import resolve_device
from lipsync.engine import EngineSession, FrameChunk, FrameEngine, RenderContext
from lipsync.engines.musetalk.audio import SAMPLE_RATE
from lipsync.engines.musetalk.face import Mask, blend_mask, crop, landmark_box, paste
from lipsync.engines.musetalk.model import MuseTalk
from lipsync.errors import CheckpointError, TransientRenderError
from lipsync.face.analysis import analyze_template
from lipsync.media.audio import load_mono

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp16", "fp32")
_KEPT = 256  # template frames whose latents (32 KB) and paste-back masks are kept


class MuseTalkEngine(FrameEngine):
    """The networks, loaded once from ``models`` (the folder of the published files)."""

    name = "musetalk"

    def __init__(self, musetalk_models: str | Path | None = None, musetalk_batch_size: int = 8,
                 musetalk_precision: str = "auto", device: str = "auto", **ignored: Any) -> None:
        if musetalk_models is None or str(musetalk_models) == "":
            raise CheckpointError("no MuseTalk models folder configured (render.musetalk.models); "
                                  "see scripts/fetch-models musetalk")
        if musetalk_precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {musetalk_precision!r}")
        super().__init__()
        self.batch_size = max(1, int(musetalk_batch_size))
        self.device = torch.device(resolve_device(device))
        self.fp16 = self.device.type == "cuda" and musetalk_precision in ("auto", "fp16")
        if musetalk_precision == "fp16" and not self.fp16:
            self.load_notes.append("musetalk: fp16 needs CUDA; running in fp32 on the CPU")
        self.net = MuseTalk.load(musetalk_models, device=self.device)
        log.info("musetalk loaded from %s on %s (%s, batch %d)", musetalk_models, self.device,
                 "fp16 autocast" if self.fp16 else "fp32", self.batch_size)

    def start(self, ctx: RenderContext) -> EngineSession:
        return MuseTalkSession(self, ctx)


class MuseTalkSession(EngineSession):
    def __init__(self, engine: MuseTalkEngine, ctx: RenderContext) -> None:
        super().__init__()
        self.engine, self.ctx = engine, ctx
        with torch.autocast(engine.device.type, dtype=torch.float16, enabled=engine.fp16):
            self.prompts = engine.net.audio.prompts(load_mono(ctx.audio_path, rate=SAMPLE_RATE), ctx.fps)
        self.analysis = analyze_template(ctx.template, cache_dir=ctx.options.cache_dir, progress=ctx.progress)
        height = ctx.template.height
        self.boxes = [landmark_box(points, height) if has else None
                      for points, has in zip(self.analysis.landmarks, self.analysis.has_face)]
        # a template frame's latents are the same every time the frame comes round (ping-pong,
        # and a photo is one frame for the whole video): encode each once, keep the latest
        self._latents: dict[int, torch.Tensor] = {}
        self._masks: dict[int, Mask] = {}  # the same for the paste-back masks
        faceless = sum(b is None for b in self.boxes)
        if faceless:
            self.notes.append(f"musetalk: {faceless} of {len(self.boxes)} template frames have no usable face "
                              "and are passed through unchanged")

    def process(self, chunk: FrameChunk) -> np.ndarray:
        frames = chunk.frames  # (n, h, w, 3) uint8 RGB
        rows = [self.analysis.index(t) for t in chunk.template_indices]
        picked = [i for i, r in enumerate(rows) if self.boxes[r] is not None]
        last = len(self.prompts) - 1
        for first in range(0, len(picked), self.engine.batch_size):
            batch = picked[first:first + self.engine.batch_size]
            bgr = [frames[i][..., ::-1] for i in batch]
            boxes = [self.boxes[rows[i]] for i in batch]
            prompt_rows = [min(int(chunk.out_indices[i]), last) for i in batch]
            try:
                with torch.autocast(self.engine.device.type, dtype=torch.float16, enabled=self.engine.fp16):
                    latents = self._latents_of([rows[i] for i in batch], bgr, boxes)
                    faces = self.engine.net.decode(self.engine.net.generate(latents, self.prompts[prompt_rows]))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise TransientRenderError(
                    f"out of GPU memory running MuseTalk with batch size {self.engine.batch_size}; lower "
                    "render.musetalk.batch_size or free the GPU", path=self.ctx.template.path) from None
            for i, frame_bgr, box, face in zip(batch, bgr, boxes, faces):
                frames[i] = paste(np.ascontiguousarray(frame_bgr), face, box, self._mask_of(rows[i]))[..., ::-1]
        return frames

    def _mask_of(self, row: int) -> Mask:
        mask = self._masks.get(row)
        if mask is None:
            if len(self._masks) >= _KEPT:
                self._masks.clear()
            mask = self._masks[row] = blend_mask(self.analysis.landmarks[row], self.boxes[row])
        return mask

    def _latents_of(self, rows: list[int], frames_bgr: list[np.ndarray], boxes: list) -> torch.Tensor:
        todo = [k for k, r in enumerate(rows) if r not in self._latents]
        if todo:
            crops = np.stack([crop(frames_bgr[k], boxes[k]) for k in todo])
            fresh = self.engine.net.latents(crops)
            if len(self._latents) + len(todo) > _KEPT:
                self._latents.clear()
            for k, latent in zip(todo, fresh):
                self._latents[rows[k]] = latent
        return torch.stack([self._latents[r] for r in rows])

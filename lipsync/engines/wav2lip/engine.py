"""The ``wav2lip`` engine: a Wav2Lip generator re-drawing the mouth of every face frame.

Per render the session loads the audio's mel features lazily and the template's shared
face analysis; per chunk it crops each face to the framing the network was trained on,
runs the generator in batches (CUDA: fp16 autocast, pinned host buffers and asynchronous
copies; CPU: float32) and blends the result back through a feathered mouth-and-jaw mask.
Frames without a face pass through untouched. Nothing outlives a chunk, so memory does
not grow with the length of the video.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.device import resolve_device
from lipsync.engine import Engine, EngineSession, FrameChunk, RenderContext
from lipsync.engines.wav2lip.checkpoint import load_generator
from lipsync.engines.wav2lip.crop import CROP, FramingSettings, framing_boxes, paste_weights
from lipsync.engines.wav2lip.mel import SAMPLE_RATE, MelWindows
from lipsync.errors import CheckpointError, TransientRenderError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp16", "fp32")


class Wav2LipEngine(Engine):
    """A loaded generator; ``start`` prepares one render. Loading happens once, here."""

    name = "wav2lip"

    def __init__(self, checkpoint: str | Path | None = None, batch_size: int = 32, precision: str = "auto",
                 device: str = "auto", framing: FramingSettings = FramingSettings(), **ignored: Any) -> None:
        if checkpoint is None or str(checkpoint) == "":
            raise CheckpointError("no Wav2Lip checkpoint configured (render.wav2lip.checkpoint or --checkpoint); "
                                  "see scripts/fetch-models")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        super().__init__()
        self.checkpoint = Path(checkpoint)
        self.batch_size = int(batch_size)
        self.framing = framing
        self.device = torch.device(resolve_device(device))
        on_cuda = self.device.type == "cuda"
        if precision == "fp16" and not on_cuda:
            # CPU kernels for fp16 convolutions are slow or missing; float32 is the CPU's precision
            self.load_notes.append("wav2lip: fp16 needs CUDA; running in fp32 on the CPU")
        self.precision = "fp16" if on_cuda and precision in ("auto", "fp16") else "fp32"
        self.model = load_generator(self.checkpoint, self.device)
        log.info("wav2lip generator loaded from %s on %s (%s, batch %d)", self.checkpoint, self.device,
                 self.precision, self.batch_size)

    def start(self, ctx: RenderContext) -> EngineSession:
        if torch.device(ctx.device) != self.device:
            # the render asks for another device than the engine was loaded on: follow it
            self.device = torch.device(ctx.device)
            self.model.to(self.device)
            if self.device.type != "cuda":
                self.precision = "fp32"
        return Wav2LipSession(self, ctx)


class _Transfer:
    """Host ↔ device copies; on CUDA through page-locked buffers so they run asynchronously."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def upload(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(array))
        if not self.cuda:
            return host
        staged = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
        staged.copy_(host)
        return staged.to(self.device, non_blocking=True)

    def download(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        if not self.cuda:
            return [t.numpy() for t in tensors]
        staged = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, dev in zip(staged, tensors):
            host.copy_(dev, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return [h.numpy() for h in staged]


class Wav2LipSession(EngineSession):
    def __init__(self, engine: Wav2LipEngine, ctx: RenderContext) -> None:
        super().__init__()
        from lipsync.face.analysis import analyze_template
        from lipsync.media.audio import load_mono

        self.engine = engine
        self.ctx = ctx
        self.transfer = _Transfer(engine.device)
        self.mel = MelWindows(load_mono(ctx.audio_path, rate=SAMPLE_RATE), ctx.fps)
        self.analysis = analyze_template(ctx.template, cache_dir=ctx.options.cache_dir, progress=ctx.progress)
        self.boxes = framing_boxes(self.analysis.landmarks, self.analysis.has_face,
                                   (ctx.template.width, ctx.template.height), engine.framing)
        faceless = int(np.count_nonzero(self.boxes[:, 0] < 0))
        if faceless:
            self.notes.append(f"wav2lip: {faceless} of {len(self.boxes)} template frames have no usable face "
                              "and are passed through unchanged")

    def process(self, chunk: FrameChunk) -> np.ndarray:
        frames = chunk.frames
        rows = np.array([self.analysis.index(t) for t in chunk.template_indices], dtype=np.int64)
        boxes = self.boxes[rows]
        with_face = np.flatnonzero(boxes[:, 0] >= 0)
        step = self.engine.batch_size
        with torch.inference_mode():
            for first in range(0, len(with_face), step):
                picked = with_face[first:first + step]
                self._redraw(frames, picked, boxes[picked], rows[picked], chunk.out_indices[picked])
        return frames

    def _redraw(self, frames: np.ndarray, picked: np.ndarray, boxes: np.ndarray, rows: np.ndarray,
                out_indices: np.ndarray) -> None:
        """Replace the mouth and jaw of ``frames[picked]`` in place (under inference mode)."""
        device = self.engine.device
        regions = [frames[i, y0:y1, x0:x1] for i, (x0, y0, x1, y1) in zip(picked, boxes)]
        originals = [self.transfer.upload(r).permute(2, 0, 1).float() for r in regions]  # (3, h, w) RGB
        faces = torch.cat([_resize(o, (CROP, CROP), "bilinear") for o in originals]).flip(1) / 255.0  # BGR
        masked = faces.clone()
        masked[:, :, CROP // 2:] = 0  # the generator must invent the lower half from the audio
        mels = self.transfer.upload(self.mel.windows(out_indices))
        weights = self.transfer.upload(np.stack([paste_weights(self.analysis.landmarks[r], b, self.engine.framing)
                                                 for r, b in zip(rows, boxes)]))
        try:
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.engine.precision == "fp16"):
                generated = self.engine.model(mels, torch.cat((masked, faces), dim=1))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise TransientRenderError(
                f"out of GPU memory running the Wav2Lip generator with batch size {self.engine.batch_size}; "
                "lower render.wav2lip.batch_size or free the GPU", path=self.ctx.template.path) from None
        generated = generated.float().flip(1) * 255.0  # back to RGB, 0..255
        blended = []
        for k, original in enumerate(originals):
            size = tuple(original.shape[1:])
            face = _resize(generated[k:k + 1], size, "bicubic").clamp_(0, 255)[0]
            # bilinear keeps zero weights exactly zero wherever the 96×96 mask is zero around a pixel
            weight = _resize(weights[k:k + 1, None], size, "bilinear")[0]
            mixed = original + weight * (face - original)
            blended.append(mixed.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous())
        for i, (x0, y0, x1, y1), pixels in zip(picked, boxes, self.transfer.download(blended)):
            frames[i, y0:y1, x0:x1] = pixels


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, h, w) or (B, C, h, w) float → (B, C, *size); antialiased when shrinking."""
    if images.dim() == 3:
        images = images[None]
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = images.shape[-1] > size[1] or images.shape[-2] > size[0]
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=shrinking)


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
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.device import resolve_device
from lipsync.engine import EngineSession, FrameChunk, FrameEngine, RenderContext
from lipsync.face.analysis import analyze_template
from lipsync.media.audio import load_mono
from lipsync.engines.wav2lip.checkpoint import load_generator
from lipsync.engines.wav2lip import mel
from lipsync.engines.wav2lip.crop import CROP, FramingSettings, framing_boxes, paste_weights
from lipsync.errors import CheckpointError, TransientRenderError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp16", "fp32")
_WEIGHTS_CACHED = 512  # paste masks kept per render (36 KB each)


class Wav2LipEngine(FrameEngine):
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
        self.requested_precision = precision
        self.device = torch.device(resolve_device(device))
        self.precision = self._precision_on(self.device)
        if precision == "fp16" and self.precision != "fp16":
            self.load_notes.append("wav2lip: fp16 needs CUDA; running in fp32 on the CPU")
        self.model = load_generator(self.checkpoint, self.device)
        mel.prepare()
        log.info("wav2lip generator loaded from %s on %s (%s, batch %d)", self.checkpoint, self.device,
                 self.precision, self.batch_size)

    def _precision_on(self, device: torch.device) -> str:
        # CPU convolutions in fp16 are slow or missing: float32 is the CPU's precision
        return "fp16" if device.type == "cuda" and self.requested_precision in ("auto", "fp16") else "fp32"

    def start(self, ctx: RenderContext) -> EngineSession:
        wanted = torch.device(ctx.device)
        if wanted != self.device:
            # the render asks for another device than the engine was loaded on: follow it
            self.model.to(wanted)
            self.device, self.precision = wanted, self._precision_on(wanted)
        return Wav2LipSession(self, ctx)


class _Transfer:
    """Host ↔ device copies; on CUDA through page-locked buffers so they run asynchronously."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def upload(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(array)  # a view, strides and all: no copy on the CPU
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
        self.engine = engine
        self.ctx = ctx
        self.transfer = _Transfer(engine.device)
        self.mel_windows = mel.MelWindows(load_mono(ctx.audio_path, rate=mel.SAMPLE_RATE), ctx.fps)
        self.analysis = analyze_template(ctx.template, cache_dir=ctx.options.cache_dir, progress=ctx.progress)
        self.boxes = framing_boxes(self.analysis.landmarks, self.analysis.has_face,
                                   (ctx.template.width, ctx.template.height), engine.framing)
        self._weights_cache: dict[int, np.ndarray] = {}
        faceless = int(np.count_nonzero(self.boxes[:, 0] < 0))
        if faceless:
            self.notes.append(f"wav2lip: {faceless} of {len(self.boxes)} template frames have no usable face "
                              "and are passed through unchanged")

    def _paste_weights(self, row: int) -> np.ndarray:
        # a still repeats one template frame and ping-pong revisits them: compute each once
        weights = self._weights_cache.get(row)
        if weights is None:
            if len(self._weights_cache) >= _WEIGHTS_CACHED:
                self._weights_cache.clear()
            weights = paste_weights(self.analysis.landmarks[row], self.boxes[row], self.engine.framing)
            self._weights_cache[row] = weights
        return weights

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
        regions = [self.transfer.upload(frames[i, y0:y1, x0:x1]).permute(2, 0, 1)  # (3, h, w) uint8 RGB
                   for i, (x0, y0, x1, y1) in zip(picked, boxes)]
        faces = torch.cat([_to_crop(r) for r in regions]).flip(1) / 255.0  # BGR, as trained
        masked = faces.clone()
        masked[:, :, CROP // 2:] = 0  # the generator must invent the lower half from the audio
        mels = self.transfer.upload(self.mel_windows.windows(out_indices))
        weights96 = [self._paste_weights(int(r)) for r in rows]
        try:
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.engine.precision == "fp16"):
                generated = self.engine.model(mels, torch.cat((masked, faces), dim=1))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise TransientRenderError(
                f"out of GPU memory running the Wav2Lip generator with batch size {self.engine.batch_size}; "
                "lower render.wav2lip.batch_size or free the GPU", path=self.ctx.template.path) from None
        generated = generated.float().flip(1) * 255.0  # back to RGB, 0..255
        weights = self.transfer.upload(np.stack(weights96))
        patches, places = [], []
        for k, region in enumerate(regions):
            window = _weight_support(weights96[k], region.shape[1], region.shape[2])
            if window is None:
                continue
            (top, bottom), (left, right) = window
            grid = _sampling_grid(window, region.shape[1], region.shape[2], device)
            face = F.grid_sample(generated[k:k + 1], grid, mode="bicubic", padding_mode="border",
                                 align_corners=False)[0].clamp_(0, 255)
            # bilinear keeps the weight exactly zero wherever the 96×96 mask is zero around a pixel
            weight = F.grid_sample(weights[k:k + 1, None], grid, mode="bilinear", padding_mode="border",
                                   align_corners=False)[0]
            original = region[:, top:bottom, left:right].float()
            mixed = original + weight * (face - original)
            patches.append(mixed.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous())
            places.append((picked[k], boxes[k][1] + top, boxes[k][0] + left))
        for (i, y, x), pixels in zip(places, self.transfer.download(patches)):
            frames[i, y:y + pixels.shape[0], x:x + pixels.shape[1]] = pixels


def _to_crop(region: torch.Tensor) -> torch.Tensor:
    """(3, h, w) uint8 → (1, 3, 96, 96) float 0..255, antialiased when shrinking."""
    image = region[None]
    shrinking = image.shape[-1] > CROP or image.shape[-2] > CROP
    if image.device.type == "cpu":
        # the CPU has a fast uint8 path (several times quicker than converting the box first)
        image = image.contiguous(memory_format=torch.channels_last)
        return F.interpolate(image, size=(CROP, CROP), mode="bilinear", align_corners=False,
                             antialias=shrinking).float()
    return F.interpolate(image.float(), size=(CROP, CROP), mode="bilinear", align_corners=False, antialias=shrinking)


def _weight_support(weights: np.ndarray, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Rows and columns of the (height × width) box where the upsampled weight can be non-zero.

    Pasting only there keeps the per-frame work proportional to the mouth, not the box.
    """
    nonzero_rows = np.flatnonzero(weights.any(axis=1))
    nonzero_cols = np.flatnonzero(weights.any(axis=0))
    if nonzero_rows.size == 0:
        return None

    def span(first: int, last: int, size: int) -> tuple[int, int]:
        # output pixel p samples the 96-grid at (p + 0.5) * 96 / size - 0.5, between two cells
        lo = math.floor((first - 0.5) * size / CROP - 0.5)
        hi = math.ceil((last + 1.5) * size / CROP - 0.5) + 1
        return max(0, lo), min(size, hi)

    return (span(nonzero_rows[0], nonzero_rows[-1], height), span(nonzero_cols[0], nonzero_cols[-1], width))


def _sampling_grid(window: tuple[tuple[int, int], tuple[int, int]], height: int, width: int,
                   device: torch.device) -> torch.Tensor:
    """grid_sample coordinates of the window's pixels in a box of (height × width) that the
    96×96 crop spans (the same pixel-centre mapping as a resize with align_corners=False)."""
    (top, bottom), (left, right) = window
    ys = (torch.arange(top, bottom, device=device, dtype=torch.float32) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(left, right, device=device, dtype=torch.float32) + 0.5) * (2.0 / width) - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)[None]

"""The ``latentsync`` engine: LatentSync 1.6 repainting the mouth of every face frame.

Per render the session reads the audio once (the whisper encoder runs on 30-s segments as
windows reach them), takes the template's face analysis from the shared cache (the
68-point landmarks every engine uses), and computes every template frame's alignment in
template order (the reference smooths it along the frames). Output frames are generated
in windows of ``window`` frames (16, as trained) at fixed places in the output -- frames
0-15, 16-31, ... -- so the temporal layers see the same neighbours however the pipeline
chunks the video, and the seeded draws come in the same order: one seed, one video.

A frame without a usable face is passed through untouched; so is every pixel outside
the mouth region of one with a face (see :mod:`.align`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lipsync.device import resolve_device
from lipsync.engine import EngineSession, FrameChunk, FrameEngine, RenderContext
from lipsync.engines.latentsync.align import Aligner, keep_mask, three_points
from lipsync.engines.latentsync.audio import SAMPLE_RATE, AudioTokens
from lipsync.engines.latentsync.model import LatentSync
from lipsync.errors import CheckpointError, EngineUnavailableError, MediaError, TransientRenderError
from lipsync.face.analysis import analyze_template
from lipsync.media.audio import load_mono

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp16", "fp32")
WINDOW = 16  # frames per UNet call, as trained
DEFAULT_SEED = 1247  # the reference's default
# ``auto`` picks latentsync only on a CUDA device with this much free memory: the authors'
# stated minimum for 1.6 inference
AUTO_MIN_FREE_BYTES = 18 * 1024**3
_KEPT = 64  # aligned template faces kept (768 KB each at 512)


def auto_unavailable(device: str) -> str | None:
    """Why ``auto`` should not pick latentsync on ``device`` (None: it may)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return "it needs a CUDA GPU (on the CPU a frame takes minutes)"
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    if free < AUTO_MIN_FREE_BYTES:
        return f"{free / 1024**3:.1f} GiB of GPU memory free, it needs {AUTO_MIN_FREE_BYTES / 1024**3:.0f} GiB"
    return None


class LatentSyncEngine(FrameEngine):
    """The networks, loaded once from ``latentsync_models`` (the folder of the published files)."""

    name = "latentsync"
    frames_per_call = WINDOW

    def __init__(self, latentsync_models: str | Path | None = None, latentsync_steps: int = 20,
                 latentsync_guidance: float = 1.5, latentsync_seed: int = DEFAULT_SEED,
                 latentsync_window: int = WINDOW, latentsync_precision: str = "auto", device: str = "auto",
                 auto_pick: bool = False, **ignored: Any) -> None:
        if latentsync_models is None or str(latentsync_models) == "":
            raise CheckpointError("no LatentSync models folder configured (render.latentsync.models); "
                                  "see scripts/fetch-models latentsync")
        if latentsync_precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {latentsync_precision!r}")
        super().__init__()
        self.device = torch.device(resolve_device(device))
        if auto_pick:
            reason = auto_unavailable(str(self.device))
            if reason:
                raise EngineUnavailableError(reason)
        self.steps, self.guidance = int(latentsync_steps), float(latentsync_guidance)
        self.seed, self.window = int(latentsync_seed), int(latentsync_window)
        fp16 = self.device.type == "cuda" and latentsync_precision in ("auto", "fp16")
        if latentsync_precision == "fp16" and not fp16:
            self.load_notes.append("latentsync: fp16 needs CUDA; running in fp32 on the CPU")
        self.net = LatentSync.load(latentsync_models, device=self.device,
                                   dtype=torch.float16 if fp16 else torch.float32)
        limit = self.net.unet.config.motion_max_len
        if not 1 <= self.window <= limit:
            raise ValueError(f"window must be 1 to {limit} frames (the temporal layers' table), got {self.window}")
        self.frames_per_call = self.window
        self.aligner = Aligner(self.net.resolution)
        log.info("latentsync loaded from %s on %s (%s, %d steps, guidance %.2f, seed %d)", latentsync_models,
                 self.device, "fp16" if fp16 else "fp32", self.steps, self.guidance, self.seed)

    def start(self, ctx: RenderContext) -> EngineSession:
        return LatentSyncSession(self, ctx)


class LatentSyncSession(EngineSession):
    def __init__(self, engine: LatentSyncEngine, ctx: RenderContext) -> None:
        super().__init__()
        self.engine, self.ctx = engine, ctx
        net = engine.net
        try:
            self.audio = AudioTokens(net.encoder, load_mono(ctx.audio_path, rate=SAMPLE_RATE))
        except ValueError as e:
            raise MediaError(f"the audio cannot drive LatentSync: {e}", path=ctx.audio_path) from None
        self.analysis = analyze_template(ctx.template, cache_dir=ctx.options.cache_dir, progress=ctx.progress)
        points = [three_points(p) if has else None for p, has in zip(self.analysis.landmarks, self.analysis.has_face)]
        self.matrices = engine.aligner.matrices(points)
        self.keep = keep_mask(net.resolution)
        self.generator = torch.Generator().manual_seed(engine.seed)
        self.noise = net.initial_noise(self.generator)  # the same for every frame, as the reference
        self._faces: dict[int, np.ndarray] = {}
        faceless = sum(m is None for m in self.matrices)
        if faceless:
            self.notes.append(f"latentsync: {faceless} of {len(self.matrices)} template frames have no usable face "
                              "and are passed through unchanged")

    def process(self, chunk: FrameChunk) -> np.ndarray:
        frames = chunk.frames  # (n, h, w, 3) uint8 RGB
        window = self.engine.window
        starts = [0] + [i for i in range(1, len(frames)) if chunk.out_indices[i] % window == 0] + [len(frames)]
        for lo, hi in zip(starts, starts[1:]):
            self._window(frames, chunk, lo, hi)
        return frames

    def _window(self, frames: np.ndarray, chunk: FrameChunk, lo: int, hi: int) -> None:
        rows = [self.analysis.index(int(t)) for t in chunk.template_indices[lo:hi]]
        picked = [i for i, r in zip(range(lo, hi), rows) if self.matrices[r] is not None]
        if not picked:
            return
        net, engine = self.engine.net, self.engine
        faces = np.stack([self._face(rows[i - lo], frames[i]) for i in picked])
        tokens = self.audio.tokens([int(chunk.out_indices[i]) for i in picked], self.ctx.fps)
        try:
            conditions, _pixels = net.conditions(faces, self.keep, self.generator)
            noise = self.noise.repeat(1, 1, len(picked), 1, 1)
            latents = net.denoise(noise, conditions, tokens, steps=engine.steps, guidance=engine.guidance,
                                  generator=self.generator)
            generated = net.decode(latents)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise TransientRenderError(
                f"out of GPU memory running LatentSync on {len(picked)} frames at {net.resolution}px; lower "
                "render.latentsync.window or free the GPU", path=self.ctx.template.path) from None
        for k, i in enumerate(picked):
            frames[i] = engine.aligner.paste(frames[i], generated[k], self.matrices[rows[i - lo]])

    def _face(self, row: int, frame: np.ndarray) -> np.ndarray:
        """The aligned square of a template frame (the same each time the frame comes round)."""
        face = self._faces.get(row)
        if face is None:
            if len(self._faces) >= _KEPT:
                self._faces.clear()
            aligner = self.engine.aligner
            face = self._faces[row] = aligner.square(aligner.warp(frame, self.matrices[row]))
        return face

"""The engine contract: two kinds of engine, one way to call them.

**Frame engines** (warp, wav2lip, passthrough) run inside the streaming pipeline
(:mod:`lipsync.render`), which owns decoding, timing, threading and encoding; the engine
only turns chunks of template frames into chunks of output frames:

    engine = create_engine("warp")          # loaded once (models, predictors), reused
    session = engine.start(ctx)             # per render: audio features, face analysis
    out = session.process(chunk)            # many times, in output order
    session.close()

A frame engine never sees file formats or encoders, and it must not hold on to frames it
has returned, so memory stays flat however long the video is.

**File engines** render a whole video somewhere else (a remote GPU server): given the
audio, the template, the output path and a progress callback, they leave a finished MP4
at the output path (:meth:`FileEngine.render_file`).

Callers never tell the two apart: :func:`lipsync.render.render` takes either. Both kinds
have ``load_notes`` (remarks from loading, e.g. a fallback) and raise
:class:`lipsync.errors.LipsyncError` subclasses; transient trouble (GPU memory, a busy or
unreachable server) is a :class:`lipsync.errors.TransientRenderError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from lipsync.media.color import ColorInfo

ProgressFn = Callable[[float], None]


def no_progress(_fraction: float) -> None:
    """Progress callback that ignores reports."""


@dataclass(frozen=True)
class MediaLimits:
    """Checked from container headers *before* decoding anything."""

    max_file_bytes: int = 4 * 1024**3
    max_pixels: int = 3840 * 2160
    max_template_seconds: float = 3600.0
    max_audio_seconds: float = 3600.0
    max_fps: float = 120.0


@dataclass(frozen=True)
class RenderOptions:
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    still_fps: float = 25.0  # output frame rate when the template is a still image
    crf: int = 18  # x264 constant rate factor
    preset: str = "veryfast"  # x264 preset
    audio_bitrate: int = 128_000
    chunk_frames: int = 32  # frames per engine call; bounds memory
    cache_dir: Path | None = None  # face-analysis cache (by template content hash)
    limits: MediaLimits = field(default_factory=MediaLimits)


@dataclass(frozen=True)
class TemplateInfo:
    path: Path
    width: int
    height: int
    fps: float  # for a still image: RenderOptions.still_fps
    frame_count: int  # 1 for a still image
    is_still: bool
    # how its YUV numbers are colours; None: as an untagged source of its size
    color: ColorInfo | None = None

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps


@dataclass
class RenderContext:
    """Everything an engine needs to prepare one render."""

    audio_path: Path
    template: TemplateInfo
    fps: float  # output frame rate
    frame_count: int  # output frames (covers the whole audio)
    options: RenderOptions
    device: str  # resolved torch device string: "cpu" or "cuda:0"
    # template frame index for output frame i (ping-pong / trim / still)
    template_index: Callable[[int], int]
    # engines report the progress of their preparation (0..1) here
    progress: ProgressFn = no_progress


@dataclass
class FrameChunk:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB; the engine may modify it in place
    out_indices: np.ndarray  # (T,) int64 output frame numbers, consecutive
    template_indices: np.ndarray  # (T,) int64 template frame numbers


class EngineSession(ABC):
    """One render of a frame engine in progress."""

    def __init__(self) -> None:
        # human-readable remarks for the job's sidecar (fallbacks, faceless frames, ...)
        self.notes: list[str] = []

    @abstractmethod
    def process(self, chunk: FrameChunk) -> np.ndarray:
        """Return the output frames for ``chunk`` as (T, H, W, 3) uint8 RGB."""

    def close(self) -> None:
        """Release per-render resources."""


class Engine(ABC):
    """A loaded engine of either kind. Creating one may be expensive; rendering reuses it."""

    name: ClassVar[str]
    # share of a render's 0..1 progress spent preparing (audio features, face analysis)
    prepare_share: ClassVar[float] = 0.1
    # whether the engine runs on the configured device; one that runs on the CPU whatever
    # it is (warp, passthrough) is given "cpu", resolving "auto" never imports torch for it,
    # and a job's record says "cpu"
    uses_device: ClassVar[bool] = True

    def __init__(self) -> None:
        # remarks from loading, e.g. "wav2lip unavailable (...); using warp"
        self.load_notes: list[str] = []

    def runs_on(self, device: str) -> str:
        """The device a render with ``device`` configured runs on: that one, or "cpu"."""
        return device if self.uses_device else "cpu"


class FrameEngine(Engine):
    """Turns template frames into output frames inside the streaming pipeline."""

    # chunks hold a multiple of this many frames (an engine that works on windows of
    # frames sees whole windows; only the video's last chunk may end inside one)
    frames_per_call: int = 1

    @abstractmethod
    def start(self, ctx: RenderContext) -> EngineSession:
        """Prepare one render (may raise :class:`lipsync.errors.LipsyncError`)."""


@dataclass(frozen=True)
class FileRenderRequest:
    """One whole-file render: what a :class:`FileEngine` is given."""

    audio: Path
    template: TemplateInfo
    audio_duration: float  # seconds, from the audio's headers
    output: Path  # where the finished MP4 must be when render_file returns
    options: RenderOptions
    progress: ProgressFn = no_progress  # 0..1, non-decreasing


class FileEngine(Engine):
    """Renders a whole video elsewhere (a remote server) and leaves the MP4 at the output path."""

    prepare_share = 0.0

    @abstractmethod
    def render_file(self, request: FileRenderRequest) -> RenderResult:
        """Render ``request``; the MP4 must cover the whole audio, H.264 + AAC, faststart."""


@dataclass(frozen=True)
class RenderResult:
    path: Path
    engine: str
    duration: float  # seconds of output video (== audio duration, to a frame)
    width: int
    height: int
    fps: float
    frames: int
    notes: tuple[str, ...] = ()

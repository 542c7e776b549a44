"""The engine interface every lip-sync engine implements.

The streaming pipeline (:mod:`lipsync.render`) owns decoding, timing, threading and
encoding; an engine only turns chunks of template frames into chunks of output frames:

    engine = create_engine("warp")          # loaded once (models, predictors), reused
    session = engine.start(ctx)             # per render: audio features, face analysis
    out = session.process(chunk)            # many times, in output order
    session.close()

An engine never sees file formats or encoders, and it must not hold on to frames it has
returned, so memory stays flat however long the video is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

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
    # engine-specific settings (checkpoint path, batch size, precision, ...)
    engine_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TemplateInfo:
    path: Path
    width: int
    height: int
    fps: float  # for a still image: RenderOptions.still_fps
    frame_count: int  # 1 for a still image
    is_still: bool

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
    """One render in progress."""

    def __init__(self) -> None:
        # human-readable remarks for the job's sidecar (fallbacks, faceless frames, ...)
        self.notes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        # a subclass whose __init__ forgets super().__init__() still has its notes list
        if name == "notes":
            self.notes = []
            return self.notes
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @abstractmethod
    def process(self, chunk: FrameChunk) -> np.ndarray:
        """Return the output frames for ``chunk`` as (T, H, W, 3) uint8 RGB."""

    def close(self) -> None:
        """Release per-render resources."""


class Engine(ABC):
    """A loaded engine. Creating one may be expensive; ``start`` must be cheap-ish."""

    name: ClassVar[str]
    # share of a render's 0..1 progress that ``start`` (audio features, face analysis)
    # reports through ``ctx.progress``; the frames get the rest
    prepare_share: ClassVar[float] = 0.1

    def __init__(self) -> None:
        # remarks from loading, e.g. "wav2lip unavailable (...); using warp"
        self.load_notes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        # every engine has load_notes, even one whose __init__ skips super().__init__()
        if name == "load_notes":
            self.load_notes = []
            return self.load_notes
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @abstractmethod
    def start(self, ctx: RenderContext) -> EngineSession:
        """Prepare one render (may raise :class:`lipsync.errors.LipsyncError`)."""


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

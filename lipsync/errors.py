"""One exception hierarchy for everything that can go wrong while rendering.

``permanent`` separates bad input (the job will fail the same way every time: move it to
failed/) from transient trouble (a CUDA out-of-memory, a full disk: try again later).
``code`` is a stable, machine-readable identifier that ends up in the sidecar's error
object; ``str(error)`` is the human sentence, which always names the file concerned.
"""

from __future__ import annotations

import sys
from pathlib import Path


def shorten(text: str, limit: int = 200) -> str:
    """``text`` within ``limit`` characters, cut at a word boundary with "…" (never mid-word,
    never leaving an open parenthesis): write the essential part first, the detail after."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    cut = cut.rstrip(" ,;:-(")
    if cut.count("(") > cut.count(")"):
        cut = cut[: cut.rfind("(")].rstrip(" ,;:-")
    return cut + "…"


class LipsyncError(Exception):
    """Base class. Subclasses set ``code`` and ``permanent``."""

    code = "render_error"
    permanent = True

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class MediaError(LipsyncError):
    """The file cannot be used as media: unreadable, corrupt, wrong type, no stream."""

    code = "bad_media"


class NoAudioStreamError(MediaError):
    code = "no_audio_stream"


class NoVideoStreamError(MediaError):
    code = "no_video_stream"


class MediaLimitError(MediaError):
    """Declared size, pixels, duration or frame count exceed the configured limits."""

    code = "limit_exceeded"


class TextError(LipsyncError):
    """The text to speak cannot be spoken: empty, not UTF-8, too long."""

    code = "bad_text"


class VoiceError(LipsyncError):
    """The voice asked for does not exist in the text-to-speech backend (user input, not a bug)."""

    code = "bad_voice"


class NoFaceError(LipsyncError):
    """The template has no usable face in any frame."""

    code = "no_face"


class CheckpointError(LipsyncError):
    """A model checkpoint is missing, truncated, malicious or of the wrong architecture."""

    code = "bad_checkpoint"


class EngineUnavailableError(LipsyncError):
    """The requested engine cannot run here (unknown name, missing weights)."""

    code = "engine_unavailable"


class TransientRenderError(LipsyncError):
    """Worth retrying later: out of GPU memory, disk full, device busy."""

    code = "render_transient"
    permanent = False


class RendererBusyError(TransientRenderError):
    """A remote renderer refused the task because it is busy with another one."""

    code = "renderer_busy"


class RendererUnreachableError(TransientRenderError):
    """A remote renderer did not answer (down, restarting, network trouble)."""

    code = "renderer_unreachable"


def out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error from any engine (torch is not imported for this)."""
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)


def as_render_error(exc: BaseException, *, engine: str, path: str | Path | None = None) -> BaseException:
    """``exc`` as it should leave :func:`lipsync.render.render`: GPU memory trouble becomes a
    :class:`TransientRenderError` (retry later), everything else stays what it is."""
    if out_of_memory(exc):
        return TransientRenderError(f"out of GPU memory in the {engine} engine ({exc.__class__.__name__}); "
                                    "it is retried later", path=path)
    return exc

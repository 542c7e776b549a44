"""Checks made from file headers before anything is decoded.

A job's inputs come from people's uploads: a 0-byte placeholder, a half-copied file, a
text file with a media extension, or a 40-megapixel photo all arrive here. Everything in
this module looks only at the file system and at container/codec headers, so a hostile
or broken file is turned away before a decoder allocates frames for it.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import av
import av.container

from lipsync.engine import MediaLimits
from lipsync.errors import MediaError, MediaLimitError
from lipsync.media.headers import declared_picture_size

# Containers whose headers state durations and frame counts exactly (others estimate).
EXACT_HEADER_FORMATS = ("mov", "mp4", "matroska", "webm", "flac")
# Largest picture FFmpeg's stream probing may decode when the caller states no limit.
PROBE_MAX_PIXELS = MediaLimits().max_pixels


def check_file(path: Path, limits: MediaLimits) -> int:
    """Existence, type and size of ``path``; returns its size in bytes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError("file not found", path=path) from None
    except OSError as e:
        raise MediaError(f"cannot read the file ({e.strerror})", path=path) from None
    if not path.is_file():
        raise MediaError("not a regular file", path=path)
    if st.st_size == 0:
        raise MediaError("the file is empty (0 bytes)", path=path)
    if st.st_size > limits.max_file_bytes:
        raise MediaLimitError(
            f"the file is {_size(st.st_size)}, larger than the limit of {_size(limits.max_file_bytes)}", path=path
        )
    if not os.access(path, os.R_OK):
        raise MediaError("permission denied", path=path)
    return st.st_size


def open_media(path: Path, *, max_pixels: int | None = PROBE_MAX_PIXELS) -> av.container.InputContainer:
    """Open ``path`` for demuxing; any failure becomes a :class:`MediaError` naming the file.

    Opening runs FFmpeg's stream probing, which decodes a few frames of each stream to
    fill in codec details. ``max_pixels`` stops those probing decoders from allocating a
    picture larger than that (a header lying about the size then leaves the details
    unknown instead of costing hundreds of MiB), and when the headers we read ourselves
    declare a larger picture, no video frame is decoded while probing at all (the audio
    of such a file stays usable). None lets them decode any size. Neither limits the
    decoders a caller uses afterwards.
    """
    options = None
    if max_pixels is not None:
        options = {"max_pixels": str(max_pixels)}
        declared = declared_picture_size(path)
        if declared is not None and declared[0] * declared[1] > max_pixels:
            options["skip_frame"] = "all"
    try:
        return av.open(str(path), mode="r", options=options)
    except av.error.InvalidDataError:
        raise MediaError(
            "not a readable audio/video/image file (invalid data: wrong type, damaged or truncated)", path=path
        ) from None
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"cannot open as media: {describe_av_error(e)}", path=path) from None


def require_media_streams(container: av.container.InputContainer, path: Path) -> None:
    """A container with neither audio nor video is damaged (a scrambled index) or not media."""
    if not container.streams.audio and not container.streams.video:
        raise MediaError("no audio or video found in the file: damaged, or not a media file", path=path)


def describe_av_error(exc: BaseException) -> str:
    """A short reason for an FFmpeg failure, without the file name FFmpeg appends."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def format_names(container: av.container.InputContainer) -> tuple[str, ...]:
    """FFmpeg names a demuxer family with commas ("mov,mp4,m4a,3gp,3g2,mj2")."""
    return tuple(container.format.name.split(","))


def has_exact_headers(container: av.container.InputContainer) -> bool:
    return any(name in EXACT_HEADER_FORMATS for name in format_names(container))


def declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """The duration the headers claim for ``stream`` (container duration as a fallback)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def check_seconds(seconds: float | None, limit: float, path: Path, what: str) -> None:
    if seconds is not None and seconds > limit:
        raise MediaLimitError(f"the {what} is {seconds:.1f} s long, longer than the limit of {limit:g} s", path=path)


def check_pixels(width: int, height: int, limits: MediaLimits, path: Path) -> None:
    if width <= 0 or height <= 0:
        raise MediaError("the picture cannot be read: no valid image or video data (size unknown)", path=path)
    if width * height > limits.max_pixels:
        raise MediaLimitError(
            f"the picture is {width}x{height} ({width * height} pixels), more than the limit of {limits.max_pixels}",
            path=path,
        )


def check_fps(fps: float, limits: MediaLimits, path: Path) -> None:
    if fps > limits.max_fps:
        raise MediaLimitError(f"the frame rate is {fps:g} fps, above the limit of {limits.max_fps:g}", path=path)


def stream_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return None


def wav_missing_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, present) data bytes of a truncated RIFF/WAVE file, else None.

    FFmpeg quietly clips a WAV whose data chunk runs past the end of the file, so an
    upload cut short would render as a shorter video instead of failing. Streaming
    writers leave the size as 0 or 0xFFFFFFFF; those are not treated as truncated.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        for _ in range(64):
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if clen in (0, 0xFFFFFFFF):
                    return None
                present = size - (pos + 8)
                return (clen, present) if present < clen else None
            pos += 8 + clen + (clen & 1)
            fh.seek(pos)
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"

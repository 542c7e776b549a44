"""Checks made from file headers before anything is decoded.

A job's inputs come from people's uploads: a 0-byte placeholder, a half-copied file, a
text file with a media extension, or a 40-megapixel photo all arrive here. Everything in
this module looks only at the file system and at container/codec headers, so a hostile
or broken file is turned away before a decoder allocates frames for it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.container

from lipsync.engine import MediaLimits
from lipsync.errors import MediaError, MediaLimitError

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


def sniff_image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, or None for anything else.

    FFmpeg's stream probing decodes a whole image to learn its size, so an image with a
    huge declared size would be allocated before we could refuse it; reading the few
    header bytes ourselves lets the pixel limit act first.
    """
    with open(path, "rb") as fh:
        head = fh.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return width, height
        if head.startswith(b"\xff\xd8"):
            fh.seek(2)
            return _jpeg_size(fh)
    return None


def _jpeg_size(fh) -> tuple[int, int] | None:
    # Walk the marker segments up to the first start-of-frame (SOF0..SOF15 except DHT,
    # JPG and DAC, which share the range), whose payload holds the picture size.
    for _ in range(1000):
        byte = fh.read(1)
        while byte == b"\xff":
            byte = fh.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers carry no length
            continue
        raw = fh.read(2)
        if len(raw) < 2:
            return None
        length = struct.unpack(">H", raw)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = fh.read(5)
            if len(sof) < 5:
                return None
            height, width = struct.unpack(">HH", sof[1:5])
            return width, height
        fh.seek(length - 2, os.SEEK_CUR)
        if fh.read(1) != b"\xff":
            return None
    return None


def declared_picture_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the largest picture the headers of ``path`` declare, or None.

    Reads PNG and JPEG headers, the MP4/MOV track boxes and the Matroska/WebM track
    elements directly, without FFmpeg: opening a file with FFmpeg decodes frames to fill
    in codec details, so a few KiB declaring a 16000x16000 picture would cost the memory
    of that picture before the pixel limit could refuse it. None for other formats and
    for headers that cannot be read; FFmpeg then judges the file as usual.
    """
    try:
        image = sniff_image_size(path)
        if image is not None:
            return image
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head.startswith(_EBML_MAGIC):
                return _matroska_picture_size(fh, size)
            if head[4:8] in _MP4_FIRST_BOXES:
                return _mp4_picture_size(fh, size)
    except (OSError, struct.error):  # struct.error: a file cut short while being read
        return None
    return None


def _largest(sizes: Iterable[tuple[int, int] | None]) -> tuple[int, int] | None:
    return max((s for s in sizes if s is not None), key=lambda s: s[0] * s[1], default=None)


def _read_at(fh, pos: int, n: int) -> bytes:
    fh.seek(pos)
    return fh.read(n)


# --------------------------------------------------------------------------- MP4 / MOV boxes

# Box types an MP4 or QuickTime file can start with.
_MP4_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"})
# Enough for any real file; bounds the work a file of millions of empty boxes can cause.
_MAX_ELEMENTS = 100_000


def _mp4_boxes(fh, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, content start, box end) of the boxes between ``start`` and ``end``.

    Seeks before every read, so walks of nested boxes can share the file handle.
    """
    pos = start
    for _ in range(_MAX_ELEMENTS):
        head = _read_at(fh, pos, 8) if pos + 8 <= end else b""
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head)
        content = pos + 8
        if size == 1:  # a 64-bit size follows the type (boxes over 4 GiB, e.g. a long mdat)
            large = fh.read(8)
            if len(large) < 8:
                return
            size, content = struct.unpack(">Q", large)[0], pos + 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - pos
        if size < content - pos:
            return
        yield kind, content, min(pos + size, end)
        pos += size


def _mp4_find(fh, start: int, end: int, path: tuple[bytes, ...]) -> tuple[int, int] | None:
    """(content start, end) of the first box along ``path`` (types from outer to inner)."""
    for kind, content, box_end in _mp4_boxes(fh, start, end):
        if kind == path[0]:
            return (content, box_end) if len(path) == 1 else _mp4_find(fh, content, box_end, path[1:])
    return None


def _mp4_picture_size(fh, file_size: int) -> tuple[int, int] | None:
    # a file without a moov (an upload cut short) gives None: FFmpeg's own error says it best
    moov = _mp4_find(fh, 0, file_size, (b"moov",))
    if moov is None:
        return None
    return _largest(_mp4_track_size(fh, content, end)
                    for kind, content, end in _mp4_boxes(fh, *moov) if kind == b"trak")


def _mp4_track_size(fh, start: int, end: int) -> tuple[int, int] | None:
    """The picture size of a video track: its sample entry's (the coded size decoders
    allocate), else its track header's (the display size, 16.16 fixed point)."""
    hdlr = _mp4_find(fh, start, end, (b"mdia", b"hdlr"))
    if hdlr is None or _read_at(fh, hdlr[0] + 8, 4) != b"vide":
        return None
    stsd = _mp4_find(fh, start, end, (b"mdia", b"minf", b"stbl", b"stsd"))
    # stsd: version+flags, entry count, then the first visual sample entry, whose width
    # and height follow its size, type, and 24 bytes of reference index and reserved fields
    if stsd is not None and stsd[0] + 8 + 36 <= stsd[1]:
        count, = struct.unpack(">I", _read_at(fh, stsd[0] + 4, 4))
        width, height = struct.unpack(">HH", _read_at(fh, stsd[0] + 8 + 32, 4))
        if count and width and height:
            return width, height
    tkhd = _mp4_find(fh, start, end, (b"tkhd",))
    if tkhd is None:
        return None
    # version 1 has 64-bit times; width and height close the box either way
    version = _read_at(fh, tkhd[0], 1)
    offset = 88 if version == b"\x01" else 76
    raw = _read_at(fh, tkhd[0] + offset, 8) if tkhd[0] + offset + 8 <= tkhd[1] else b""
    if len(raw) < 8:
        return None
    width, height = struct.unpack(">II", raw)
    return (width >> 16, height >> 16) if width >> 16 and height >> 16 else None


# --------------------------------------------------------------------------- Matroska / WebM elements

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_MKV_SEGMENT = 0x18538067
_MKV_TRACKS = 0x1654AE6B
_MKV_TRACK_ENTRY = 0xAE
_MKV_VIDEO = 0xE0
_MKV_PIXEL_WIDTH = 0xB0
_MKV_PIXEL_HEIGHT = 0xBA


def _ebml_vint(fh, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length in bytes) of the variable-length integer at the current position.

    Element IDs keep their length-marker bit; sizes drop it.
    """
    first = fh.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = fh.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = first[0] if keep_marker else first[0] & (0xFF >> length)
    for byte in rest:
        value = value << 8 | byte
    return value, length


def _ebml_elements(fh, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, content start, content end) of the elements between ``start`` and ``end``.

    Elements are skipped by their size, never read, so the Clusters holding the frames
    cost a seek each. An element of unknown size (written by a live recorder) runs to
    ``end``, and the walk stops after it: where its next sibling starts is unknown.
    """
    pos = start
    for _ in range(_MAX_ELEMENTS):
        if pos >= end:
            return
        fh.seek(pos)
        eid = _ebml_vint(fh, keep_marker=True)
        size = _ebml_vint(fh, keep_marker=False) if eid is not None else None
        if eid is None or size is None or eid[1] > 4:
            return
        content = pos + eid[1] + size[1]
        if size[0] == (1 << 7 * size[1]) - 1:  # all value bits set: unknown size
            yield eid[0], content, end
            return
        yield eid[0], content, min(content + size[0], end)
        pos = content + size[0]


def _ebml_uint(fh, start: int, end: int) -> int | None:
    return int.from_bytes(_read_at(fh, start, end - start), "big") if 0 < end - start <= 8 else None


def _ebml_child(fh, start: int, end: int, wanted: int) -> tuple[int, int] | None:
    for eid, content, child_end in _ebml_elements(fh, start, end):
        if eid == wanted:
            return content, child_end
    return None


def _matroska_picture_size(fh, file_size: int) -> tuple[int, int] | None:
    # EBML header, then the Segment; in it the Tracks come before the Clusters of frames
    segment = _ebml_child(fh, 0, file_size, _MKV_SEGMENT)
    tracks = _ebml_child(fh, *segment, _MKV_TRACKS) if segment is not None else None
    if tracks is None:
        return None
    return _largest(_matroska_track_size(fh, content, end)
                    for eid, content, end in _ebml_elements(fh, *tracks) if eid == _MKV_TRACK_ENTRY)


def _matroska_track_size(fh, start: int, end: int) -> tuple[int, int] | None:
    """PixelWidth x PixelHeight of a track's Video element (only video tracks have one)."""
    video = _ebml_child(fh, start, end, _MKV_VIDEO)
    if video is None:
        return None
    width = height = None
    for eid, content, child_end in _ebml_elements(fh, *video):
        if eid == _MKV_PIXEL_WIDTH:
            width = _ebml_uint(fh, content, child_end)
        elif eid == _MKV_PIXEL_HEIGHT:
            height = _ebml_uint(fh, content, child_end)
    return (width, height) if width and height else None


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

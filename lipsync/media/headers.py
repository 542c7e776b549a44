"""Picture sizes read straight from file headers, without FFmpeg.

FFmpeg's stream probing decodes frames to learn a video's size, so a tiny file whose
header claims 16000x16000 costs hundreds of MB before anyone can refuse it. These readers
walk just enough of the container (PNG IHDR, JPEG SOF, MP4/MOV atoms, Matroska/WebM EBML)
to find the declared size, and return None when they cannot tell, leaving the decision to
FFmpeg.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path


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

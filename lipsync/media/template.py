"""Template input: a video (mp4, mov, mkv, webm) or a still photo (png, jpeg) of a person.

:func:`probe_template` checks a file against the limits from its headers and returns the
:class:`~lipsync.engine.TemplateInfo` the rest of the pipeline works with. Frames come out
as RGB uint8 arrays of exactly ``info.height x info.width``: the display rotation of phone
videos and EXIF-rotated photos is applied, and an odd width or height loses its last
column or row (H.264 in yuv420p needs even sizes).

:class:`TemplateReader` serves frames in any order a timeline asks for, typically
ping-pong (forward, then backward, then forward again), while holding at most one block
of decoded frames, however long the template or the output is.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lipsync.engine import RenderOptions, TemplateInfo
from lipsync.errors import MediaError, NoVideoStreamError
from lipsync.media import probe
from lipsync.media.color import ColorInfo, rgb_to_gray
from lipsync.media.headers import declared_picture_size

VIDEO_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi"})
IMAGE_FORMATS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe"})
# Frame rates people's cameras nominally record at; measured averages snap to them.
_COMMON_FPS = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
               Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60), Fraction(120))
# Decoded frames kept for backward playback: about this many bytes of YUV 4:2:0.
BLOCK_BYTES = 192 * 1024**2
MAX_BLOCK_FRAMES = 64
MIN_BLOCK_FRAMES = 4


def probe_template(path: str | Path, options: RenderOptions = RenderOptions()) -> TemplateInfo:
    """Check ``path`` as a template and describe the frames it will deliver.

    Raises :class:`MediaError` (unreadable, not a video or image, no decodable frame),
    :class:`NoVideoStreamError` (audio-only) or :class:`MediaLimitError` (file size,
    pixels, duration, frame count or frame rate above ``options.limits``), always naming
    the file.
    """
    path = Path(path)
    limits = options.limits
    probe.check_file(path, limits)
    # before FFmpeg opens the file: its stream probing decodes a frame of the declared size
    declared = declared_picture_size(path)
    if declared is not None:
        probe.check_pixels(*declared, limits, path)
    with probe.open_media(path, max_pixels=limits.max_pixels) as container:
        stream = _video_stream(container, path)
        names = set(probe.format_names(container))
        is_still = bool(names & IMAGE_FORMATS)
        if not is_still and not names & VIDEO_FORMATS:
            raise MediaError(f"not a supported video or image (detected format {container.format.name}); "
                             "use mp4, mov, mkv, webm, png or jpeg", path=path)
        ctx = stream.codec_context
        probe.check_pixels(ctx.width, ctx.height, limits, path)
        if is_still:
            fps, frame_count = float(options.still_fps), 1
        else:
            fps, frame_count = _check_video_headers(container, stream, path, options)
        first = _first_frame(container, stream, path)
        width, height = first.width, first.height
        if _quarter_turns(first.rotation) % 2:
            width, height = height, width
        if not is_still and frame_count == 0:
            frame_count = _count_packets(container, stream, path, max_frames=int(limits.max_template_seconds * fps) + 1)
            probe.check_seconds(frame_count / fps, limits.max_template_seconds, path, "template video")
        if width < 2 or height < 2:
            raise MediaError(f"the picture is too small ({width}x{height})", path=path)
        return TemplateInfo(path=path, width=width & ~1, height=height & ~1, fps=fps,
                            frame_count=max(1, frame_count), is_still=is_still, color=ColorInfo.of_frame(first))


def _video_stream(container, path: Path):
    probe.require_media_streams(container, path)
    # cover art inside an audio file is a "video" stream too, but not a template
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise NoVideoStreamError("no video stream: an audio file cannot be a template (use a video or a photo)",
                                 path=path)
    return streams[0]


def _check_video_headers(container, stream, path: Path, options: RenderOptions) -> tuple[float, int]:
    """(fps, declared frame count or 0 when the headers do not state it)."""
    limits = options.limits
    rate = probe.stream_fps(stream)
    if rate is None:
        raise MediaError("the video has no frame rate", path=path)
    probe.check_fps(float(rate), limits, path)
    fps = float(_snap_fps(rate))
    probe.check_seconds(probe.declared_seconds(container, stream), limits.max_template_seconds, path, "template video")
    # MP4/MOV sample tables count frames exactly; other containers get counted by demuxing
    declared = stream.frames if "mov" in probe.format_names(container) else 0
    if declared:
        probe.check_seconds(declared / fps, limits.max_template_seconds, path, "template video")
        _check_mp4_complete(stream, path)
    return fps, declared


def _snap_fps(rate: Fraction) -> Fraction:
    """A variable-rate phone clip averaging 29.87 fps is a 29.97 fps recording."""
    nearest = min(_COMMON_FPS, key=lambda common: abs(rate - common))
    if abs(rate - nearest) <= nearest / 100:
        return nearest
    return rate.limit_denominator(1001)


def _check_mp4_complete(stream, path: Path) -> None:
    # The sample table says where every frame lies; a frame past the end of the file
    # means the upload was cut short (the moov atom was written first, so it opens).
    entries = stream.index_entries
    if len(entries):
        last = entries[len(entries) - 1]
        end = last.pos + last.size
        size = path.stat().st_size
        if end > size:
            raise MediaError(f"the file is truncated: its frames run to byte {end} but the file has {size}", path=path)


def _count_packets(container, stream, path: Path, *, max_frames: int) -> int:
    """Frames of a container that does not state a count (mkv, webm): one demux pass."""
    count = 0
    try:
        container.seek(0)
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:
                count += 1
                if count > max_frames:
                    break
    except av.error.FFmpegError as e:
        raise MediaError(f"the video cannot be read ({probe.describe_av_error(e)})", path=path) from None
    return count


def _first_frame(container, stream, path: Path) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as e:
        raise MediaError(f"the picture cannot be decoded ({probe.describe_av_error(e)}): damaged or not an image/video",
                         path=path) from None
    raise MediaError("no picture could be decoded from the file", path=path)


def _quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns that display a frame upright."""
    return int(round(rotation / 90.0)) % 4


def to_rgb(frame: av.VideoFrame, width: int, height: int, color: ColorInfo | None = None) -> np.ndarray:
    """A decoded frame as upright RGB uint8 (height, width, 3), cropped to even size, its
    YUV read with the source's matrix and range (``color``; by default what the frame says)."""
    return _upright(frame, width, height, (color or ColorInfo.of_frame(frame)).to_rgb)


def to_gray(frame: av.VideoFrame, width: int, height: int, color: ColorInfo | None = None) -> np.ndarray:
    """:func:`to_rgb`'s picture as full-range luma, uint8 (height, width)."""
    return _upright(frame, width, height, (color or ColorInfo.of_frame(frame)).to_gray)


def _upright(frame: av.VideoFrame, width: int, height: int, convert) -> np.ndarray:
    turns = _quarter_turns(frame.rotation)
    # the size before rotation that gives (width, height) after it
    tw, th = (height, width) if turns % 2 else (width, height)
    size = {}
    if frame.width - tw not in (0, 1) or frame.height - th not in (0, 1):
        size = {"width": tw, "height": th}  # the resolution changed mid-stream: scale to the first
    picture = convert(frame, **size)
    if turns:
        picture = np.rot90(picture, turns)
    if picture.shape[0] != height or picture.shape[1] != width:
        picture = picture[:height, :width]
    return np.ascontiguousarray(picture)


@dataclass
class _PacketIndex:
    """Presentation timestamps of every frame, and which of them are keyframes."""

    pts: list[int]  # sorted: pts[i] is frame i
    keyframes: list[int]  # sorted keyframe pts

    def frame_of(self, pts: int) -> int | None:
        i = bisect.bisect_left(self.pts, pts)
        return i if i < len(self.pts) and self.pts[i] == pts else None

    def keyframe_before(self, index: int, skip: int = 0) -> int | None:
        """pts of the ``skip``-th keyframe at or before frame ``index`` (None: from the start)."""
        k = bisect.bisect_right(self.keyframes, self.pts[min(index, len(self.pts) - 1)]) - 1 - skip
        return self.keyframes[k] if k >= 0 else None


class TemplateReader:
    """Frames of one template, in any order, with bounded memory.

    Forward runs decode sequentially. A backward run decodes a block of up to
    ``block_frames`` frames ending at the requested one (seeking to the keyframe at or
    before the block start) and serves it from memory. The last ``block_frames`` decoded
    frames stay cached as compact YUV, so the turn at either end of a ping-pong costs no
    extra decoding and a template shorter than a block is decoded only once.

    Not thread-safe: use one reader per thread.
    """

    def __init__(self, info: TemplateInfo, *, block_frames: int | None = None):
        self.info = info
        self.block_frames = block_frames or default_block_frames(info.width, info.height)
        # requested frames the file could not deliver (header count above what decodes):
        # the nearest earlier frame was shown instead
        self.missing_frames = 0
        self._container = None
        self._stream = None
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next = 0  # frame number the sequential decoder yields next
        self._end: int | None = None  # first frame number past the decodable end, once known
        self._cache: OrderedDict[int, av.VideoFrame] = OrderedDict()
        self._index: _PacketIndex | None = None
        self._still: np.ndarray | None = None
        self._still_luma: np.ndarray | None = None

    # ------------------------------------------------------------------ public
    def iter_forward(self, *, gray: bool = False) -> Iterator[np.ndarray]:
        """Every frame once, in order."""
        return self.frames(range(self.info.frame_count), gray=gray)

    def frames(self, indices: Iterable[int], *, gray: bool = False) -> Iterator[np.ndarray]:
        """The frames at ``indices`` (each in 0..frame_count-1), in the order given: RGB
        (H, W, 3), or with ``gray`` their luma (H, W), both uint8.

        Each yielded array is new and may be modified, except for a still image, where
        the same read-only array is yielded every time.
        """
        n = self.info.frame_count
        convert = to_gray if gray else to_rgb
        for idx in indices:
            idx = int(idx)
            if not 0 <= idx < n:
                raise IndexError(f"{self.info.path}: template frame {idx} is out of range 0..{n - 1}")
            if self.info.is_still:
                yield self._still_gray() if gray else self._still_frame()
            else:
                yield convert(self._frame(idx), self.info.width, self.info.height, self.info.color)

    @property
    def cached_frames(self) -> int:
        """Decoded frames held right now (at most ``block_frames``)."""
        return len(self._cache)

    def close(self) -> None:
        self._close_decoder()
        self._cache.clear()
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> TemplateReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ decoding
    def _open(self):
        if self._container is None:
            # already checked by probe_template: probing may decode at the full size
            self._container = probe.open_media(self.info.path, max_pixels=None)
            self._stream = _video_stream(self._container, self.info.path)
            self._stream.thread_type = "AUTO"
        return self._container

    def _still_frame(self) -> np.ndarray:
        if self._still is None:
            container = self._open()
            frame = _first_frame(container, self._stream, self.info.path)
            self._still = to_rgb(frame, self.info.width, self.info.height, self.info.color)
            self._still.flags.writeable = False
            self.close()
        return self._still

    def _still_gray(self) -> np.ndarray:
        if self._still_luma is None:
            self._still_luma = rgb_to_gray(self._still_frame())
            self._still_luma.flags.writeable = False
        return self._still_luma

    def _frame(self, idx: int) -> av.VideoFrame:
        hit = self._cache.get(idx)
        if hit is not None:
            return hit
        if self._end is not None and idx >= self._end:
            return self._hold(idx)
        if idx < self._next:
            # behind the decoder: decode the block that ends at idx, to serve it backwards
            self._seek_to(max(0, idx - self.block_frames + 1))
        elif self._decoder is None or (idx - self._next > self.block_frames and self._keyframe_ahead(idx)):
            self._seek_to(idx)
        return self._advance_to(idx)

    def _keyframe_ahead(self, idx: int) -> bool:
        """Whether seeking beats decoding on from the current position."""
        index = self._packet_index()
        if index is None:
            return False
        key = index.keyframe_before(idx)
        start = index.frame_of(key) if key is not None else 0
        return start is not None and start > self._next

    def _seek_to(self, start: int) -> None:
        """Position the decoder at a keyframe at or before frame ``start``."""
        index = self._packet_index() if start > 0 else None
        self._close_decoder()
        container = self._open()
        skip = 0
        while index is not None:
            key = index.keyframe_before(start, skip)
            if key is None:
                break
            container.seek(key, stream=self._stream, backward=True)
            self._decoder = self._decode(container)
            first = next(self._decoder, None)
            found = index.frame_of(first.pts) if first is not None and first.pts is not None else None
            if found is not None and found <= start:
                self._remember(found, first)
                self._next = found + 1
                return
            # landed after the block start (a demuxer seeking by decode time): one keyframe earlier
            self._close_decoder()
            skip += 1
        # no usable timestamps: count from the first frame
        container.seek(0)
        self._decoder, self._next = self._decode(container), 0

    def _advance_to(self, idx: int) -> av.VideoFrame:
        while self._next <= idx:
            frame = next(self._decoder, None)
            if frame is None:
                self._end = self._next
                self._close_decoder()
                return self._hold(idx)
            number = self._next
            if self._index is not None and frame.pts is not None:
                found = self._index.frame_of(frame.pts)
                if found is not None:
                    number = found
            if number < self._next:
                continue  # a leading picture of an open GOP, decoded after a seek
            self._remember(number, frame)
            self._next = number + 1
        found = self._cache.get(idx)
        return found if found is not None else self._hold(idx)

    def _hold(self, idx: int) -> av.VideoFrame:
        """The nearest earlier frame stands in for one that does not decode."""
        self.missing_frames += 1
        if self._end is not None and idx >= self._end:
            if self._end == 0:
                raise MediaError("no frame of the template video can be decoded", path=self.info.path)
            last = self._end - 1
            cached = self._cache.get(last)
            return cached if cached is not None else self._frame(last)
        earlier = [k for k in self._cache if k < idx]
        if earlier:
            return self._cache[max(earlier)]
        if idx == 0:
            raise MediaError("the first frame of the template video cannot be decoded", path=self.info.path)
        return self._frame(idx - 1)

    def _remember(self, number: int, frame: av.VideoFrame) -> None:
        self._cache[number] = frame
        self._cache.move_to_end(number)
        while len(self._cache) > self.block_frames:
            self._cache.popitem(last=False)

    def _decode(self, container) -> Iterator[av.VideoFrame]:
        try:
            yield from container.decode(self._stream)
        except av.error.FFmpegError as e:
            raise MediaError(f"the template video cannot be decoded ({probe.describe_av_error(e)})",
                             path=self.info.path) from None

    def _close_decoder(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def _packet_index(self) -> _PacketIndex | None:
        """Built once, lazily (only backward or long forward jumps need it), on a second
        handle so that the sequential decoder keeps its place."""
        if self._index is None:
            pts: list[int] = []
            keys: list[int] = []
            with probe.open_media(self.info.path, max_pixels=None) as container:
                stream = _video_stream(container, self.info.path)
                try:
                    for packet in container.demux(stream):
                        if packet.size and packet.pts is not None and not packet.is_discard:
                            pts.append(packet.pts)
                            if packet.is_keyframe:
                                keys.append(packet.pts)
                except av.error.FFmpegError as e:
                    raise MediaError(f"the template video cannot be read ({probe.describe_av_error(e)})",
                                     path=self.info.path) from None
            pts.sort()
            keys.sort()
            usable = bool(keys) and len(set(pts)) == len(pts)
            self._index = _PacketIndex(pts, keys) if usable else _PacketIndex([], [])
        return self._index if self._index.pts else None


def default_block_frames(width: int, height: int) -> int:
    frame_bytes = max(1, width * height * 3 // 2)
    return int(min(MAX_BLOCK_FRAMES, max(MIN_BLOCK_FRAMES, BLOCK_BYTES // frame_bytes)))

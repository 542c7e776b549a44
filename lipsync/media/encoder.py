"""The output writer: H.264 + AAC in an MP4 that streams from a link.

* H.264 (libx264, yuv420p, High profile) with a keyframe at least every two seconds, so
  a player can start anywhere in a presigned link without a long wait. Its colour
  description (matrix, range, primaries, transfer) is the source's
  (:class:`~lipsync.media.color.ColorInfo`): frames are converted and tagged with it, so
  colours survive every encode.
* AAC audio at the source's rate when players everywhere take it (44.1/48 kHz), else 48 kHz.
* ``movflags=+faststart``: the index (moov) is moved before the media data (mdat), so a
  browser starts playing before the download ends.
* The file is written under a hidden temporary name in the same folder and renamed into
  place by :meth:`VideoWriter.close`; a render that fails never leaves a half-written MP4
  under the final name, and :meth:`VideoWriter.abort` removes the temporary file.

Soft subtitles, when given, go into a mov_text track (MP4 timed text, which players offer
as captions). Callers feed video frames and audio blocks alternately, the audio up to the time of the
video written so far (:attr:`VideoWriter.video_seconds`), so the muxer interleaves the two
streams as it goes instead of buffering one of them whole.
"""

from __future__ import annotations

import os
import secrets
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lipsync.engine import RenderOptions
from lipsync.media.color import ColorInfo

AAC_RATES = (44100, 48000)
KEYFRAME_SECONDS = 2.0
# mov_text (MP4 timed text) is encoded from ASS events; FFmpeg's encoder wants a header
_ASS_HEADER = (b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
               b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
               b"Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
               b"Alignment, MarginL, MarginR, MarginV, Encoding\nStyle: Default,Sans,16,&Hffffff,&Hffffff,&H0,&H0,"
               b"0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n[Events]\nFormat: Layer, Start, End, Style, Name, "
               b"MarginL, MarginR, MarginV, Effect, Text\n")
_TEXT_TIME_BASE = Fraction(1, 1000)


def add_text_track(container, language: str = "und"):
    """A mov_text (soft subtitle) stream in ``container``, timed in milliseconds."""
    stream = container.add_stream("mov_text")
    stream.codec_context.subtitle_header = _ASS_HEADER
    stream.codec_context.time_base = _TEXT_TIME_BASE
    stream.time_base = _TEXT_TIME_BASE
    stream.metadata["language"] = language
    return stream


def text_packet(stream, start: float, end: float, text: str) -> av.Packet:
    """One mov_text sample: a 16-bit length, then the UTF-8 text."""
    data = text.encode("utf-8")[:65535]
    packet = av.Packet(len(data).to_bytes(2, "big") + data)
    packet.stream = stream
    packet.time_base = _TEXT_TIME_BASE
    packet.pts = packet.dts = int(round(start * 1000))
    packet.duration = max(1, int(round((end - start) * 1000)))
    return packet


def output_audio_rate(source_rate: int) -> int:
    """The AAC sample rate for a source at ``source_rate`` Hz."""
    return source_rate if source_rate in AAC_RATES else 48000


def fps_fraction(fps: float) -> Fraction:
    """25.0 -> 25, 29.97002997 -> 30000/1001: an exact time base for a float rate."""
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Writes one MP4. Use as a context manager, or call :meth:`close` / :meth:`abort`."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, audio_rate: int,
                 options: RenderOptions = RenderOptions(), *, audio_channels: int = 1, subtitles=(),
                 color: ColorInfo | None = None):
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"H.264 in yuv420p needs an even, positive size; got {width}x{height}")
        if audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {audio_channels}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.fps = fps_fraction(fps)
        self.audio_rate = int(audio_rate)
        self.audio_channels = audio_channels
        self.color = (color or ColorInfo.for_size(width, height)).for_output()
        self.frames_written = 0
        self.samples_written = 0  # audio samples per channel handed to the writer
        self._samples_encoded = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        self._closed = False
        self._container = av.open(str(self._tmp), mode="w", format="mp4",
                                  container_options={"movflags": "+faststart"})
        try:
            self._video = self._add_video(options)
            self._audio = self._add_audio(options)
            # soft subtitles (objects with start, end, text), muxed as the video reaches them
            self._cues = sorted(subtitles, key=lambda c: c.start)
            self._text = add_text_track(self._container) if self._cues else None
        except BaseException:
            self.abort()
            raise
        self._fifo = av.AudioFifo()

    def _add_video(self, options: RenderOptions):
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = 1 / self.fps
        ctx.gop_size = max(1, round(KEYFRAME_SECONDS * float(self.fps)))
        self.color.tag(ctx)
        # A fixed GOP (keyframes exactly every KEYFRAME_SECONDS, no scene-cut keyframes, a
        # fixed B-frame pattern): links seek predictably, and x264 chooses the same frame
        # types whatever the engine changed, so untouched regions encode the same way.
        stream.options = {"crf": str(options.crf), "preset": options.preset, "profile": "high",
                          "x264-params": "scenecut=0:b-adapt=0"}
        return stream

    def _add_audio(self, options: RenderOptions):
        layout = "mono" if self.audio_channels == 1 else "stereo"
        stream = self._container.add_stream("aac", rate=self.audio_rate, layout=layout)
        stream.codec_context.bit_rate = int(options.audio_bitrate)
        return stream

    # ------------------------------------------------------------------ progress
    @property
    def video_seconds(self) -> float:
        """Time covered by the video frames written so far."""
        return self.frames_written / float(self.fps)

    @property
    def audio_seconds(self) -> float:
        return self.samples_written / self.audio_rate

    # ------------------------------------------------------------------ writing
    def write_frames(self, frames: np.ndarray) -> None:
        """Append RGB uint8 frames: (T, H, W, 3), or one (H, W, 3) frame."""
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected uint8 frames of shape (T, {self.height}, {self.width}, 3), "
                             f"got {frames.dtype} {frames.shape}")
        for rgb in frames:
            # converted here, with the matrix and range the stream is tagged with
            self.write_picture(self.color.to_yuv420p(rgb))

    def write_picture(self, frame: av.VideoFrame) -> None:
        """Append one frame made yuv420p at this size with :attr:`color` (``color.to_yuv420p``
        or ``color.scaled_to_yuv420p``): for callers that scale and convert in one step."""
        if frame.format.name != "yuv420p" or (frame.width, frame.height) != (self.width, self.height):
            raise ValueError(f"expected a yuv420p frame of {self.width}x{self.height}, "
                             f"got {frame.format.name} {frame.width}x{frame.height}")
        frame.pts = self.frames_written
        frame.time_base = self._video.codec_context.time_base
        self._mux(self._video.encode(frame))
        self.frames_written += 1
        self._write_cues(until=self.video_seconds)

    def _write_cues(self, until: float | None) -> None:
        while self._cues and (until is None or self._cues[0].start <= until):
            cue = self._cues.pop(0)
            self._container.mux(text_packet(self._text, cue.start, cue.end, cue.text))

    def write_audio(self, samples: np.ndarray) -> None:
        """Append float32 samples at ``audio_rate``: (n,) mono or (channels, n)."""
        arr = np.asarray(samples, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[0] != self.audio_channels:
            raise ValueError(f"expected {self.audio_channels} channel(s) of samples, got shape {samples.shape}")
        if arr.shape[1] == 0:
            return
        layout = "mono" if self.audio_channels == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format="fltp", layout=layout)
        frame.sample_rate = self.audio_rate
        self._fifo.write(frame)
        self.samples_written += arr.shape[1]
        self._drain_audio(final=False)

    def _drain_audio(self, *, final: bool) -> None:
        size = self._audio.codec_context.frame_size or 1024
        while self._fifo.samples >= size or (final and self._fifo.samples):
            frame = self._fifo.read(min(size, self._fifo.samples))
            frame.pts = self._samples_encoded
            frame.time_base = Fraction(1, self.audio_rate)
            self._samples_encoded += frame.samples
            self._mux(self._audio.encode(frame))

    def _mux(self, packets) -> None:
        for packet in packets:
            self._container.mux(packet)

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        """Flush both encoders, finish the MP4 and move it to its final name."""
        if self._closed:
            raise RuntimeError(f"{self.path}: writer already closed")
        try:
            self._drain_audio(final=True)
            self._write_cues(until=None)
            self._mux(self._video.encode(None))
            self._mux(self._audio.encode(None))
            self._container.close()  # writes the index, then moves it to the front (faststart)
            self._closed = True
            with open(self._tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Give up: close quietly and delete the temporary file."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

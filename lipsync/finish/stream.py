"""The finished video written in one pass, frame by frame.

:class:`FinishedWriter` takes the main video's frames and audio as they come and writes
the finished MP4: the intro first, then each main frame retimed to the finished rate,
reframed, watermarked and captioned, then the outro -- one encode for all of it. The
render pipeline hands it the engine's frames directly (no rendered file is decoded
again); :func:`lipsync.finish.finish_video` hands it the frames of a rendered file.

It has the writing side of :class:`lipsync.media.encoder.VideoWriter` (``write_frames``,
``write_audio``, ``video_seconds``, ``audio_seconds``, ``close``, ``abort``), counted in
the main video's own time, so the render pipeline drives either the same way.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from lipsync.engine import RenderOptions, TemplateInfo
from lipsync.errors import MediaError, NoAudioStreamError
from lipsync.finish.faces import FacePath
from lipsync.finish.picture import FramePlan, WatermarkLayer, YuvOverlay, crop_window, fit_into, plan_reframe
from lipsync.finish.spec import FinishSpec, output_size
from lipsync.finish.subtitles import Cue, SubtitleBurner, read_cues, shifted
from lipsync.media.audio import iter_audio
from lipsync.media.encoder import VideoWriter
from lipsync.media.template import TemplateReader, probe_template


@dataclass(frozen=True)
class Clip(TemplateInfo):
    """One part of the finished video, probed once (probing a long clip counts its packets)."""

    role: str = "video"  # intro, video, outro


@dataclass
class FinishReport:
    path: Path
    width: int
    height: int
    fps: float
    duration: float
    method: str  # "copy", "redraw" (the rendered file decoded again) or "one pass" (the render's frames)
    notes: list[str] = field(default_factory=list)


@dataclass
class Finishing:
    """A :class:`FinishSpec` resolved against the main video: the clips probed, the cues
    timed on the finished video, its size and rate."""

    spec: FinishSpec
    main: TemplateInfo
    intro: Clip | None
    outro: Clip | None
    cues: list[Cue]
    size: tuple[int, int]
    fps: float

    @property
    def clips(self) -> list[Clip]:
        """Every part in order, the main video as a :class:`Clip` of role "video"."""
        main = self.main if isinstance(self.main, Clip) else Clip(
            **{f.name: getattr(self.main, f.name) for f in dataclasses.fields(TemplateInfo)})
        return [c for c in (self.intro, main, self.outro) if c is not None]

    @property
    def reframes(self) -> bool:
        return self.spec.reframes and self.size != (self.main.width, self.main.height)

    @property
    def same_format_clips(self) -> bool:
        """Whether the intro and outro have the main video's size and rate (then they may be
        joined by copying their packets)."""
        return all((c.width, c.height) == (self.main.width, self.main.height) and abs(c.fps - self.main.fps) < 1e-3
                   for c in (self.intro, self.outro) if c is not None)


def resolve(spec: FinishSpec, main: TemplateInfo, options: RenderOptions = RenderOptions()) -> Finishing:
    """``spec`` for the main video ``main``. Raises :class:`MediaError` naming the file for
    an intro, outro or subtitle file that cannot be used -- before anything is rendered."""
    intro = probe_clip(spec.intro, "intro", options) if spec.intro is not None else None
    outro = probe_clip(spec.outro, "outro", options) if spec.outro is not None else None
    intro_s = intro.duration if intro is not None else 0.0
    cues: list[Cue] = []
    if spec.subtitles is not None and spec.subtitle_mode != "off":
        cues = shifted(read_cues(spec.subtitles), intro_s, until=intro_s + main.duration)
    size = output_size((main.width, main.height), spec.resolution, spec.aspect)
    return Finishing(spec, main, intro, outro, cues, size, float(spec.fps or main.fps))


def probe_clip(path: Path, role: str, options: RenderOptions) -> Clip:
    info = probe_template(path, options)
    if info.is_still:
        raise MediaError(f"the {role} must be a video clip, not a still image", path=path)
    return Clip(**{f.name: getattr(info, f.name) for f in dataclasses.fields(info)}, role=role)


def count_cues(cues: list[Cue]) -> str:
    return f"{len(cues)} cue" + ("" if len(cues) == 1 else "s")


class FinishedWriter:
    """Writes ``finishing`` to ``output`` while the main video's frames arrive (see the module doc).

    ``faces`` is where the face is in each main frame, for a reframe that follows it
    (None: not followed -- the window stays in the middle). ``audio_rate`` and
    ``audio_channels`` are the finished file's: the main video's audio is not resampled.
    """

    def __init__(self, output: Path, finishing: Finishing, options: RenderOptions, *, audio_rate: int,
                 audio_channels: int, faces: FacePath | None = None, method: str = "one pass"):
        self.finishing = f = finishing
        self.method = method
        main, size = f.main, f.size
        self.notes: list[str] = []
        if f.intro or f.outro:
            self.notes.append("joined: " + " + ".join(c.role for c in f.clips))
        self.plan: FramePlan | None = None
        if f.reframes:
            path = faces if faces is not None else FacePath(np.full((main.frame_count, 2), np.nan),
                                                            np.full((main.frame_count, 2), np.nan), 0, 0)
            self.plan = plan_reframe((main.width, main.height), size, path, main.fps)
            self.notes.append(f"reframed {main.width}x{main.height} -> {size[0]}x{size[1]} ({self.plan.note})")
        elif (main.width, main.height) != size:
            self.notes.append(f"scaled {main.width}x{main.height} -> {size[0]}x{size[1]}")
        if abs(f.fps - main.fps) > 1e-3:
            self.notes.append(f"frame rate {main.fps:g} -> {f.fps:g}")
        mark = WatermarkLayer(f.spec.watermark, size) if f.spec.watermark is not None else None
        self.burner = SubtitleBurner(f.cues, *size) if f.spec.burns and f.cues else None
        self.captions: dict[int, YuvOverlay] = {}  # each cue drawn once, when first shown
        if mark:
            self.notes.append("watermark")
        if self.burner:
            self.notes.append(f"subtitles burned in: {count_cues(f.cues)}")
        if f.cues and f.spec.soft_subtitles:
            self.notes.append(f"soft subtitles: {count_cues(f.cues)}")
        self.rate, self.channels = int(audio_rate), int(audio_channels)
        # the main video's colour description (intro and outro are read with their own)
        self.writer = VideoWriter(output, size[0], size[1], f.fps, self.rate, options, audio_channels=self.channels,
                                  subtitles=f.cues if f.spec.soft_subtitles else (), color=main.color)
        self.mark = mark.overlay(self.writer.color) if mark is not None else None
        # x264 on its own thread: drawing the next frames overlaps with encoding
        self.encoder = _Background()
        self.frames_out = 0  # finished frames handed to the encoder
        self.main_start = 0  # finished frame where the main video begins
        self.main_count = max(1, int(round(main.duration * f.fps)))
        self.main_in = 0  # main frames received
        self.main_shown = 0  # finished frames made of them
        self.main_samples = 0  # main audio samples received
        self.samples_out = 0  # audio samples handed to the encoder (it may not have written them yet)
        self.last: tuple[int, np.ndarray] | None = None
        self.closed = False
        try:
            if f.intro is not None:
                self._write_clip(f.intro)
            self.main_start = self.frames_out
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ the main video, as it comes
    @property
    def video_seconds(self) -> float:
        return self.main_in / self.finishing.main.fps

    @property
    def audio_seconds(self) -> float:
        return self.main_samples / self.rate

    def write_frames(self, frames: np.ndarray) -> None:
        """Main frames, in order: (T, H, W, 3) or one (H, W, 3) uint8 at the main video's size."""
        if frames.ndim == 3:
            frames = frames[None]
        for frame in frames:
            k = self.main_in
            self.main_in += 1
            while self.main_shown < self.main_count and self._source_of(self.main_shown) <= k:
                self._emit(self._draw_main(frame, k))
                self.main_shown += 1
        if len(frames):  # a copy: a view would keep the caller's whole chunk of frames alive
            self.last = (self.main_in - 1, np.array(frames[-1]))

    def write_audio(self, samples: np.ndarray) -> None:
        """The main video's audio at ``audio_rate``, cut where the main video ends."""
        block = np.atleast_2d(np.asarray(samples, np.float32))
        self.main_samples += block.shape[1]
        block = block[:, :max(0, self._main_end_samples() - self.samples_out)]
        if block.shape[1]:
            self.samples_out += block.shape[1]
            self.encoder.call(self.writer.write_audio, block)

    def close(self) -> FinishReport:
        """The main video's last frame held and its audio padded to its length, then the
        outro, then the file finished and in place."""
        try:
            while self.last is not None and self.main_shown < self.main_count:  # decoded short: hold the last
                self._emit(self._draw_main(self.last[1], self.last[0]))
                self.main_shown += 1
            if self._main_end_samples() > self.samples_out:  # audio shorter than its picture: silence
                silence = np.zeros((self.channels, self._main_end_samples() - self.samples_out), np.float32)
                self.samples_out += silence.shape[1]
                self.encoder.call(self.writer.write_audio, silence)
            if self.finishing.outro is not None:
                self._write_clip(self.finishing.outro)
            self.encoder.call(self.writer.close)
            self.encoder.finish()
            self.closed = True
        except BaseException:
            self.abort()
            raise
        f = self.finishing
        return FinishReport(self.writer.path, f.size[0], f.size[1], f.fps, self.frames_out / f.fps, self.method,
                            list(self.notes))

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.encoder.finish(quietly=True)
            self.writer.abort()

    # ------------------------------------------------------------------ drawing
    def _source_of(self, shown: int) -> int:
        """The main frame showing at finished frame ``shown`` of the main video."""
        return _source_frame(shown, self.finishing.main, self.finishing.fps)

    def _draw_main(self, frame: np.ndarray, k: int) -> av.VideoFrame:
        """Main frame ``k`` at the finished size, converted for the encoder. A frame that is
        cropped or scaled is scaled and converted in one step: a quarter of the time of
        scaling in RGB, then converting."""
        size, color = self.finishing.size, self.writer.color
        if self.plan is not None and self.plan.mode == "crop":
            return color.scaled_to_yuv420p(crop_window(frame, self.plan, k), *size)
        if self.plan is not None:
            return color.to_yuv420p(fit_into(frame, size))
        if frame.shape[:2] != (size[1], size[0]):
            return color.scaled_to_yuv420p(frame, *size)
        return color.to_yuv420p(frame)

    def _emit(self, picture: av.VideoFrame) -> None:
        """One finished frame (a new one each time: nothing is drawn twice), watermarked and
        captioned in its YUV, to the encoder."""
        if self.mark is not None:
            self.mark.draw(picture)
        if self.burner is not None:
            cue = self.burner.cue_at(self.frames_out / self.finishing.fps)
            if cue is not None:
                if cue not in self.captions:
                    self.captions[cue] = YuvOverlay(*self.burner.picture(cue), self.writer.color)
                self.captions[cue].draw(picture)
        self.frames_out += 1
        self.encoder.call(self.writer.write_picture, picture)

    def _write_clip(self, clip: Clip) -> None:
        """An intro or outro: its frames fitted to the finished size at the finished rate,
        its audio cut or padded to its picture's length."""
        fps = self.finishing.fps
        count = max(1, int(round(clip.duration * fps)))
        with TemplateReader(clip) as reader:
            for frame in _retimed(reader.iter_forward(), clip, fps, count):
                self._emit(self.writer.color.to_yuv420p(fit_into(frame, self.finishing.size)))
        until = int(round(self.frames_out / fps * self.rate))
        self.encoder.call(_write_clip_audio, self.writer, clip, self.rate, self.channels, until)
        self.samples_out = until

    def _main_end_samples(self) -> int:
        return int(round((self.main_start + self.main_count) / self.finishing.fps * self.rate))


def _source_frame(shown: int, source: TemplateInfo, fps: float) -> int:
    """The frame of ``source`` showing at frame ``shown`` of the same video played at ``fps``."""
    return min(source.frame_count - 1, int((shown + 0.5) * source.fps / fps))


def _retimed(frames, clip: Clip, fps: float, count: int):
    """Each of ``count`` frames at ``fps``: the clip's frame showing at that time (repeated
    or skipped as the rates differ; the last one held when the clip decodes short)."""
    j = 0
    last = None
    for k, frame in enumerate(frames):
        last = frame
        while j < count and _source_frame(j, clip, fps) <= k:
            yield frame
            j += 1
        if j >= count:
            return
    while last is not None and j < count:
        yield last
        j += 1


def _write_clip_audio(writer: VideoWriter, clip: Clip, rate: int, channels: int, until: int) -> None:
    """The clip's audio, cut or padded with silence to end exactly at sample ``until``."""
    layout = "mono" if channels == 1 else "stereo"
    want = until - writer.samples_written
    try:
        for block in iter_audio(clip.path, rate=rate, layout=layout, fmt="fltp"):
            block = np.atleast_2d(block)[:, :max(want, 0)]
            writer.write_audio(block)
            want -= block.shape[1]
            if want <= 0:
                break
    except NoAudioStreamError:
        pass  # a silent clip: silence below
    if want > 0:
        writer.write_audio(np.zeros((channels, want), np.float32))


class _Background:
    """Runs calls in order on one worker thread; the first error is raised to the caller at
    its next call or at :meth:`finish`. At most ``depth`` calls wait, bounding memory."""

    def __init__(self, depth: int = 6):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lipsync-finish-encode", daemon=True)
        self._thread.start()
        self._finished = False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                    self._error = e

    def call(self, fn, *args) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((fn, args))

    def finish(self, quietly: bool = False) -> None:
        if not self._finished:
            self._finished = True
            self._queue.put(None)
            self._thread.join()
        if self._error is not None and not quietly:
            raise self._error

"""The streaming render pipeline: template frames -> engine -> H.264/AAC MP4.

Three stages run at once, joined by queues, so decoding, the engine and encoding overlap
on a multi-core machine. Memory stays flat however long the audio is: at most
``CHUNKS_IN_FLIGHT`` chunks of ``options.chunk_frames`` frames (fewer for templates over
720p: ``CHUNK_PIXELS``) exist at any time (one per stage: enough that the slowest stage
never waits while the others keep up), plus the template reader's block and the
encoder's lookahead::

    decode thread                 calling thread              encode thread
    TemplateReader.frames  --q->  session.process(chunk) --q-> VideoWriter: video, then
    (ping-pong indices)                                         the audio up to its time

Decoding starts before the engine's preparation (``engine.start``: imports, face analysis,
audio features) and fills the chunk slots meanwhile, so a job's start-up overlaps its
first decode instead of preceding it.

A render with finishing options (``finish=``: a new size or shape, frame rate, watermark,
burned subtitles, clips in another format) is finished in the same pass: the encode
thread writes through a :class:`lipsync.finish.stream.FinishedWriter`, which reframes,
draws and retimes the engine's frames and encodes them once, after the intro and before
the outro. Only what needs no new picture (soft subtitles, clips of the render's own
format) is added afterwards by copying packets, and a remote engine's file is finished
the same way as any file (:func:`lipsync.finish.finish_video`).

The first error in any stage stops the others and is re-raised, as the same exception
object, by :func:`render`; the MP4 exists under ``output`` only after a complete render.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsync.device import resolve_device
from lipsync.engine import (Engine, EngineSession, FileEngine, FileRenderRequest, FrameChunk, FrameEngine,
                            ProgressFn, RenderContext, RenderOptions, RenderResult, TemplateInfo, no_progress)
from lipsync.errors import LipsyncError, as_render_error
from lipsync.media.audio import AudioInfo, iter_audio, probe_audio
from lipsync.media.encoder import VideoWriter, output_audio_rate
from lipsync.media.template import TemplateReader, probe_template
from lipsync.timeline import output_frame_count, template_index, template_indices

if TYPE_CHECKING:
    from lipsync.finish.spec import FinishSpec
    from lipsync.finish.stream import Finishing

CHUNKS_IN_FLIGHT = 3
# A chunk holds at most ``options.chunk_frames`` frames and at most this many pixels (32
# frames of 720p, 88 MB of RGB): a 1080p or 4K template's chunks hold fewer frames, so the
# frames in flight stay about the same whatever the template's size.
CHUNK_PIXELS = 32 * 1280 * 720
_POLL_S = 0.1
_DONE = object()


def render(audio: str | Path, template: str | Path, output: str | Path, *, engine: Engine,
           options: RenderOptions = RenderOptions(), progress: ProgressFn = no_progress,
           finish: FinishSpec | None = None) -> RenderResult:
    """Render ``audio`` over ``template`` with ``engine`` (of either kind) into the MP4 ``output``.

    The output has the template's frame rate (``options.still_fps`` for a photo) and
    covers the whole audio; with ``finish``, it is the finished video (see the module
    doc), and the result describes it. ``progress`` receives non-decreasing fractions ending with
    exactly 1.0 once the file is in place; the engine's preparation takes the first
    ``engine.prepare_share`` of the range. Raises :class:`lipsync.errors.LipsyncError`
    subclasses for bad input (naming the file) and whatever an engine raises; a CUDA
    out-of-memory error from any engine leaves as :class:`TransientRenderError`.
    """
    audio, template, output = Path(audio), Path(template), Path(output)
    report = _MonotonicProgress(progress)
    audio_info = probe_audio(audio, options.limits)
    template_info = probe_template(template, options)
    # the output's own folder only, never its parents: a caller's vanished work folder
    # must stay vanished (see daemon.outbox on fenced writes)
    output.parent.mkdir(exist_ok=True)
    finishing = _resolve_finish(finish, output, audio_info, template_info, options)
    try:
        if not isinstance(engine, (FileEngine, FrameEngine)):
            raise TypeError(f"{type(engine).__name__} is neither a FrameEngine nor a FileEngine")
        if finishing is not None and isinstance(engine, FrameEngine) and (
                finishing.spec.redraws or not finishing.same_format_clips):
            result = _render_frames(engine, audio, audio_info, template_info, output, options, report, finishing)
        elif finishing is not None:
            result = _render_then_finish(engine, audio, audio_info, template_info, output, options, report,
                                         finishing.spec)
        elif isinstance(engine, FileEngine):
            result = _render_file(engine, audio, audio_info, template_info, output, options, report)
        else:
            result = _render_frames(engine, audio, audio_info, template_info, output, options, report)
    except BaseException as exc:  # noqa: BLE001 - re-raised, translated where it is GPU memory
        translated = as_render_error(exc, engine=engine.name, path=template)
        if translated is exc:
            raise
        raise translated from exc
    report.finish()
    return result


def _resolve_finish(finish: FinishSpec | None, output: Path, audio_info: AudioInfo, template_info: TemplateInfo,
                    options: RenderOptions) -> Finishing | None:
    """``finish`` for this render, its clips and subtitles read before any frame is made
    (a bad one fails the render at once); None when it asks for nothing."""
    if finish is None or finish.is_noop:
        return None
    from lipsync.finish.stream import resolve

    fps = template_info.fps
    main = TemplateInfo(path=output, width=template_info.width, height=template_info.height, fps=fps,
                        frame_count=output_frame_count(audio_info.duration, fps), is_still=False,
                        color=template_info.color)
    return resolve(finish, main, options)


def _render_then_finish(engine: Engine, audio: Path, audio_info: AudioInfo, template_info: TemplateInfo,
                        output: Path, options: RenderOptions, report: _MonotonicProgress,
                        finish: FinishSpec) -> RenderResult:
    """A render finished as a file: a remote engine's, or one whose additions are copied."""
    from lipsync.finish import finish_video

    unfinished = output.with_name(f".{output.name}.unfinished.mp4")
    try:
        if isinstance(engine, FileEngine):
            result = _render_file(engine, audio, audio_info, template_info, unfinished, options, report)
        else:
            result = _render_frames(engine, audio, audio_info, template_info, unfinished, options, report)
        finished = finish_video(unfinished, output, finish, options)
    finally:
        unfinished.unlink(missing_ok=True)
    return dataclasses.replace(result, path=output, width=finished.width, height=finished.height, fps=finished.fps,
                               duration=finished.duration, frames=int(round(finished.duration * finished.fps)),
                               notes=result.notes + tuple(finished.notes))


def _render_frames(engine: FrameEngine, audio: Path, audio_info: AudioInfo, template_info: TemplateInfo,
                   output: Path, options: RenderOptions, report: _MonotonicProgress,
                   finishing: Finishing | None = None) -> RenderResult:
    fps = template_info.fps
    frame_count = output_frame_count(audio_info.duration, fps)
    share = min(max(float(engine.prepare_share), 0.0), 1.0)
    n_template = template_info.frame_count
    ctx = RenderContext(
        audio_path=audio, template=template_info, fps=fps, frame_count=frame_count, options=options,
        device=resolve_device(engine.runs_on(options.device)),
        template_index=lambda i: template_index(i, n_template),
        progress=lambda f: report(share * _clamp(f)),
    )
    pipeline = _Pipeline(audio_info, template_info, output, frame_count, options,
                         on_frames=lambda done: report(share + (1.0 - share) * done / frame_count),
                         frames_per_call=engine.frames_per_call, finishing=finishing)
    # the first chunks decode while the engine prepares (imports, face analysis, audio
    # features): on a warm template that preparation is mostly waiting on one core
    pipeline.start()
    try:
        session = engine.start(ctx)
    except BaseException:
        pipeline.abandon()
        raise
    try:
        pipeline.run(session)
        notes = list(session.notes) + pipeline.notes()
    finally:
        session.close()
    finished = pipeline.finished
    if finished is not None:
        return RenderResult(path=output, engine=engine.name, duration=finished.duration, width=finished.width,
                            height=finished.height, fps=finished.fps,
                            frames=int(round(finished.duration * finished.fps)),
                            notes=tuple(notes + finished.notes))
    return RenderResult(path=output, engine=engine.name, duration=frame_count / fps, width=template_info.width,
                        height=template_info.height, fps=fps, frames=frame_count, notes=tuple(notes))


def _render_file(engine: FileEngine, audio: Path, audio_info: AudioInfo, template_info: TemplateInfo,
                 output: Path, options: RenderOptions, report: _MonotonicProgress) -> RenderResult:
    request = FileRenderRequest(audio=audio, template=template_info, audio_duration=audio_info.duration,
                                output=output, options=options, progress=report)
    result = engine.render_file(request)
    if not output.is_file() or output.stat().st_size == 0:
        raise LipsyncError(f"the {engine.name} engine reported success but wrote no video", path=output)
    return result


class _Stopped(Exception):
    """Another stage failed; this one winds down quietly."""


class _Pipeline:
    def __init__(self, audio: AudioInfo, template: TemplateInfo, output: Path, frame_count: int,
                 options: RenderOptions, on_frames: Callable[[int], None], frames_per_call: int = 1,
                 finishing: Finishing | None = None):
        self.audio, self.template, self.output = audio, template, output
        self.finishing = finishing
        self.finished = None  # the FinishReport of a finished render, once written
        self.frame_count, self.options = frame_count, options
        self.session: EngineSession | None = None
        self.on_frames = on_frames
        call = max(1, int(frames_per_call))
        frames = min(max(1, int(options.chunk_frames)), max(1, CHUNK_PIXELS // (template.width * template.height)))
        self.chunk = -(-frames // call) * call  # rounded up to whole windows
        # the queues need no bound of their own: a chunk is only made with a free slot
        self.slots = threading.Semaphore(CHUNKS_IN_FLIGHT)
        self.to_engine: queue.Queue[Any] = queue.Queue()
        self.to_encoder: queue.Queue[Any] = queue.Queue()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.missing_frames = 0

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start filling the slots with decoded chunks, and open the output (for a finished
        render: follow the face, write the intro), before there is a session to take them."""
        self.threads = [threading.Thread(target=self._guarded, args=(stage,), name=f"lipsync-{name}")
                        for stage, name in ((self._decode, "decode"), (self._encode, "encode"))]
        for t in self.threads:
            t.start()

    def abandon(self) -> None:
        """Stop the decoding and encoding started for a session that never came."""
        self.stop.set()
        for t in self.threads:
            t.join()

    def run(self, session: EngineSession) -> None:
        self.session = session
        threads = self.threads
        try:
            self._process()
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the threads stop
            self._fail(e)
        finally:
            for t in threads:
                t.join()
        if self.error is not None:
            raise self.error

    def notes(self) -> list[str]:
        if self.missing_frames:
            return [f"{self.missing_frames} template frame(s) could not be decoded; the frame before was shown instead"]
        return []

    def _guarded(self, stage: Callable[[], None]) -> None:
        try:
            stage()
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            self._fail(e)

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _take_slot(self) -> None:
        while not self.slots.acquire(timeout=_POLL_S):
            if self.stop.is_set():
                raise _Stopped
        if self.stop.is_set():
            raise _Stopped

    def _get(self, q: queue.Queue) -> Any:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    # ------------------------------------------------------------------ stages
    def _decode(self) -> None:
        t = self.template
        with TemplateReader(t) as reader:
            for start in range(0, self.frame_count, self.chunk):
                out_idx = np.arange(start, min(start + self.chunk, self.frame_count), dtype=np.int64)
                t_idx = template_indices(out_idx, t.frame_count)
                self._take_slot()
                frames = np.empty((len(out_idx), t.height, t.width, 3), np.uint8)
                for k, frame in enumerate(reader.frames(t_idx)):
                    frames[k] = frame
                self._put(self.to_engine, FrameChunk(frames=frames, out_indices=out_idx, template_indices=t_idx))
                del frames  # hold no chunk while waiting for a free slot
            self.missing_frames = reader.missing_frames
        self._put(self.to_engine, _DONE)

    def _process(self) -> None:
        done = 0
        while True:
            chunk = self._get(self.to_engine)
            if chunk is _DONE:
                self._put(self.to_encoder, _DONE)
                return
            expected = chunk.frames.shape
            out = self.session.process(chunk)
            del chunk  # the engine's input goes as soon as its output exists
            if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != expected:
                got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
                raise LipsyncError(f"the engine returned {got} for a chunk of uint8 {expected}")
            done += len(out)
            self._put(self.to_encoder, out)
            del out  # hold no chunk while waiting for the next one
            self.on_frames(done)

    def _open_writer(self, rate: int, channels: int):
        """The plain MP4 writer, or the finishing one (same interface) for a finished render."""
        t = self.template
        if self.finishing is None:
            return VideoWriter(self.output, t.width, t.height, t.fps, rate, self.options, audio_channels=channels,
                               color=t.color)
        from lipsync.finish.faces import follow_template
        from lipsync.finish.stream import FinishedWriter

        faces = None
        if self.finishing.reframes:  # the render's faces are its template's, frame for frame
            order = template_indices(np.arange(self.frame_count, dtype=np.int64), t.frame_count)
            faces = follow_template(t, self.options.cache_dir, frames=int(order.max()) + 1).take(order)
        return FinishedWriter(self.output, self.finishing, self.options, audio_rate=rate, audio_channels=channels,
                              faces=faces)

    def _encode(self) -> None:
        a = self.audio
        channels = 1 if a.channels == 1 else 2
        rate = output_audio_rate(a.sample_rate)
        writer = self._open_writer(rate, channels)
        blocks = iter_audio(a.path, rate=rate, layout="mono" if channels == 1 else "stereo", fmt="fltp")
        try:
            while True:
                frames = self._get(self.to_encoder)
                if frames is _DONE:
                    break
                writer.write_frames(frames)
                del frames
                self.slots.release()
                # audio up to the video written so far, so the muxer can interleave as it goes
                while writer.audio_seconds < writer.video_seconds:
                    block = next(blocks, None)
                    if block is None:
                        break
                    writer.write_audio(block)
            for block in blocks:
                writer.write_audio(block)
            closed = writer.close()
            if self.finishing is not None:
                self.finished = closed
        except BaseException:
            writer.abort()
            raise
        finally:
            blocks.close()


class _MonotonicProgress:
    """Forwards only increases, never reaches 1.0 before :meth:`finish`, tolerates any thread."""

    def __init__(self, callback: ProgressFn):
        self.callback = callback
        self.last = -1.0
        self.lock = threading.Lock()

    def __call__(self, fraction: float) -> None:
        value = min(_clamp(fraction), 0.999)
        with self.lock:
            if value <= self.last:
                return
            self.last = value
            self.callback(value)

    def finish(self) -> None:
        with self.lock:
            self.last = 1.0
            self.callback(1.0)


def _clamp(value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if v != v else min(max(v, 0.0), 1.0)  # NaN counts as no progress

"""Finishing a rendered video: the steps a publishing team asks for after the lip-sync.

:func:`finish_video` takes the render's MP4 and a :class:`FinishSpec` and writes the
finished MP4 next to it. Two ways, the cheaper whenever it suffices:

* **copy** -- nothing in the picture changes (only intro/outro clips whose format equals
  the render's, and/or soft subtitles): the compressed packets are copied, the clips
  joined end to end, the subtitles added as a mov_text track. No quality lost, seconds.
* **redraw** -- a new size or shape, a new frame rate, a watermark, burned subtitles, or
  clips in another format: every frame of intro, render and outro is decoded, reframed,
  watermarked and captioned, and encoded once (same x264 settings as the render), with
  the audio of each part resampled to one rate and padded to its part's length so the
  parts stay in sync.

Subtitles are timed against the speech: with an intro they move later by its length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from lipsync.engine import RenderOptions, TemplateInfo
from lipsync.errors import LipsyncError, MediaError, NoAudioStreamError
from lipsync.finish.faces import follow_face
from lipsync.finish.picture import WatermarkLayer, fit_into, plan_reframe, reframe
from lipsync.finish.picture import scale
from lipsync.finish.spec import FinishSpec, output_size
from lipsync.finish.subtitles import Cue, SubtitleBurner, read_cues, shifted
from lipsync.media.audio import iter_audio
from lipsync.media.encoder import VideoWriter, add_text_track, output_audio_rate, text_packet
from lipsync.media.template import TemplateReader, probe_template


@dataclass
class FinishReport:
    path: Path
    width: int
    height: int
    fps: float
    duration: float
    method: str  # "copy" or "redraw"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Part(TemplateInfo):
    """One clip of the finished video, probed once (probing a long clip counts its packets)."""

    role: str = "video"  # intro, video, outro


def finish_video(rendered: Path, output: Path, spec: FinishSpec,
                 options: RenderOptions = RenderOptions()) -> FinishReport:
    """Apply ``spec`` to the MP4 ``rendered``, writing ``output`` (atomically)."""
    rendered, output = Path(rendered), Path(output)
    parts = [_probe(p, role, options) for p, role in ((spec.intro, "intro"), (rendered, "video"),
                                                      (spec.outro, "outro")) if p is not None]
    main = next(p for p in parts if p.role == "video")
    intro_s = parts[0].duration if parts[0].role == "intro" else 0.0
    cues: list[Cue] = []
    if spec.subtitles is not None and spec.subtitle_mode != "off":
        cues = shifted(read_cues(spec.subtitles), intro_s, until=intro_s + main.duration)
    notes = []
    if spec.intro or spec.outro:
        notes.append("joined: " + " + ".join(p.role for p in parts))
    if not spec.redraws and _copyable(parts):
        _join_by_copy(parts, output, cues)
        return FinishReport(output, main.width, main.height, main.fps, sum(p.duration for p in parts), "copy",
                            notes + ([f"soft subtitles: {_cues(cues)}"] if cues else []))
    return _redraw(parts, main, output, spec, cues, options, notes)


def _cues(cues: list[Cue]) -> str:
    return f"{len(cues)} cue" + ("" if len(cues) == 1 else "s")


def _probe(path: Path, role: str, options: RenderOptions) -> _Part:
    info = probe_template(path, options)
    if info.is_still:
        raise MediaError(f"the {role} must be a video clip, not a still image", path=path)
    return _Part(**{f.name: getattr(info, f.name) for f in dataclasses.fields(info)}, role=role)


# --------------------------------------------------------------------------- copy

def _signature(path: Path) -> tuple:
    """What two files must share for their packets to be joined without re-encoding."""
    with av.open(str(path)) as c:
        v = c.streams.video[0].codec_context
        a = c.streams.audio[0].codec_context if c.streams.audio else None
        return (v.name, v.width, v.height, v.pix_fmt, c.streams.video[0].average_rate, bytes(v.extradata or b""),
                None if a is None else (a.name, a.sample_rate, a.channels, bytes(a.extradata or b"")))


def _copyable(parts: list[_Part]) -> bool:
    signatures = {_signature(p.path) for p in parts}
    return len(signatures) == 1 and next(iter(signatures))[-1] is not None


def _join_by_copy(parts: list[_Part], output: Path, cues: list[Cue]) -> None:
    tmp = output.with_name(f".{output.name}.part")
    try:
        with av.open(str(parts[0].path)) as first, \
                av.open(str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            v_out = out.add_stream_from_template(first.streams.video[0])
            a_out = out.add_stream_from_template(first.streams.audio[0])
            text = add_text_track(out) if cues else None
            offset = 0.0  # seconds
            last_dts: dict[str, int] = {}  # per output stream, in its packets' time base
            for part in parts:
                shifts: dict[str, int] = {}
                with av.open(str(part.path)) as src:
                    vs, as_ = src.streams.video[0], src.streams.audio[0]
                    for packet in src.demux(vs, as_):
                        if packet.dts is None:
                            continue
                        kind = "video" if packet.stream is vs else "audio"
                        if kind not in shifts:
                            # the part starts at the running offset; never before the previous part's
                            # last packet (an encoder's priming starts audio slightly before zero)
                            shift = int(round(offset / packet.time_base))
                            if kind in last_dts:
                                shift = max(shift, last_dts[kind] + 1 - packet.dts)
                            shifts[kind] = shift
                        packet.pts = None if packet.pts is None else packet.pts + shifts[kind]
                        packet.dts += shifts[kind]
                        last_dts[kind] = packet.dts
                        packet.stream = v_out if kind == "video" else a_out
                        out.mux(packet)
                offset += part.duration
            for cue in cues:
                out.mux(text_packet(text, cue.start, cue.end, cue.text))
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- redraw

def _redraw(parts: list[_Part], main: _Part, output: Path, spec: FinishSpec, cues: list[Cue],
            options: RenderOptions, notes: list[str]) -> FinishReport:
    size = output_size((main.width, main.height), spec.resolution, spec.aspect)
    fps = float(spec.fps or main.fps)
    plan = None
    if spec.reframes and size != (main.width, main.height):
        with TemplateReader(main) as reader:
            faces = follow_face(reader.iter_forward(), main.fps)
        plan = plan_reframe((main.width, main.height), size, faces, main.fps)
        notes.append(f"reframed {main.width}x{main.height} -> {size[0]}x{size[1]} ({plan.note})")
    elif (main.width, main.height) != size:
        notes.append(f"scaled {main.width}x{main.height} -> {size[0]}x{size[1]}")
    if spec.fps is not None and abs(fps - main.fps) > 1e-3:
        notes.append(f"frame rate {main.fps:g} -> {fps:g}")
    mark = WatermarkLayer(spec.watermark, size) if spec.watermark is not None else None
    burner = SubtitleBurner(cues, *size) if spec.burns and cues else None
    if mark:
        notes.append("watermark")
    if burner:
        notes.append(f"subtitles burned in: {_cues(cues)}")
    if cues and spec.soft_subtitles:
        notes.append(f"soft subtitles: {_cues(cues)}")

    channels, rate = _audio_format(parts)
    # the render's colour description (intro and outro are read with their own)
    writer = VideoWriter(output, size[0], size[1], fps, rate, options, audio_channels=channels,
                         subtitles=cues if spec.soft_subtitles else (), color=main.color)
    # x264 on its own thread: decoding and drawing the next frames overlap with encoding
    encoder = _Background()
    try:
        start = 0  # output frames written before this part
        for part in parts:
            count = max(1, int(round(part.duration * fps)))
            with TemplateReader(part) as reader:
                for j, (k, frame) in enumerate(_retimed(reader.iter_forward(), part, fps, count)):
                    if part.role == "video" and plan is not None:
                        frame = reframe(frame, plan, k)
                    elif frame.shape[:2] != (size[1], size[0]):
                        frame = fit_into(frame, size) if part.role != "video" else _scaled(frame, size)
                    frame = np.array(frame, np.uint8)  # writable, our own copy
                    if mark:
                        frame = mark.draw(frame)
                    if burner:
                        frame = burner.draw(frame, (start + j) / fps)
                    encoder.call(writer.write_frames, frame)
            end = (start + count) / fps
            encoder.call(_write_part_audio, writer, part, rate, channels, end)
            start += count
        encoder.call(writer.close)
        encoder.finish()
    except BaseException:
        encoder.finish(quietly=True)
        writer.abort()
        raise
    return FinishReport(output, size[0], size[1], fps, start / fps, "redraw", notes)


class _Background:
    """Runs calls in order on one worker thread; the first error is raised to the caller at
    its next call or at :meth:`finish`. At most ``depth`` calls wait, bounding memory."""

    def __init__(self, depth: int = 6):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lipsync-finish-encode", daemon=True)
        self._thread.start()

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
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and not quietly:
            raise self._error


def _scaled(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return scale(frame, *size)


def _retimed(frames, part: _Part, fps: float, count: int):
    """(source index, frame) for each of ``count`` output frames at ``fps``: the source frame
    showing at that time (repeated or skipped as the rates differ)."""
    j = 0
    last = None
    for k, frame in enumerate(frames):
        last = (k, frame)
        while j < count and min(part.frame_count - 1, int((j + 0.5) * part.fps / fps)) <= k:
            yield k, frame
            j += 1
        if j >= count:
            return
    while last is not None and j < count:  # a clip that decoded short: hold its last frame
        yield last
        j += 1


def _audio_format(parts: list[_Part]) -> tuple[int, int]:
    """(channels, rate) for the finished file: the render's, so its speech is untouched."""
    main = next(p for p in parts if p.role == "video")
    with av.open(str(main.path)) as c:
        if not c.streams.audio:
            raise LipsyncError("the rendered video has no audio track", path=main.path)
        a = c.streams.audio[0].codec_context
        return (1 if a.channels == 1 else 2), output_audio_rate(a.sample_rate)


def _write_part_audio(writer: VideoWriter, part: _Part, rate: int, channels: int, until: float) -> None:
    """The part's audio, cut or padded with silence to end exactly at ``until`` seconds."""
    layout = "mono" if channels == 1 else "stereo"
    want = int(round(until * rate)) - writer.samples_written
    try:
        for block in iter_audio(part.path, rate=rate, layout=layout, fmt="fltp"):
            block = np.atleast_2d(block)[:, :max(want, 0)]
            writer.write_audio(block)
            want -= block.shape[1]
            if want <= 0:
                break
    except NoAudioStreamError:
        pass  # a silent clip: silence below
    if want > 0:
        writer.write_audio(np.zeros((channels, want), np.float32))

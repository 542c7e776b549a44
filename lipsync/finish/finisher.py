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

A render that is finished as it is made (:func:`lipsync.render.render` with ``finish=``)
redraws in one pass instead: the engine's frames go straight into the same
:class:`~lipsync.finish.stream.FinishedWriter`, and no rendered file is encoded, decoded
and encoded again. :func:`finish_video` is for a video that exists as a file already: a
remote renderer's, or one whose clips are joined by copy.
"""

from __future__ import annotations

from pathlib import Path

import av

from lipsync.engine import RenderOptions
from lipsync.errors import LipsyncError
from lipsync.finish.faces import follow_face
from lipsync.finish.spec import FinishSpec
from lipsync.finish.stream import Clip, FinishedWriter, FinishReport, count_cues, probe_clip, resolve
from lipsync.finish.subtitles import Cue
from lipsync.media.audio import iter_audio
from lipsync.media.encoder import add_text_track, output_audio_rate, text_packet
from lipsync.media.template import TemplateReader

__all__ = ["FinishReport", "finish_video"]


def finish_video(rendered: Path, output: Path, spec: FinishSpec,
                 options: RenderOptions = RenderOptions()) -> FinishReport:
    """Apply ``spec`` to the MP4 ``rendered``, writing ``output`` (atomically)."""
    rendered, output = Path(rendered), Path(output)
    main = probe_clip(rendered, "video", options)
    finishing = resolve(spec, main, options)
    parts = finishing.clips
    if not spec.redraws and _copyable(parts):
        _join_by_copy(parts, output, finishing.cues)
        notes = ["joined: " + " + ".join(p.role for p in parts)] if len(parts) > 1 else []
        return FinishReport(output, main.width, main.height, main.fps, sum(p.duration for p in parts), "copy",
                            notes + ([f"soft subtitles: {count_cues(finishing.cues)}"] if finishing.cues else []))
    faces = None
    if finishing.reframes:
        with TemplateReader(main) as reader:
            faces = follow_face(reader.iter_forward(), main.fps)
    channels, rate = _audio_format(main)
    writer = FinishedWriter(output, finishing, options, audio_rate=rate, audio_channels=channels, faces=faces,
                            method="redraw")
    try:
        with TemplateReader(main) as reader:
            for frame in reader.iter_forward():
                writer.write_frames(frame)
        for block in iter_audio(main.path, rate=rate, layout="mono" if channels == 1 else "stereo", fmt="fltp"):
            writer.write_audio(block)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


# --------------------------------------------------------------------------- copy

def _signature(path: Path) -> tuple:
    """What two files must share for their packets to be joined without re-encoding."""
    with av.open(str(path)) as c:
        v = c.streams.video[0].codec_context
        a = c.streams.audio[0].codec_context if c.streams.audio else None
        return (v.name, v.width, v.height, v.pix_fmt, c.streams.video[0].average_rate, bytes(v.extradata or b""),
                None if a is None else (a.name, a.sample_rate, a.channels, bytes(a.extradata or b"")))


def _copyable(parts: list[Clip]) -> bool:
    signatures = {_signature(p.path) for p in parts}
    return len(signatures) == 1 and next(iter(signatures))[-1] is not None


def _join_by_copy(parts: list[Clip], output: Path, cues: list[Cue]) -> None:
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

def _audio_format(main: Clip) -> tuple[int, int]:
    """(channels, rate) for the finished file: the render's, so its speech is untouched."""
    with av.open(str(main.path)) as c:
        if not c.streams.audio:
            raise LipsyncError("the rendered video has no audio track", path=main.path)
        a = c.streams.audio[0].codec_context
        return (1 if a.channels == 1 else 2), output_audio_rate(a.sample_rate)



"""Re-muxing a video rendered elsewhere into lipsyncd's output form, and a WAV for other tools.

``remux_with_audio`` keeps the video stream as it is when it is H.264 (no re-encode: fast
and lossless), re-encodes it otherwise, and adds the job's own audio as AAC, with the index
first (faststart) -- the form every lipsyncd output has. ``write_wav`` decodes any audio
PyAV reads into 16-bit PCM WAV, the one format every renderer accepts.
"""

from __future__ import annotations

import os
import secrets
import wave
from pathlib import Path

import av
import numpy as np

from lipsync.engine import RenderOptions
from lipsync.errors import MediaError
from lipsync.media.audio import iter_audio, probe_audio
from lipsync.media.color import ColorInfo
from lipsync.media.encoder import VideoWriter, output_audio_rate


def write_wav(audio: Path, out: Path, *, rate: int = 16000) -> Path:
    """``audio`` as mono 16-bit PCM WAV at ``rate`` Hz."""
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        for block in iter_audio(audio, rate=rate, layout="mono", fmt="s16"):
            w.writeframes(np.ascontiguousarray(block, dtype=np.int16).tobytes())
    return out


def video_seconds(path: Path) -> tuple[float, float, str]:
    """(duration, frame rate, codec name) of the first video stream; MediaError naming the file."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError("has no video stream", path=path)
            v = c.streams.video[0]
            fps = float(v.average_rate or v.guessed_rate or 0)
            frames = v.frames or sum(1 for _ in c.demux(v) if _.size)
            duration = frames / fps if fps else float(c.duration or 0) / av.time_base
            return duration, fps, v.codec_context.name
    except av.FFmpegError as e:
        raise MediaError(f"cannot be read as video: {e}", path=path) from None


def remux_with_audio(video: Path, audio: Path, out: Path, options: RenderOptions = RenderOptions()) -> Path:
    """``video``'s picture with ``audio``'s sound in an H.264 + AAC, faststart MP4 at ``out``."""
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    info = probe_audio(audio, options.limits)
    rate = output_audio_rate(info.sample_rate)
    try:
        with av.open(str(video)) as src:
            vin = src.streams.video[0]
            if vin.codec_context.name != "h264":
                return _reencode(video, audio, out, options)
            with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
                vout = dst.add_stream_from_template(vin)
                aout = dst.add_stream("aac", rate=rate)
                aout.layout = "mono"
                aout.bit_rate = options.audio_bitrate
                for packet in src.demux(vin):
                    if packet.dts is None:
                        continue
                    packet.stream = vout
                    dst.mux(packet)
                for block in iter_audio(audio, rate=rate, layout="mono", fmt="fltp"):
                    frame = av.AudioFrame.from_ndarray(np.asarray(block, np.float32).reshape(1, -1), format="fltp",
                                                       layout="mono")
                    frame.sample_rate = rate
                    for packet in aout.encode(frame):
                        dst.mux(packet)
                for packet in aout.encode():
                    dst.mux(packet)
        os.replace(tmp, out)
    except av.FFmpegError as e:
        raise MediaError(f"cannot be re-muxed: {e}", path=video) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _reencode(video: Path, audio: Path, out: Path, options: RenderOptions) -> Path:
    with av.open(str(video)) as src:
        v = src.streams.video[0]
        w, h = v.codec_context.width // 2 * 2, v.codec_context.height // 2 * 2
        fps = float(v.average_rate or 25)
        info = probe_audio(audio, options.limits)
        color = None
        writer = None
        try:
            for frame in src.decode(v):
                if writer is None:  # the remote renderer's own colour description, carried on
                    color = ColorInfo.of_frame(frame)
                    writer = VideoWriter(out, w, h, fps, output_audio_rate(info.sample_rate), options, color=color)
                writer.write_frames(color.to_rgb(frame)[None, :h, :w])
            if writer is None:
                raise MediaError("has no picture to re-encode", path=video)
            for block in iter_audio(audio, rate=writer.audio_rate, layout="mono", fmt="fltp"):
                writer.write_audio(block)
            writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return out

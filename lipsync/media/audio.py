"""Audio input: probing, streaming decode with resampling, and whole-track loading.

Any container FFmpeg reads is accepted (wav, mp3, m4a/aac, flac, ogg/opus, and the audio
track of a video file). Sample arrays are float32 in -1..1 unless another ``fmt`` is
asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lipsync.engine import MediaLimits
from lipsync.errors import MediaError, NoAudioStreamError
from lipsync.media import probe

# The output's audio gets at least as much time as declared minus this before a file
# counts as truncated (encoder padding and header rounding stay well below it).
_TRUNCATION_TOLERANCE_S = 0.5

_DTYPES = {"flt": np.float32, "fltp": np.float32, "s16": np.int16, "s16p": np.int16}


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    duration: float  # seconds of audio that actually decode (exact, not the header's claim)
    sample_rate: int
    channels: int
    codec: str  # FFmpeg decoder name: "pcm_s16le", "mp3float", "aac", "flac", "vorbis", "opus", ...
    samples: int  # decoded samples per channel, at ``sample_rate``


def probe_audio(path: str | Path, limits: MediaLimits = MediaLimits()) -> AudioInfo:
    """Check ``path`` as an audio input and measure it exactly.

    File size and the declared duration are checked against ``limits`` first; then the
    track is decoded once (cheap next to a render: an hour of MP3 takes seconds) so the
    duration is what a player would play, a damaged stream fails here rather than
    mid-render, and a header that lies about its length cannot slip past the limit.
    """
    path = Path(path)
    probe.check_file(path, limits)
    with probe.open_media(path) as container:
        probe.require_media_streams(container, path)
        stream = container.streams.best("audio")
        if stream is None:
            raise NoAudioStreamError("no audio stream: the file has pictures but no sound", path=path)
        declared = probe.declared_seconds(container, stream)
        probe.check_seconds(declared, limits.max_audio_seconds, path, "audio")
        ctx = stream.codec_context
        if not ctx.sample_rate or not ctx.channels:
            raise MediaError("the audio stream has no sample rate or channel layout", path=path)
        seconds, samples, rate = _measure(container, stream, path, limits)
        if samples == 0:
            raise MediaError("the audio stream contains no decodable audio", path=path)
        # only the track's own declared length: a container's may include a longer video
        track_seconds = float(stream.duration * stream.time_base) if stream.duration else None
        _check_truncation(path, container, track_seconds, seconds)
        return AudioInfo(path=path, duration=seconds, sample_rate=rate, channels=ctx.channels,
                         codec=ctx.name, samples=samples)


def _measure(container, stream, path: Path, limits: MediaLimits) -> tuple[float, int, int]:
    """(seconds, samples at the last rate, last rate) by decoding the whole track."""
    before = 0.0  # seconds decoded at earlier sample rates
    samples = 0
    rate = stream.codec_context.sample_rate
    try:
        for frame in container.decode(stream):
            if frame.sample_rate != rate:
                # a mid-stream rate change (concatenated MP3s): count on at the new rate
                before += samples / rate
                samples, rate = 0, frame.sample_rate
            samples += frame.samples
            if before + samples / rate > limits.max_audio_seconds:
                probe.check_seconds(before + samples / rate, limits.max_audio_seconds, path, "audio")
    except av.error.FFmpegError as e:
        raise MediaError(f"the audio cannot be decoded ({probe.describe_av_error(e)}): damaged or truncated", path=path) from None
    return before + samples / rate, round(before * rate) + samples, rate


def _check_truncation(path: Path, container, declared: float | None, decoded: float) -> None:
    missing = probe.wav_missing_bytes(path)
    if missing is not None:
        want, have = missing
        raise MediaError(f"the file is truncated: its header declares {want} bytes of audio but only {max(have, 0)} are present", path=path)
    if declared is not None and probe.has_exact_headers(container) and decoded < declared - _TRUNCATION_TOLERANCE_S:
        raise MediaError(f"the file is truncated or damaged: its header declares {declared:.2f} s of audio "
                         f"but only {decoded:.2f} s can be decoded", path=path)


def iter_audio(path: str | Path, *, rate: int, layout: str = "mono", fmt: str = "flt") -> Iterator[np.ndarray]:
    """Decode and resample the audio of ``path`` block by block.

    Yields arrays of shape ``(n,)`` for ``layout="mono"`` and ``(channels, n)`` for any
    other layout ("stereo": channels = 2), whether ``fmt`` is packed ("flt", "s16") or
    planar ("fltp", "s16p"): only the dtype follows ``fmt`` (float32 for flt/fltp, int16
    for s16/s16p). Blocks are as long as the decoder's frames (about 20-100 ms); their
    concatenation is the whole track at ``rate``. Decoding errors raise :class:`MediaError`.
    """
    if fmt not in _DTYPES:
        raise ValueError(f"unsupported sample format {fmt!r}; use one of {', '.join(_DTYPES)}")
    path = Path(path)
    with probe.open_media(path) as container:
        stream = container.streams.best("audio")
        if stream is None:
            raise NoAudioStreamError("no audio stream", path=path)
        resampler = None
        source = None
        try:
            for frame in container.decode(stream):
                key = (frame.format.name, frame.layout.name, frame.sample_rate)
                if key != source:
                    # the resampler is bound to one input format; a change mid-stream gets a fresh one
                    if resampler is not None:
                        yield from _blocks(resampler.resample(None), layout, fmt)
                    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
                    source = key
                # timestamps from damaged or concatenated files are irrelevant to sample order
                frame.pts = None
                yield from _blocks(resampler.resample(frame), layout, fmt)
            if resampler is not None:
                yield from _blocks(resampler.resample(None), layout, fmt)
        except av.error.FFmpegError as e:
            raise MediaError(f"the audio cannot be decoded ({probe.describe_av_error(e)})", path=path) from None


def _blocks(frames: list[av.AudioFrame], layout: str, fmt: str) -> Iterator[np.ndarray]:
    for frame in frames:
        if frame.samples == 0:
            continue
        arr = frame.to_ndarray()
        channels = frame.layout.nb_channels
        if not fmt.endswith("p"):  # packed: one row of interleaved samples
            arr = arr.reshape(-1, channels).T
        arr = np.ascontiguousarray(arr, dtype=_DTYPES[fmt])
        yield arr[0] if layout == "mono" else arr


def load_mono(path: str | Path, rate: int = 16000) -> np.ndarray:
    """The whole track as one float32 mono array at ``rate`` (for feature extraction)."""
    blocks = list(iter_audio(path, rate=rate, layout="mono", fmt="flt"))
    if not blocks:
        return np.zeros(0, np.float32)
    return np.concatenate(blocks)

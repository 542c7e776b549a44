"""Media I/O on real files: audio probing/decoding, template probing/reading, the MP4 writer."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lipsync.engine import MediaLimits, RenderOptions
from lipsync.errors import MediaError, MediaLimitError, NoAudioStreamError, NoVideoStreamError
from lipsync.media.audio import iter_audio, load_mono, probe_audio
from lipsync.media.encoder import VideoWriter
from lipsync.media.headers import declared_picture_size
from lipsync.media.template import TemplateReader, probe_template
from tests import hostile_media as hm
from tests import media_factory as mf

# --------------------------------------------------------------------------- helpers

AUDIO_FORMATS = {  # suffix: (encoder, muxer, sample rate)
    "mp3": ("libmp3lame", "mp3", 44100),
    "m4a": ("aac", "ipod", 48000),
    "aac": ("aac", "adts", 48000),
    "flac": ("flac", "flac", 44100),
    "ogg": ("libopus", "ogg", 48000),
}


def encode_audio(path: Path, *, seconds: float = 1.5, freq: float = 440.0, layout: str = "stereo",
                 faststart: bool = False) -> Path:
    """A sine tone encoded with PyAV in the format named by ``path``'s suffix."""
    if path.suffix == ".wav":
        return mf.write_tone(path, seconds=seconds, freq=freq)
    codec, muxer, rate = AUDIO_FORMATS[path.suffix[1:]]
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=muxer, container_options=opts) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        channels = stream.codec_context.channels
        total, pos = int(seconds * rate), 0
        while pos < total:
            n = min(4000, total - pos)
            tone = (0.3 * np.sin(2 * np.pi * freq * np.arange(pos, pos + n) / rate)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone] * channels), format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, pos, Fraction(1, rate)
            for p in stream.encode(frame):
                out.mux(p)
            pos += n
        for p in stream.encode():
            out.mux(p)
    return path


def encode_numbered_video(path: Path, frames: int, *, size=(64, 48), fps=25, codec="libx264",
                          options: dict | None = None, gop: int | None = None, rotation: int | None = None,
                          faststart: bool = False) -> Path:
    """Frame i has brightness i*8 % 256 (see :func:`frame_number`). Defaults give B-frames."""
    w, h = size
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", container_options=opts) as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if gop:
            vs.codec_context.gop_size = gop
        if codec == "libx264":
            vs.options = options or {"crf": "10", "preset": "medium"}  # medium: B-frames, reordering
        if rotation is not None:
            vs.set_display_rotation(rotation)
        for i in range(frames):
            rgb = np.full((h, w, 3), (i * 8) % 256, np.uint8)
            if rotation is not None:
                rgb[: h // 4, : w // 4] = 255 - rgb[0, 0]  # a marker in the top-left corner
            for p in vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def frame_number(rgb: np.ndarray) -> int:
    """Inverse of the brightness code (modulo 32)."""
    return int(round(float(np.median(rgb)) / 8)) % 32


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize("suffix", ["wav", "mp3", "m4a", "aac", "flac", "ogg"])
def test_probe_audio_measures_every_accepted_format(tmp_path, suffix):
    path = encode_audio(tmp_path / f"voice.{suffix}", seconds=1.5)
    info = probe_audio(path, MediaLimits())
    assert info.path == path
    assert abs(info.duration - 1.5) < 0.04  # encoder padding stays under one 25 fps frame
    assert info.sample_rate in (16000, 44100, 48000)
    assert info.channels == (1 if suffix == "wav" else 2)
    assert info.codec


def test_the_audio_track_of_a_video_file_is_accepted(tmp_path):
    clip = mf.write_face_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 64), audio=True)
    info = probe_audio(clip, MediaLimits())
    assert abs(info.duration - 1.0) < 0.04
    assert len(load_mono(clip, 16000)) == pytest.approx(16000 * info.duration, abs=50)


def test_iter_audio_yields_mono_vectors_or_channel_rows_at_the_requested_rate(tmp_path):
    path = encode_audio(tmp_path / "tone.flac", seconds=1.0)  # 44.1 kHz stereo
    mono = list(iter_audio(path, rate=16000))
    assert all(b.ndim == 1 and b.dtype == np.float32 for b in mono)
    assert sum(len(b) for b in mono) == pytest.approx(16000, abs=5)
    stereo = list(iter_audio(path, rate=48000, layout="stereo", fmt="fltp"))
    assert all(b.shape[0] == 2 and b.dtype == np.float32 for b in stereo)
    assert sum(b.shape[1] for b in stereo) == pytest.approx(48000, abs=5)
    packed = np.concatenate(list(iter_audio(path, rate=48000, layout="stereo", fmt="s16")), axis=1)
    assert packed.dtype == np.int16 and packed.shape[0] == 2
    assert np.allclose(packed[0], packed[1], atol=2)  # both channels carry the same tone, not interleaved halves


def test_load_mono_resamples_without_changing_pitch(tmp_path):
    path = encode_audio(tmp_path / "tone.mp3", seconds=1.0, freq=440.0)  # 44.1 kHz stereo MP3
    samples = load_mono(path, 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 16000) < 400
    assert dominant_frequency(samples, 16000) == pytest.approx(440, abs=3)
    assert 0.2 < np.abs(samples).max() <= 1.0


def test_load_mono_reads_the_speech_fixture_exactly():
    samples = load_mono(mf.SPEECH, 16000)
    info = probe_audio(mf.SPEECH, MediaLimits())
    assert len(samples) == info.samples
    assert np.abs(samples).max() > 0.1


def _zero_bytes(d: Path) -> Path:
    (d / "empty.wav").write_bytes(b"")
    return d / "empty.wav"


def _text_as_wav(d: Path) -> Path:
    (d / "notes.wav").write_text("meeting notes, not a recording\n" * 40)
    return d / "notes.wav"


def _truncated_wav(d: Path) -> Path:
    data = mf.write_tone(d / "full.wav", seconds=2.0).read_bytes()
    (d / "cut.wav").write_bytes(data[: len(data) // 2])
    return d / "cut.wav"


def _truncated_m4a(d: Path) -> Path:
    data = encode_audio(d / "full.m4a", seconds=2.0).read_bytes()
    (d / "cut.m4a").write_bytes(data[: len(data) // 2])
    return d / "cut.m4a"


def _truncated_faststart_m4a(d: Path) -> Path:
    data = encode_audio(d / "full.m4a", seconds=3.0, faststart=True).read_bytes()
    (d / "cut-fs.m4a").write_bytes(data[: len(data) // 2])
    return d / "cut-fs.m4a"


def _silent_video(d: Path) -> Path:
    return mf.write_plain_video(d / "silent.mp4", seconds=0.5)


@pytest.mark.parametrize("make, error, words", [
    (_zero_bytes, MediaError, "empty"),
    (_text_as_wav, MediaError, "not a readable"),
    (_truncated_wav, MediaError, "truncated"),
    (_truncated_m4a, MediaError, "truncated"),
    (_truncated_faststart_m4a, MediaError, "truncated"),
    (_silent_video, NoAudioStreamError, "no audio stream"),
])
def test_bad_audio_is_refused_with_the_file_named(tmp_path, make, error, words):
    path = make(tmp_path)
    with pytest.raises(error) as info:
        probe_audio(path, MediaLimits())
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert words in str(info.value)


def test_audio_limits_are_checked_from_the_headers(tmp_path):
    path = mf.write_tone(tmp_path / "long.wav", seconds=12.0)
    with pytest.raises(MediaLimitError, match=r"12\.0 s long, longer than the limit of 10 s") as info:
        probe_audio(path, MediaLimits(max_audio_seconds=10))
    assert info.value.code == "limit_exceeded" and str(path) in str(info.value)
    with pytest.raises(MediaLimitError, match="larger than the limit"):
        probe_audio(path, MediaLimits(max_file_bytes=1000))


# --------------------------------------------------------------------------- templates


def test_probe_template_describes_a_video_exactly(tmp_path):
    path = encode_numbered_video(tmp_path / "t.mp4", 37, size=(96, 64), fps=30)
    info = probe_template(path, RenderOptions())
    assert (info.width, info.height, info.fps, info.frame_count, info.is_still) == (96, 64, 30.0, 37, False)
    with TemplateReader(info) as reader:
        assert sum(1 for _ in reader.iter_forward()) == 37


def test_a_webm_without_a_frame_count_is_counted_exactly_and_odd_sizes_become_even(tmp_path):
    path = encode_numbered_video(tmp_path / "t.webm", 23, size=(65, 49), codec="libvpx-vp9")
    info = probe_template(path, RenderOptions())
    assert (info.width, info.height, info.frame_count) == (64, 48, 23)
    with TemplateReader(info) as reader:
        frames = list(reader.iter_forward())
    assert len(frames) == 23 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert [frame_number(f) for f in frames] == list(range(23))


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_a_still_photo_is_one_frame_at_the_still_frame_rate(tmp_path, suffix):
    path = mf.write_still(tmp_path / f"face.{suffix}", size=(255, 171))
    info = probe_template(path, RenderOptions(still_fps=30))
    assert info.is_still and info.frame_count == 1 and info.fps == 30
    assert (info.width, info.height) == (254, 170)
    with TemplateReader(info) as reader:
        frames = list(reader.frames([0, 0, 0]))
    assert all(f.shape == (170, 254, 3) for f in frames)
    assert np.array_equal(frames[0], frames[2])
    expected = mf.portrait((255, 171))[:170, :254].astype(int)
    assert np.abs(frames[0].astype(int) - expected).mean() < (6 if suffix == "jpg" else 1)


def test_a_phone_video_recorded_sideways_is_turned_upright(tmp_path):
    path = encode_numbered_video(tmp_path / "phone.mp4", 5, size=(64, 48), rotation=90)
    info = probe_template(path, RenderOptions())
    assert (info.width, info.height) == (48, 64)  # portrait, as a player shows it
    with TemplateReader(info) as reader:
        first = next(reader.iter_forward())
    assert first.shape == (64, 48, 3)
    # a 90 degree counter-clockwise display rotation takes the top-left marker to the bottom-left
    assert first[-4:, :4].mean() > 200 and first[:4, :4].mean() < 50


@pytest.mark.parametrize("rotation", [0, 90])
def test_the_luma_of_a_frame_is_the_grey_of_its_colours_upright(tmp_path, rotation):
    """``frames(gray=True)`` reads the decoder's Y plane, range expanded: the BT.601/709
    luma of the very RGB the same reader gives, turned upright like it."""
    path = mf.write_face_video(tmp_path / "face.mp4", seconds=0.4, size=(128, 96))
    if rotation:
        path = encode_numbered_video(tmp_path / "phone.mp4", 3, size=(64, 48), rotation=rotation)
    info = probe_template(path, RenderOptions())
    with TemplateReader(info) as reader:
        rgb = list(reader.iter_forward())
    with TemplateReader(info) as reader:
        luma = list(reader.iter_forward(gray=True))
    assert len(luma) == len(rgb) and all(g.shape == (info.height, info.width) and g.dtype == np.uint8 for g in luma)
    weights = {"bt709": (0.2126, 0.7152, 0.0722)}.get(info.color.matrix, (0.299, 0.587, 0.114))
    for g, c in zip(luma, rgb):
        expected = c.astype(np.float64) @ np.array(weights)
        assert np.abs(g - expected).mean() < 1.5 and np.percentile(np.abs(g - expected), 99) < 6


def test_a_still_photo_is_read_as_grey_too(tmp_path):
    path = mf.write_still(tmp_path / "face.png", size=(64, 48))
    info = probe_template(path, RenderOptions())
    with TemplateReader(info) as reader:
        grey = next(reader.frames([0], gray=True))
        rgb = next(reader.frames([0]))
    assert grey.shape == (48, 64)
    assert np.abs(grey - rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).max() <= 1


def test_a_jpeg_with_exif_orientation_is_turned_upright(tmp_path):
    from PIL import Image

    img = np.zeros((48, 64, 3), np.uint8)
    img[:12, :16] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    info = probe_template(tmp_path / "phone.jpg", RenderOptions())
    assert (info.width, info.height) == (48, 64)
    with TemplateReader(info) as reader:
        upright = next(reader.iter_forward())
    assert upright[:6, -8:].mean() > 200  # top-left marker now top-right


def _audio_only(d: Path) -> Path:
    return mf.write_tone(d / "voice.wav", seconds=0.5)


def _mp3_only(d: Path) -> Path:
    return encode_audio(d / "voice.mp3", seconds=0.5)


def _text_as_png(d: Path) -> Path:
    (d / "face.png").write_text("this is not a picture\n" * 30)
    return d / "face.png"


def _truncated_mp4(d: Path) -> Path:
    data = mf.write_plain_video(d / "full.mp4", seconds=2.0).read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])
    return d / "cut.mp4"


def _truncated_faststart_mp4(d: Path) -> Path:
    data = encode_numbered_video(d / "full.mp4", 60, faststart=True).read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    return d / "cut.mp4"


def _empty_template(d: Path) -> Path:
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


@pytest.mark.parametrize("make, error, words", [
    (_audio_only, NoVideoStreamError, "no video stream"),
    (_mp3_only, NoVideoStreamError, "no video stream"),
    (_text_as_png, MediaError, "cannot be read"),
    (_truncated_mp4, MediaError, "not a readable"),
    (_truncated_faststart_mp4, MediaError, "truncated"),
    (_empty_template, MediaError, "empty"),
])
def test_bad_templates_are_refused_with_the_file_named(tmp_path, make, error, words):
    path = make(tmp_path)
    with pytest.raises(error) as info:
        probe_template(path, RenderOptions())
    assert str(path) in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize("limits, words", [
    (MediaLimits(max_pixels=64 * 47), "pixels"),
    (MediaLimits(max_template_seconds=1.0), "longer than the limit"),
    (MediaLimits(max_fps=24), "frame rate"),
    (MediaLimits(max_file_bytes=100), "larger than the limit"),
])
def test_template_limits_are_checked_from_the_headers(tmp_path, limits, words):
    path = mf.write_plain_video(tmp_path / "t.mp4", seconds=2.0, fps=25)
    with pytest.raises(MediaLimitError, match=words) as info:
        probe_template(path, RenderOptions(limits=limits))
    assert str(path) in str(info.value)


def test_a_photo_too_large_is_refused_before_it_is_decoded(tmp_path):
    # a PNG header declaring 30000 x 30000 pixels: decoding it would need 2.7 GB
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (tmp_path / "bomb.png").write_bytes(data + b"\0" * 100)
    with pytest.raises(MediaLimitError, match="30000x30000"):
        probe_template(tmp_path / "bomb.png", RenderOptions())


def _with_64bit_box_sizes(path: Path) -> Path:
    """The same MP4 with 64-bit sizes on mdat and moov, as muxers write them past 4 GiB.

    The 8-byte ``free`` box before mdat is the room muxers reserve for this, so no
    sample moves; the moov comes last, so growing its header moves nothing either.
    """
    data = path.read_bytes()
    boxes = hm._box_offsets(data)
    free, mdat, moov = boxes["free"], boxes["mdat"], boxes["moov"]
    assert free + 8 == mdat < moov and moov + int.from_bytes(data[moov:moov + 4], "big") == len(data)
    mdat_size = int.from_bytes(data[mdat:mdat + 4], "big")
    wide_mdat = (1).to_bytes(4, "big") + b"mdat" + (mdat_size + 8).to_bytes(8, "big")
    wide_moov = (1).to_bytes(4, "big") + b"moov" + (len(data) - moov + 8).to_bytes(8, "big")
    out = data[:free] + wide_mdat + data[mdat + 8:moov] + wide_moov + data[moov + 8:]
    path.write_bytes(out)
    return path


@pytest.mark.parametrize("make", [
    pytest.param(lambda d: mf.write_plain_video(d / "t.mp4", size=(96, 64)), id="mp4-moov-last"),
    pytest.param(lambda d: encode_numbered_video(d / "t.mov", 5, size=(96, 64), faststart=True), id="mov-moov-first"),
    pytest.param(lambda d: _with_64bit_box_sizes(mf.write_plain_video(d / "t.mp4", size=(96, 64))),
                 id="mp4-64bit-sizes"),
    pytest.param(lambda d: encode_numbered_video(d / "t.mp4", 5, size=(96, 64), rotation=90), id="mp4-rotated"),
    pytest.param(lambda d: encode_numbered_video(d / "t.mkv", 5, size=(96, 64)), id="mkv-h264"),
    pytest.param(lambda d: encode_numbered_video(d / "t.webm", 5, size=(96, 64), codec="libvpx-vp9"), id="webm-vp9"),
    pytest.param(lambda d: mf.write_still(d / "t.png", size=(96, 64)), id="png"),
])
def test_the_declared_picture_size_is_read_from_the_headers_as_ffmpeg_reads_it(tmp_path, make):
    path = make(tmp_path)
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.width, ctx.height) == (96, 64)
    assert declared_picture_size(path) == (96, 64)


def test_headers_that_declare_no_picture_size_leave_the_judgement_to_ffmpeg(tmp_path):
    cut = hm.truncated_mp4(tmp_path / "cut.mp4")  # the moov never arrived
    sound = hm.audio_only_mp4(tmp_path / "sound.mp4")
    for path in (cut, sound, mf.write_tone(tmp_path / "a.wav"), _text_as_png(tmp_path)):
        assert declared_picture_size(path) is None, path.name
    with pytest.raises(MediaError, match="not a readable"):
        probe_template(cut)
    with pytest.raises(NoVideoStreamError):
        probe_template(sound)


@pytest.mark.parametrize("suffix, codec", [("mp4", "libx264"), ("webm", "libvpx-vp9")])
def test_a_header_cut_anywhere_or_damaged_gives_the_size_or_nothing(tmp_path, suffix, codec):
    import random

    data = mf.write_plain_video(tmp_path / f"src.{suffix}", size=(96, 64), codec=codec).read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    rng = random.Random(5)
    seen = set()
    for n in range(0, len(data), 5):
        cut.write_bytes(data[:n])
        seen.add(declared_picture_size(cut))
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(4):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        cut.write_bytes(bytes(damaged))
        declared_picture_size(cut)  # any answer, but an answer: no exception
    assert seen == {None, (96, 64)}


# Peak memory is the kernel's high-water mark of this process image (VmHWM), reset after
# the imports. Not ru_maxrss: that also counts the pages a child shares with the (large)
# pytest process that forked it, which hides anything smaller.
_REFUSAL_COST = """
import json, sys
from pathlib import Path
import av
from lipsync.media.audio import probe_audio
from lipsync.media.template import probe_template

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

how, path = sys.argv[1], Path(sys.argv[2])
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak starts again from the memory in use now
except OSError:
    pass
before = peak()
refusal = None
try:
    if how == "probe_template":
        probe_template(path)
    elif how == "probe_audio":
        probe_audio(path)
    else:
        av.open(str(path)).close()  # what opening it with FFmpeg first would cost
except Exception as e:
    refusal = f"{type(e).__name__}: {e}"
print(json.dumps({"refusal": refusal, "grown_bytes": peak() - before}))
"""


def _peak_growth(how: str, path: Path) -> tuple[str | None, int]:
    """(refusal, peak RSS growth in bytes) of one probe in a fresh interpreter."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _REFUSAL_COST, how, str(path)], cwd=root, capture_output=True,
                         text=True, check=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["refusal"], result["grown_bytes"]


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: hm.mp4_declaring(p.with_suffix(".mp4"), width=12000, height=12000), id="mp4"),
    pytest.param(lambda p: hm.webm_declaring(p.with_suffix(".webm"), width=12000, height=12000), id="webm"),
])
def test_a_video_declaring_a_huge_picture_is_refused_without_decoding(tmp_path, make):
    path = make(tmp_path / "huge")
    assert path.stat().st_size < 20_000
    refusal, grown = _peak_growth("probe_template", path)
    assert refusal is not None and refusal.startswith("MediaLimitError")
    assert str(path) in refusal
    assert "12000x12000" in refusal and f"limit of {MediaLimits().max_pixels}" in refusal
    assert grown < 25 * 1024**2, f"refusing cost {grown / 1024**2:.0f} MiB"
    # the file is a real threat: FFmpeg's own probing of it allocates the declared picture
    _, ffmpeg_grown = _peak_growth("av.open", path)
    assert ffmpeg_grown > 100 * 1024**2


def test_a_huge_video_dropped_as_the_audio_is_not_decoded_while_probing(tmp_path):
    # the audio probe has no picture to refuse, but opening the file must not decode one
    path = hm.mp4_declaring(tmp_path / "talk.mp4", width=12000, height=12000)
    refusal, grown = _peak_growth("probe_audio", path)
    assert refusal is not None and refusal.startswith("NoAudioStreamError") and str(path) in refusal
    assert grown < 25 * 1024**2, f"probing cost {grown / 1024**2:.0f} MiB"


def test_a_picture_over_the_probing_limit_leaves_the_sound_usable(tmp_path):
    from lipsync.media.probe import open_media

    path = mf.write_face_video(tmp_path / "talk.mp4", seconds=1.0, size=(96, 64), audio=True)
    with open_media(path, max_pixels=96 * 64 - 1) as container:  # probed without decoding the video
        audio = container.streams.audio[0]
        rate = audio.codec_context.sample_rate
        assert rate and audio.codec_context.channels
        seconds = sum(frame.samples for frame in container.decode(audio)) / rate
    assert seconds == pytest.approx(1.0, abs=0.05)


def _pingpong(n: int, length: int) -> list[int]:
    from lipsync.timeline import template_index

    return [template_index(i, n) for i in range(length)]


@pytest.mark.parametrize("suffix, codec", [("mp4", "libx264"), ("webm", "libvpx-vp9")])
def test_reader_serves_pingpong_order_with_a_bounded_block(tmp_path, suffix, codec):
    # 40 frames, a keyframe every 16, B-frames (mp4): backward runs need seeks and blocks
    path = encode_numbered_video(tmp_path / f"t.{suffix}", 40, codec=codec, gop=16)
    info = probe_template(path, RenderOptions())
    order = _pingpong(40, 200)
    served = []
    with TemplateReader(info, block_frames=6) as reader:
        for frame in reader.frames(order):
            served.append(frame_number(frame))
            assert reader.cached_frames <= 6
        assert reader.missing_frames == 0
    assert served == [i % 32 for i in order]


def test_reader_serves_arbitrary_jumps(tmp_path):
    path = encode_numbered_video(tmp_path / "t.mp4", 30, gop=8)
    info = probe_template(path, RenderOptions())
    order = [29, 3, 17, 17, 0, 28, 5, 6, 7, 2, 1, 0]
    with TemplateReader(info, block_frames=4) as reader:
        assert [frame_number(f) for f in reader.frames(order)] == order
        with pytest.raises(IndexError):
            list(reader.frames([30]))


# --------------------------------------------------------------------------- the MP4 writer


def _write_clip(path: Path, *, seconds: float, fps: float = 25.0, size=(64, 48), rate: int = 48000) -> VideoWriter:
    """Frames and a tone, interleaved as the pipeline feeds them."""
    w, h = size
    frames = math.ceil(seconds * fps)
    tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    writer = VideoWriter(path, w, h, fps, rate, RenderOptions())
    pos = 0
    for i in range(0, frames, 8):
        block = np.stack([np.full((h, w, 3), (k * 8) % 256, np.uint8) for k in range(i, min(i + 8, frames))])
        writer.write_frames(block)
        end = min(len(tone), int(writer.video_seconds * rate))
        writer.write_audio(tone[pos:end])
        pos = end
    writer.write_audio(tone[pos:])
    return writer


def test_writer_makes_a_faststart_h264_aac_mp4_of_exact_length(tmp_path):
    out = tmp_path / "talk.mp4"
    writer = _write_clip(out, seconds=5.3)
    assert not out.exists()  # only the hidden temporary exists while writing
    assert [p.name for p in tmp_path.iterdir()][0].startswith(".talk.mp4.")
    assert writer.close() == out
    assert [p.name for p in tmp_path.iterdir()] == ["talk.mp4"]
    info = mf.probe(out)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert info["frames"] == math.ceil(5.3 * 25)
    assert mf.moov_before_mdat(out)
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.profile == "High" and v.codec_context.pix_fmt == "yuv420p"
        assert abs(float(a.duration * a.time_base) - 5.3) < 0.01
        keyframes = [f.pts * f.time_base for f in c.decode(v) if f.key_frame]
    gaps = np.diff([float(k) for k in keyframes] + [info["frames"] / 25])
    assert gaps.max() <= 2.0 + 1e-6  # a player seeking in a link never waits long


def test_writer_interleaves_audio_and_video(tmp_path):
    out = _write_clip(tmp_path / "talk.mp4", seconds=6.0).close()
    with av.open(str(out)) as c:
        kinds = "".join(p.stream.type[0] for p in c.demux() if p.size)
    longest_video_run = max(len(run) for run in kinds.split("a"))
    assert longest_video_run < 25  # never a second of video without its audio next to it
    assert "a" in kinds[:10]


def test_a_failed_write_leaves_no_file(tmp_path):
    out = tmp_path / "talk.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 64, 48, 25, 48000) as writer:
            writer.write_frames(np.zeros((5, 48, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    writer = _write_clip(out, seconds=0.5)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_wrong_frames_and_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "x.mp4", 63, 48, 25, 48000)
    with VideoWriter(tmp_path / "x.mp4", 64, 48, 25, 48000) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.write_frames(np.zeros((2, 48, 66, 3), np.uint8))
        with pytest.raises(ValueError, match="channel"):
            writer.write_audio(np.zeros((2, 100), np.float32))
        writer.write_frames(np.zeros((48, 64, 3), np.uint8))
        writer.write_audio(np.zeros(1920, np.float32))
    assert mf.probe(tmp_path / "x.mp4")["frames"] == 1


def test_a_video_whose_sound_stops_early_is_not_called_truncated(tmp_path):
    # a webm recording: 2 s of picture, 1 s of sound; the container's duration is the video's
    path = tmp_path / "recording.webm"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libvpx-vp9", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a_s = out.add_stream("libopus", rate=48000, layout="mono")
        for i in range(50):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        tone = (0.2 * np.sin(np.arange(48000) / 10)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, 0, Fraction(1, 48000)
        for p in [*a_s.encode(frame), *a_s.encode()]:
            out.mux(p)
    info = probe_audio(path, MediaLimits())
    assert abs(info.duration - 1.0) < 0.04


def test_frames_always_have_the_announced_size():
    from lipsync.media.template import to_rgb

    odd = av.VideoFrame.from_ndarray(np.full((49, 65, 3), 100, np.uint8), format="rgb24")
    assert to_rgb(odd, 64, 48).shape == (48, 64, 3)  # odd sizes lose a row and a column
    smaller = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 100, np.uint8), format="rgb24")
    scaled = to_rgb(smaller, 64, 48)  # a stream that changed resolution mid-way is scaled back
    assert scaled.shape == (48, 64, 3) and abs(int(scaled.mean()) - 100) <= 2

"""Builds small real media for tests: face templates from a real photograph and audio clips.

``skimage.data.astronaut()`` is a real portrait photograph (512x512) shipped inside
scikit-image. Moving templates are made from it by panning, zooming and rotating a crop
and encoding the frames with PyAV (H.264), so every test exercises real decoding.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DATA = Path(__file__).resolve().parent / "data"
SPEECH = DATA / "speech_en.wav"
SPEECH_SHORT = DATA / "speech_short.wav"
SILENCE = DATA / "silence_3s.wav"


def astronaut() -> np.ndarray:
    """The 512x512 RGB uint8 astronaut photograph."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def portrait(size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """A head-and-shoulders crop of the astronaut, resized to (width, height)."""
    from PIL import Image

    img = Image.fromarray(astronaut()).crop((96, 0, 352, 256))  # face roughly centred
    return np.asarray(img.resize(size, Image.BICUBIC))


def write_still(path: Path, size: tuple[int, int] = (256, 256)) -> Path:
    from PIL import Image

    Image.fromarray(portrait(size)).save(path)
    return path


def _affine_frame(src: np.ndarray, out_w: int, out_h: int, t: float, *, pan: float, zoom: float, rot_deg: float) -> np.ndarray:
    """One frame of a slow camera move over ``src`` (t in 0..1)."""
    from PIL import Image

    img = Image.fromarray(src)
    phase = math.sin(2 * math.pi * t)
    scale = 1.0 + zoom * phase
    angle = rot_deg * phase
    dx = pan * phase * src.shape[1]
    cx, cy = 224 + dx, 128  # centre of the face region in the photograph
    crop = 256 / scale
    img = img.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
    box = (cx - crop / 2, cy - crop / 2, cx + crop / 2, cy + crop / 2)
    return np.asarray(img.crop(tuple(int(round(v)) for v in box)).resize((out_w, out_h), Image.BICUBIC))


def write_face_video(path: Path, *, seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (256, 256),
                     pan: float = 0.02, zoom: float = 0.05, rot_deg: float = 3.0,
                     cover: range | None = None, audio: bool = False) -> Path:
    """An H.264 clip of the astronaut with a gentle pan/zoom/rotation.

    ``cover``: output frame numbers in which the face is hidden behind a grey block (to test
    frames without a face). ``audio``: also add an AAC track of a 220 Hz tone.
    """
    src = astronaut()
    n = max(1, int(round(seconds * fps)))
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "16", "preset": "ultrafast"}
        a_s = out.add_stream("aac", rate=48000) if audio else None
        for i in range(n):
            frame = _affine_frame(src, w, h, i / n, pan=pan, zoom=zoom, rot_deg=rot_deg).copy()
            if cover is not None and i in cover:
                frame[h // 6: h, w // 8: w - w // 8] = 128
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if a_s is not None:
            encode_tone(out, a_s, n / fps)
    return path


def write_plain_video(path: Path, *, seconds: float = 1.0, fps: int = 25, size: tuple[int, int] = (64, 48),
                      codec: str = "libx264") -> Path:
    """A tiny clip whose frame i shows its own number as brightness (i * 8 % 256), for timing tests."""
    n = max(1, int(round(seconds * fps)))
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            vs.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(n):
            frame = np.full((h, w, 3), (i * 8) % 256, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def encode_tone(out, stream, seconds: float, freq: float = 220.0) -> None:
    """Encode ``seconds`` of a sine tone into ``stream`` of the open container ``out``."""
    rate = stream.codec_context.sample_rate
    total = int(seconds * rate)
    pos = 0
    while pos < total:
        n = min(1024, total - pos)
        t = (np.arange(pos, pos + n) / rate).astype(np.float32)
        samples = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = pos
        frame.time_base = Fraction(1, rate)
        for p in stream.encode(frame):
            out.mux(p)
        pos += n
    for p in stream.encode():
        out.mux(p)


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    """A mono pcm_s16le WAV of ``pcm`` (int16 samples) written with PyAV."""
    return write_mono(path, pcm, rate)


def write_mono(path: Path, pcm: np.ndarray, rate: int, *, container: str = "wav", codec: str = "pcm_s16le") -> Path:
    """Mono int16 samples ``pcm`` in ``container`` with ``codec`` (e.g. container and codec "flac")."""
    with av.open(str(path), "w", format=container) as out:
        st = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def write_tone(path: Path, *, seconds: float = 1.0, rate: int = 16000, freq: float = 220.0) -> Path:
    """A WAV (pcm_s16le) tone: a quick valid audio input for pipeline tests."""
    n = int(seconds * rate)
    return write_wav(path, (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / rate) * 32767).astype(np.int16), rate)


def probe(path: Path) -> dict:
    """Duration, size and codecs of an MP4 as a player sees them (decodes every frame)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        frames = sum(1 for _ in c.decode(video=0)) if v else 0
        return {
            "duration": float(c.duration / av.time_base) if c.duration else 0.0,
            "video_codec": v.codec_context.name if v else None,
            "audio_codec": a.codec_context.name if a else None,
            "width": v.codec_context.width if v else 0,
            "height": v.codec_context.height if v else 0,
            "fps": float(v.average_rate) if v and v.average_rate else 0.0,
            "frames": frames,
        }


def moov_before_mdat(path: Path) -> bool:
    """True when the MP4's moov atom precedes mdat (faststart: streams from a link)."""
    data = Path(path).read_bytes()
    pos, order = 0, []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        order.append(kind)
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8:
            break
        pos += size
    return b"moov" in order and b"mdat" in order and order.index(b"moov") < order.index(b"mdat")


# Formants (Hz) and bandwidths of three cardinal vowels, adult male (Peterson & Barney's averages).
VOWELS = {
    "a": ((730.0, 1090.0, 2440.0), (90.0, 110.0, 160.0)),
    "i": ((270.0, 2290.0, 3010.0), (60.0, 100.0, 170.0)),
    "u": ((300.0, 870.0, 2240.0), (60.0, 90.0, 150.0)),
}


def formant_vowel(vowel: str, seconds: float, *, rate: int = 16000, pitch: float = 120.0,
                  level: float = 0.3) -> np.ndarray:
    """A sustained vowel by formant synthesis: a glottal pulse train (slightly jittered, with
    a spectral tilt like a voice) through the vowel's three formant resonators in cascade,
    with 20 ms fades at both ends. float32 mono, peak ``level``."""
    from scipy.signal import lfilter

    formants, bandwidths = VOWELS[vowel]
    n = int(seconds * rate)
    rng = np.random.default_rng(len(vowel) + int(pitch))
    source = np.zeros(n)
    t = 0.0
    while t < n:
        source[int(t)] = 1.0
        t += rate / (pitch * (1.0 + 0.01 * rng.standard_normal()))
    source = lfilter([1.0], [1.0, -0.97], source)  # -12 dB/octave glottal roll-off, roughly
    out = source
    for f, bw in zip(formants, bandwidths):
        r = math.exp(-math.pi * bw / rate)
        a1, a2 = -2 * r * math.cos(2 * math.pi * f / rate), r * r
        out = lfilter([1.0 + a1 + a2], [1.0, a1, a2], out)  # unity gain at 0 Hz
    out = lfilter([1.0, -1.0], [1.0], out)  # radiation at the lips: +6 dB/octave
    fade = min(n // 2, int(0.02 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        out[:fade] *= ramp
        out[n - fade:] *= ramp[::-1]
    return (level * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def write_vowels(path: Path, sequence: str = "aiu", *, seconds: float = 0.6, gap: float = 0.12,
                 rate: int = 16000) -> Path:
    """A WAV of sustained vowels (e.g. "aiu") with short silences between and around them."""
    pause = np.zeros(int(gap * rate), np.float32)
    parts = [pause]
    for v in sequence:
        parts += [formant_vowel(v, seconds, rate=rate), pause]
    pcm = (np.concatenate(parts) * 32767).astype(np.int16)
    return write_wav(path, pcm, rate)


def write_frames_video(path: Path, frames, *, fps: int = 25, crf: int = 12) -> Path:
    """An H.264 clip of the given (H, W, 3) uint8 frames."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


WALK_BACKGROUND = (40, 90, 60)  # a flat green no part of the head is: its pixels are countable in any crop


def head_patch(width: int) -> np.ndarray:
    """The astronaut's head (hair to chin, ear to ear) resized to ``width`` pixels wide; the
    face the detector finds in it is about 0.6 of that width."""
    from PIL import Image

    head = Image.fromarray(astronaut()).crop((150, 20, 300, 210))
    return np.asarray(head.resize((width, round(width * 190 / 150)), Image.BICUBIC))


def write_walking_face_video(path: Path, size: tuple[int, int], head_width: int, *, seconds: float = 4.0,
                             fps: int = 12, x_from: float = 0.2, x_to: float = 0.8) -> tuple[Path, list[tuple]]:
    """A wide shot: the head patch crossing the frame from ``x_from`` to ``x_to`` of its width
    on a flat background. Returns the file and each frame's head box (x0, y0, x1, y1)."""
    w, h = size
    head = head_patch(head_width)
    hh, hw = head.shape[:2]
    frames, boxes = [], []
    count = int(seconds * fps)
    for i in range(count):
        cx = w * (x_from + (x_to - x_from) * i / max(1, count - 1))
        x0, y0 = int(round(cx - hw / 2)), (h - hh) // 2
        frame = np.empty((h, w, 3), np.uint8)
        frame[:] = WALK_BACKGROUND
        frame[y0:y0 + hh, x0:x0 + hw] = head
        frames.append(frame)
        boxes.append((x0, y0, x0 + hw, y0 + hh))
    return write_frames_video(path, frames, fps=fps, crf=18), boxes


def visible_share(frame: np.ndarray, expected_pixels: float) -> float:
    """How much of the head patch a frame shows: its non-background pixels against the
    count a whole head has at the frame's scale."""
    off = np.abs(frame.astype(np.int16) - np.array(WALK_BACKGROUND, np.int16)).max(axis=2) > 40
    return float(off.sum()) / expected_pixels


def decoy_scene(shift: tuple[int, int] = (0, 0), size: tuple[int, int] = (640, 480)) -> tuple[np.ndarray, dict]:
    """A presenter in front of a large, out-of-focus poster of a face: the poster's face is
    the larger detection (150 px against 87) and by far the less confident one (about 0.1
    against 1.6) -- what a face chooser must not take for the speaker. Returns the frame and
    the mouth centre (x, y) of each: {"presenter": ..., "poster": ...}."""
    from PIL import Image, ImageFilter

    w, h = size
    head = astronaut()[0:300, 110:370]  # the photograph's mouth is at (112, 157) of this crop
    canvas = Image.new("RGB", (w, h), (200, 200, 200))
    poster = Image.fromarray(head).resize((380, round(380 * 300 / 260)), Image.BICUBIC)
    poster = poster.point(lambda v: int(200 + (v - 128) * 0.6))
    canvas.paste(poster.crop((0, 0, min(poster.width, w - 20), min(poster.height, h - 20))), (20, 20))
    canvas = Image.fromarray(np.asarray(canvas))
    blurred = canvas.crop((0, 0, 440, h)).filter(ImageFilter.GaussianBlur(4))
    canvas.paste(blurred, (0, 0))
    presenter = Image.fromarray(head).resize((230, round(230 * 300 / 260)), Image.BICUBIC)
    px, py = w - 240 + shift[0], h - presenter.height + shift[1]
    canvas.paste(presenter, (px, py))
    k_poster, k_presenter = 380 / 260, 230 / 260
    mouths = {"poster": (20 + 112 * k_poster, 20 + 157 * k_poster),
              "presenter": (px + 112 * k_presenter, py + 157 * k_presenter)}
    return np.asarray(canvas), mouths


def write_decoy_video(path: Path, *, frames: int = 12, fps: int = 25) -> tuple[Path, list[dict]]:
    """The decoy scene with the presenter moving a few pixels; the mouths of every frame."""
    pictures, mouths = [], []
    for i in range(frames):
        frame, where = decoy_scene((int(round(3 * math.sin(i / 2))), int(round(2 * math.cos(i / 3)))))
        pictures.append(frame)
        mouths.append(where)
    return write_frames_video(path, pictures, fps=fps, crf=14), mouths

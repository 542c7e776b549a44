"""Judging a lip-sync render the way a viewer does, voice by voice.

All of it works on what the *referee* (MediaPipe's face mesh, bench/referee/) measures on
the encoded output, never on what the engine meant to draw:

* :func:`speech_pauses`: the pauses of 200 ms or more in the audio, where a viewer
  expects the lips to come together;
* :class:`MouthScale`: when a mouth counts as closed, from the template's own mouth at
  rest and how far this render opens it;
* :func:`pause_closures` and :func:`phoneme_closures`: the share of pauses, and of
  /p b m/ (where the phoneme times are known), in which the lips close in some frame;
* :func:`vowel_shapes`: mouth width and opening in /a/ /i/ /u/ against the mouth at rest;
* :func:`voice_sheet`: a contact sheet of the mouth at chosen moments, one row per
  template, for a person to judge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.avsync import RefereeMouths, video_frames
from bench.phonemes import Phoneme, is_bilabial
from lipsync.media.audio import load_mono

HOP_S = 0.01
MIN_PAUSE_S = 0.2


def _band_level_db(audio: Path, band: tuple[float, float] = (300.0, 3400.0), rate: int = 16000) -> np.ndarray:
    """Speech-band level (dB) per 10 ms hop, over 20 ms windows."""
    samples = load_mono(audio, rate)
    hop, win = int(HOP_S * rate), int(2 * HOP_S * rate)
    count = max(0, (samples.size - win) // hop + 1)
    if count == 0:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(samples, win)[::hop][:count] * np.hanning(win)
    spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1.0 / rate)
    energy = spectrum[:, (freqs >= band[0]) & (freqs <= band[1])].sum(axis=1) / win
    return 10.0 * np.log10(np.maximum(energy, 1e-12))


def speech_pauses(audio: Path, min_seconds: float = MIN_PAUSE_S) -> list[tuple[float, float]]:
    """(start, end) seconds of every pause of at least ``min_seconds`` between speech.

    A hop is quiet when its speech-band level is nearer the recording's noise floor (5th
    percentile) than its speech level (95th): a quarter of the way up. Quiet spells at the
    very start and end are not pauses *between* speech and are left out.
    """
    level = _band_level_db(audio)
    if level.size == 0:
        return []
    floor, peak = np.percentile(level, 5), np.percentile(level, 95)
    quiet = level < floor + 0.25 * (peak - floor)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    pauses = []
    for a, b in zip(edges[::2], edges[1::2]):
        if a == 0 or b == level.size:
            continue
        if (b - a) * HOP_S >= min_seconds:
            pauses.append((a * HOP_S, b * HOP_S + HOP_S))
    return pauses


@dataclass(frozen=True)
class MouthScale:
    """When the referee's inner-lip gap counts as closed in one render.

    ``rest`` is the template's own gap (the mouth nobody moved), ``open`` how far this
    render opens it in its most open tenth of frames; closed means within a fifth of the
    way from rest to open. A template whose mouth is already parted at rest therefore
    counts as closed at its own rest, not only at lips touching.
    """

    rest: float
    open: float
    share: float = 0.2

    @property
    def closed_below(self) -> float:
        return self.rest + self.share * max(self.open - self.rest, 0.0)

    @classmethod
    def of(cls, gap: np.ndarray, rest: float) -> MouthScale:
        finite = gap[np.isfinite(gap)]
        return cls(rest=rest, open=float(np.percentile(finite, 90)) if finite.size else rest)


def _frames_within(start: float, end: float, fps: float, n: int, slack: int = 0) -> np.ndarray:
    """Frames whose middle lies inside [start, end], widened by ``slack`` frames each side."""
    first = int(math.ceil(start * fps - 0.5)) - slack
    last = int(math.floor(end * fps - 0.5)) + slack
    return np.arange(max(first, 0), min(last, n - 1) + 1)


def closure_frames(phoneme: Phoneme, fps: float, n: int, slack: int = 1) -> np.ndarray:
    """The frames in which a /p b m/ may show its lips shut: those whose middle lies in it,
    give or take ``slack`` frames (where there are none, the frame it starts in)."""
    frames = _frames_within(phoneme.start, phoneme.end, fps, n, slack)
    if frames.size == 0:
        frames = np.array([min(int(phoneme.start * fps), n - 1)])
    return frames


def pause_closures(gap: np.ndarray, pauses: Sequence[tuple[float, float]], fps: float,
                   scale: MouthScale) -> dict:
    """Share of the pauses in which the lips close in at least one frame."""
    closed = 0
    for start, end in pauses:
        frames = _frames_within(start, end, fps, gap.size)
        values = gap[frames]
        if values.size and np.nanmin(values) <= scale.closed_below:
            closed += 1
    return {"pauses": len(pauses), "closed": closed, "share": round(closed / len(pauses), 3) if pauses else None}


def _merged(phonemes: Sequence[Phoneme]) -> list[Phoneme]:
    """espeak-ng reports a stop's closure and release as two events of the same name."""
    out: list[Phoneme] = []
    for p in phonemes:
        if out and out[-1].name == p.name and abs(out[-1].end - p.start) < 1e-6:
            out[-1] = Phoneme(p.name, out[-1].start, p.end)
        else:
            out.append(p)
    return out


def phoneme_closures(gap: np.ndarray, phonemes: Sequence[Phoneme], fps: float, scale: MouthScale,
                     slack: int = 1) -> dict:
    """Share of /p b m/ during which (give or take ``slack`` frames) the lips close."""
    bilabials = [p for p in _merged(phonemes) if is_bilabial(p.name)]
    closed = 0
    for p in bilabials:
        if np.nanmin(gap[closure_frames(p, fps, gap.size, slack)]) <= scale.closed_below:
            closed += 1
    return {"bilabials": len(bilabials), "closed": closed,
            "share": round(closed / len(bilabials), 3) if bilabials else None, "slack_frames": slack}


VOWEL_CLASSES = {"a": ("a", "a:", "A:", "A", "aa"), "i": ("i:", "i", "I", "i."), "u": ("u:", "u", "U", "u.")}
SHORTEST_VOWEL = 0.06  # seconds: a vowel espeak-ng times shorter is mostly its neighbours' transitions


def vowel_shapes(mouths: RefereeMouths, phonemes: Sequence[Phoneme], fps: float,
                 rest_width: float, rest_gap: float) -> dict:
    """Width and opening during /a/ /i/ /u/ (the middle of each vowel) against rest.

    ``width_vs_rest``: mouth width over the width at rest (>1 spread, <1 rounded);
    ``opening``: inner-lip gap beyond rest, in mouth widths at rest, and ``opening_vs_a``
    that against /a/'s.
    """
    out: dict[str, dict] = {}
    for vowel, names in VOWEL_CLASSES.items():
        frames = []
        for p in phonemes:
            if p.name in names and p.end - p.start >= SHORTEST_VOWEL:
                middle = (p.start + p.end) / 2
                frames.extend(_frames_within(middle - 0.3 * (p.end - p.start), middle + 0.3 * (p.end - p.start),
                                             fps, mouths.gap.size).tolist())
        if not frames:
            continue
        idx = np.array(sorted(set(frames)))
        width = float(np.nanmean(mouths.width[idx]))
        opening = float(np.nanmean(mouths.gap[idx] * mouths.width[idx])) / rest_width - rest_gap
        out[vowel] = {"frames": int(idx.size), "width_vs_rest": round(width / rest_width, 3),
                      "opening": round(opening, 4)}
    if "a" in out:
        for vowel in ("i", "u"):
            if vowel in out:
                out[vowel]["opening_vs_a"] = round(out[vowel]["opening"] / max(out["a"]["opening"], 1e-6), 3)
    return out


def voice_sheet(rows: Sequence[tuple[str, Path, Sequence[np.ndarray]]], picks: Sequence[tuple[str, int]],
                path: Path, tile_height: int = 120) -> Path:
    """A contact sheet: one row per (label, video, per-frame mouth centres and widths as
    (N, 3) x, y, width), one column per (label, frame number) in ``picks``."""
    from PIL import Image, ImageDraw

    label_w, head = 110, 22
    tiles: list[list[Image.Image]] = []
    for _label, video, mouth in rows:
        wanted = {frame for _, frame in picks}
        got: dict[int, Image.Image] = {}
        for i, frame in enumerate(video_frames(video)):
            if i in wanted:
                x, y, w = mouth[min(i, len(mouth) - 1)]
                half = 0.9 * w
                crop = Image.fromarray(frame).crop((int(x - half), int(y - 0.75 * half), int(x + half),
                                                    int(y + 0.75 * half)))
                got[i] = crop.resize((int(tile_height * 4 / 3), tile_height), Image.BICUBIC)
        tiles.append([got.get(frame, Image.new("RGB", (int(tile_height * 4 / 3), tile_height), (128, 128, 128)))
                      for _, frame in picks])
    tile_w = int(tile_height * 4 / 3)
    sheet = Image.new("RGB", (label_w + tile_w * len(picks), head + tile_height * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (name, _frame) in enumerate(picks):
        draw.text((label_w + k * tile_w + 4, 5), name, fill=(0, 0, 0))
    for r, ((label, _video, _mouth), row) in enumerate(zip(rows, tiles)):
        draw.text((6, head + r * tile_height + tile_height // 2 - 6), label, fill=(0, 0, 0))
        for k, tile in enumerate(row):
            sheet.paste(tile, (label_w + k * tile_w, head + r * tile_height))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=82, optimize=True)  # JPEG by the name: a sheet per voice stays ~100 KB
    return path

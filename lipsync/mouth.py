"""Audio → mouth motion: per output video frame, how open the mouth is and its shape.

* openness 0..1 follows the loudness of the speech band (300-3400 Hz) above a noise gate,
  with a fast attack and a slightly slower release, the way a jaw moves;
* dips of energy between syllables (a /p/, /b/, /m/, a pause for breath) close it briefly;
* shape -1..1 is rounded (-1, "oo") to spread (+1, "ee"), from where the spectrum's
  centroid lies relative to the speaker's own median (so it suits any voice);
* the mouth moves slightly ahead of the sound (``lead``), as it does in real speech.

Features are computed every 10 ms from 16 kHz mono audio, fed in blocks so a one-hour
recording never has to sit in memory; the per-frame values are derived at the end from
those small arrays (three numbers per 10 ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16000
HOP = 160  # 10 ms
WINDOW = 512  # 32 ms
FEATURE_RATE = RATE / HOP  # 100 per second
SPEECH_BAND = (300.0, 3400.0)


@dataclass(frozen=True)
class MouthSettings:
    lead: float = 0.04  # seconds the mouth moves ahead of the sound
    attack: float = 0.020  # seconds, time constant of opening
    release: float = 0.050  # seconds, time constant of closing
    gate_below_peak: float = 40.0  # dB under the loud speech level that count as silence
    silence_level: float = -60.0  # dBFS of speech-band energy under which nothing opens
    dynamic_range: float = 35.0  # dB under the loud speech level over which the mouth opens
    curve: float = 1.2  # >1: quiet speech opens the mouth a little, only loud vowels fully
    closure_depth: float = 10.0  # dB an energy dip must fall below both neighbours to close the lips
    closure_span: float = 0.15  # seconds either side in which those neighbours are looked for
    closure_keep: float = 0.25  # openness left in a video frame that contains a closure
    shape_span: float = 0.5  # octaves of centroid shift that give a fully rounded/spread mouth


@dataclass(frozen=True)
class MouthTrack:
    openness: np.ndarray  # (N,) float32 0..1, one per output frame
    shape: np.ndarray  # (N,) float32 -1 (rounded) .. 1 (spread)
    fps: float

    def __len__(self) -> int:
        return int(self.openness.shape[0])


class MouthFeatures:
    """Accumulates 10 ms speech-band features from blocks of 16 kHz mono float samples."""

    def __init__(self) -> None:
        freqs = np.fft.rfftfreq(WINDOW, 1.0 / RATE)
        self._band = (freqs >= SPEECH_BAND[0]) & (freqs <= SPEECH_BAND[1])
        self._log_freqs = np.log2(freqs[self._band])
        self._window = np.hanning(WINDOW).astype(np.float32)
        # half a window of silence in front, so feature j is centred on time j * 10 ms
        self._pending = np.zeros(WINDOW // 2, np.float32)
        self._energy: list[np.ndarray] = []  # speech-band power per hop, full scale = 1
        self._centroid: list[np.ndarray] = []  # log2 Hz, power-weighted, in the speech band

    def feed(self, samples: np.ndarray) -> None:
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        count = (buf.shape[0] - WINDOW) // HOP + 1 if buf.shape[0] >= WINDOW else 0
        if count > 0:
            windows = np.lib.stride_tricks.sliding_window_view(buf, WINDOW)[::HOP][:count]
            power = np.abs(np.fft.rfft(windows * self._window, axis=1))[:, self._band] ** 2
            total = power.sum(axis=1)
            # Hann window power gain and FFT length, so a full-scale sine reads about 0 dBFS
            self._energy.append((total * 2.0 / (WINDOW * np.sum(self._window**2))).astype(np.float32))
            self._centroid.append(((power @ self._log_freqs) / np.maximum(total, 1e-20)).astype(np.float32))
        self._pending = buf[count * HOP:]

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(energy, centroid) arrays, one value per 10 ms of audio."""
        self.feed(np.zeros(WINDOW // 2, np.float32))  # flush the last half window
        if not self._energy:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(self._energy), np.concatenate(self._centroid)


def _smooth_attack_release(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    up = 1.0 - np.exp(-1.0 / (attack * FEATURE_RATE))
    down = 1.0 - np.exp(-1.0 / (release * FEATURE_RATE))
    out = np.empty_like(x)
    y = 0.0
    for i, v in enumerate(x.tolist()):  # ~360k steps for an hour: fine in plain Python
        y += (up if v > y else down) * (v - y)
        out[i] = y
    return out


def _closures(level_db: np.ndarray, speaking: np.ndarray, s: MouthSettings) -> np.ndarray:
    """Hop numbers of brief lip closures: energy dips between two louder parts."""
    from scipy.ndimage import uniform_filter1d  # scipy on use: engines without lip closures never load it
    from scipy.signal import argrelmin

    smooth = uniform_filter1d(level_db, 3, mode="nearest")
    span = max(1, int(round(s.closure_span * FEATURE_RATE)))
    found = []
    for i in argrelmin(smooth, order=2, mode="clip")[0]:
        left = smooth[max(0, i - span):i]
        right = smooth[i + 1:i + 1 + span]
        if left.size and right.size and min(left.max(), right.max()) - smooth[i] >= s.closure_depth:
            if speaking[max(0, i - span):i + span + 1].any():
                found.append(i)
    return np.array(found, np.int64)


def mouth_track(energy: np.ndarray, centroid: np.ndarray, fps: float, frame_count: int,
                settings: MouthSettings = MouthSettings()) -> MouthTrack:
    """Per-frame openness and shape for ``frame_count`` output frames at ``fps``."""
    s = settings
    openness = np.zeros(frame_count, np.float32)
    shape = np.zeros(frame_count, np.float32)
    if energy.size == 0 or frame_count == 0:
        return MouthTrack(openness, shape, fps)
    level_db = 10.0 * np.log10(np.maximum(energy, 1e-12))
    peak = float(np.percentile(level_db, 98))
    if peak < s.silence_level:
        return MouthTrack(openness, shape, fps)  # nothing but silence or hum: keep the mouth shut
    floor = float(np.percentile(level_db, 10))
    # the gate sits above the noise floor, but never within 20 dB of the peak: a clip of
    # uninterrupted speech has no pauses to measure the floor in
    gate = max(min(floor + 6.0, peak - 20.0), peak - s.gate_below_peak, s.silence_level)
    speaking = level_db > gate
    bottom = max(gate, peak - s.dynamic_range)
    level = np.clip((level_db - bottom) / max(peak - bottom, 1.0), 0.0, 1.0) ** s.curve
    hop_open = _smooth_attack_release(level, s.attack, s.release)

    # speaker-relative brightness: above the median centroid = spread, below = rounded
    voiced = level > 0.3
    reference = float(np.median(centroid[voiced])) if voiced.any() else float(np.median(centroid))
    hop_shape = np.tanh((centroid - reference) / s.shape_span) * np.minimum(1.0, hop_open * 2.0)
    hop_shape = _smooth_attack_release(hop_shape, 0.06, 0.06)

    # average the hops inside each frame's display interval, shifted earlier by the lead
    times = (np.arange(frame_count) + 0.5) / fps + s.lead
    half = 0.5 / fps
    lo = np.clip(np.floor((times - half) * FEATURE_RATE).astype(np.int64), 0, energy.size)
    hi = np.clip(np.ceil((times + half) * FEATURE_RATE).astype(np.int64), 0, energy.size)
    cum_open = np.concatenate([[0.0], np.cumsum(hop_open, dtype=np.float64)])
    cum_shape = np.concatenate([[0.0], np.cumsum(hop_shape, dtype=np.float64)])
    width = np.maximum(hi - lo, 1)
    openness = ((cum_open[hi] - cum_open[lo]) / width).astype(np.float32)
    shape = ((cum_shape[hi] - cum_shape[lo]) / width).astype(np.float32)
    # a closure shuts the lips for the video frame it falls in: at 25 fps a dip of 50-100 ms
    # would otherwise be averaged away
    closures = _closures(level_db, speaking, s)
    if closures.size:
        hit = np.searchsorted(closures, lo, side="left") < np.searchsorted(closures, hi, side="left")
        openness[hit] *= s.closure_keep
    return MouthTrack(np.clip(openness, 0.0, 1.0), np.clip(shape, -1.0, 1.0), fps)


def mouth_track_from_samples(samples: np.ndarray, fps: float, frame_count: int,
                             settings: MouthSettings = MouthSettings()) -> MouthTrack:
    """Mouth track of 16 kHz mono float samples (-1..1)."""
    features = MouthFeatures()
    features.feed(samples)
    return mouth_track(*features.finish(), fps, frame_count, settings)


def mouth_track_from_file(path: Path, fps: float, frame_count: int,
                          settings: MouthSettings = MouthSettings()) -> MouthTrack:
    """Mouth track of any audio the pipeline accepts, decoded and resampled block by block."""
    from lipsync.media.audio import iter_audio  # PyAV on use: the mouth model itself is pure numpy

    features = MouthFeatures()
    for block in iter_audio(Path(path), rate=RATE):
        features.feed(block)
    return mouth_track(*features.finish(), fps, frame_count, settings)

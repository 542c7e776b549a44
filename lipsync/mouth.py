"""Audio → mouth motion: per output video frame, a small viseme model of four numbers.

* ``openness`` 0..1 follows the loudness of the speech band (300-3400 Hz) above a noise
  gate, against the loud level of the 15 s around it (so a stretch recorded quieter moves
  the mouth as much), with a fast attack and a slightly slower release, the way a jaw
  moves; an open vowel (/a/: its first formant high, energy in 500-1100 Hz) opens it
  further than a close one (/i/, /u/: first formant low, energy under 500 Hz) of the same
  loudness;
* dips of energy between syllables (a /p/, /b/, /m/) all but close the lips for the video
  frame they fall in;
* ``spread`` -1..1 is rounded (-1, /u/ /o/) to spread (+1, /i/ /e/), from the balance of
  the second-formant region (1700-3400 Hz) against 500-1100 Hz, relative to the speaker's
  own median (so it suits any voice);
* ``protrusion`` 0..1 pushes the lips forward for rounded vowels: energy concentrated low
  in the spectrum (both of the balances above low), a separate cue from the width;
* ``activity`` 0..1 says whether someone is speaking: 0 from about 1.5 s after the speech
  stops (pauses between sentences stay speech), where the engines show the template's
  own mouth untouched;
* the mouth moves slightly ahead of the sound (``lead``), as it does in real speech.

Features are computed every 10 ms from 16 kHz mono audio, fed in blocks so a one-hour
recording never has to sit in memory; the per-frame values are derived at the end from
those small arrays (four band powers and eleven autocorrelation terms per 10 ms).
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
# Formant regions: close vowels' first formant, open vowels' first formant (and rounded
# vowels' second), front vowels' second and third formants.
LOW_BAND = (150.0, 500.0)
MID_BAND = (500.0, 1100.0)
HIGH_BAND = (1700.0, 3400.0)


@dataclass(frozen=True)
class MouthSettings:
    lead: float = 0.02  # seconds the mouth moves ahead of the sound
    attack: float = 0.020  # seconds, time constant of opening
    release: float = 0.050  # seconds, time constant of closing
    gate_below_peak: float = 40.0  # dB under the loud speech level that count as silence
    # dBFS of speech-band energy: a recording whose loud level is under it is silence or hum
    # throughout (within a recording, the gate follows its own floor and loud level, so the
    # same speech recorded 20 dB quieter moves the mouth the same; a fixed -60 dB gate had
    # narrowed such a recording's range, and it opened 0.87 as far)
    silence_level: float = -60.0
    dynamic_range: float = 35.0  # dB under the loud speech level over which the mouth opens
    # seconds of audio around each moment whose loud level the mouth opens against (the whole
    # recording where it is shorter): a long recording whose level changes -- a second
    # session, another microphone, a speaker who turns away -- has the same mouth throughout,
    # where one level for the whole hour left a stretch 20 dB quieter opening a quarter as far
    level_window: float = 15.0
    level_follow: float = 24.0  # dB under the recording's loud level that a quieter stretch is followed to
    level_step: float = 6.0  # dB between the two halves of that window that make a change of level
    curve: float = 1.2  # >1: quiet speech opens the mouth a little, only loud vowels fully
    closure_depth: float = 12.0  # dB an energy dip must fall below both neighbours to close the lips
    closure_span: float = 0.15  # seconds either side in which those neighbours are looked for
    closure_keep: float = 0.25  # openness left in a video frame that contains a closure (it averages 40 ms)
    vowel_open: float = 0.35  # how much an open vowel (/a/) opens beyond its loudness
    # and how much a close one (/i/ /u/) closes: more, as their lips part far less than /a/'s
    # however loud (0.35 left formant-synthesised /u/ 0.65-0.72 as open as /a/)
    vowel_close: float = 0.6
    # formant shift from the speaker's median that makes a vowel fully open, spread or rounded
    vowel_span_octaves: float = 0.5
    # voiced evidence (hops at full weight, smoothed) under which a vowel's cue is shown
    # weaker: it keeps a vowel's shape faint where little voice surrounds it
    vowel_evidence: float = 0.1
    # seconds of silence either side of speech still counted as speaking: a pause between
    # sentences keeps the lips as speech leaves them (closed), and only a longer silence
    # brings back the template's own mouth -- on a face with parted lips at rest, a quick
    # return made the mouth open whenever the speaker stopped
    rest_after: float = 1.5


@dataclass(frozen=True)
class MouthTrack:
    """Per output frame, float32: see the module's docstring for what each means."""

    openness: np.ndarray  # (N,) 0..1
    spread: np.ndarray  # (N,) -1 (rounded) .. 1 (spread)
    protrusion: np.ndarray  # (N,) 0..1
    activity: np.ndarray  # (N,) 0 (rest: the template's own mouth) .. 1 (speaking)
    fps: float

    def __len__(self) -> int:
        return int(self.openness.shape[0])

    @classmethod
    def at_rest(cls, frame_count: int, fps: float) -> MouthTrack:
        zero = np.zeros(frame_count, np.float32)
        return cls(zero, zero.copy(), zero.copy(), zero.copy(), fps)


LPC_ORDER = 10  # linear prediction at 8 kHz: five resonances, enough for three formants
_LPC_BINS = WINDOW // 4 + 1  # the power spectrum up to 4 kHz: the band an 8 kHz signal holds


@dataclass(frozen=True)
class HopFeatures:
    """Per 10 ms hop: band powers (full scale = 1) and the spectral envelope's autocorrelation."""

    energy: np.ndarray  # (hops,) the speech band
    low: np.ndarray  # (hops,) LOW_BAND
    mid: np.ndarray  # (hops,) MID_BAND
    high: np.ndarray  # (hops,) HIGH_BAND
    autocorr: np.ndarray  # (hops, LPC_ORDER + 1) of the pre-emphasised 0-4 kHz spectrum

    def __len__(self) -> int:
        return int(self.energy.shape[0])


class MouthFeatures:
    """Accumulates 10 ms features from blocks of 16 kHz mono float samples."""

    _BANDS = (SPEECH_BAND, LOW_BAND, MID_BAND, HIGH_BAND)

    def __init__(self) -> None:
        freqs = np.fft.rfftfreq(WINDOW, 1.0 / RATE)
        # one matrix product gives every band's power: (bins, bands) of 0/1
        self._select = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in self._BANDS], axis=1).astype(np.float32)
        # pre-emphasis (1 - 0.97 z^-1) at 8 kHz, as a power gain per bin: the formants of a
        # voice fall off ~12 dB/octave, and flattening that lets the prediction find F2
        w = np.pi * np.arange(_LPC_BINS) / (_LPC_BINS - 1)
        self._emphasis = (1.0 + 0.97**2 - 2.0 * 0.97 * np.cos(w)).astype(np.float32)
        self._window = np.hanning(WINDOW).astype(np.float32)
        # Hann window power gain and FFT length, so a full-scale sine reads about 0 dBFS
        self._scale = 2.0 / (WINDOW * float(np.sum(self._window**2)))
        # half a window of silence in front, so feature j is centred on time j * 10 ms
        self._pending = np.zeros(WINDOW // 2, np.float32)
        self._powers: list[np.ndarray] = []  # (hops, bands)
        self._autocorr: list[np.ndarray] = []  # (hops, LPC_ORDER + 1)

    def feed(self, samples: np.ndarray) -> None:
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        count = (buf.shape[0] - WINDOW) // HOP + 1 if buf.shape[0] >= WINDOW else 0
        if count > 0:
            windows = np.lib.stride_tricks.sliding_window_view(buf, WINDOW)[::HOP][:count]
            power = (np.abs(np.fft.rfft(windows * self._window, axis=1)) ** 2).astype(np.float32)
            self._powers.append((power @ self._select) * np.float32(self._scale))
            # the autocorrelation of the signal band-limited to 4 kHz (i.e. resampled to 8 kHz)
            # is the inverse transform of its power spectrum (Wiener-Khinchin)
            low = power[:, :_LPC_BINS] * self._emphasis
            self._autocorr.append(np.fft.irfft(low, axis=1)[:, :LPC_ORDER + 1].astype(np.float32))
        self._pending = buf[count * HOP:]

    def finish(self) -> HopFeatures:
        """The features, one row per 10 ms of audio."""
        self.feed(np.zeros(WINDOW // 2, np.float32))  # flush the last half window
        bands = np.concatenate(self._powers) if self._powers else np.zeros((0, len(self._BANDS)), np.float32)
        autocorr = (np.concatenate(self._autocorr) if self._autocorr
                    else np.zeros((0, LPC_ORDER + 1), np.float32))
        return HopFeatures(*(np.ascontiguousarray(bands[:, k]) for k in range(len(self._BANDS))), autocorr)


def formants(autocorr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F1, F2) in Hz per row of LPC autocorrelations; NaN where no resonance was found.

    Linear prediction (Levinson-Durbin, batched over rows), then the roots of the predictor
    polynomial (eigenvalues of its companion matrix): each sharp resonance (bandwidth under
    500 Hz) between 200 and 3500 Hz is a formant candidate, the lowest two are F1 and F2.
    """
    r = autocorr.astype(np.float64)
    rows = r.shape[0]
    f1 = np.full(rows, np.nan)
    f2 = np.full(rows, np.nan)
    if rows == 0:
        return f1, f2
    r = r.copy()
    r[:, 0] *= 1.0 + 1e-6  # a little white noise keeps the recursion stable on pure tones
    a = np.zeros((rows, LPC_ORDER + 1))
    a[:, 0] = 1.0
    err = np.maximum(r[:, 0], 1e-20)
    for k in range(1, LPC_ORDER + 1):
        acc = r[:, k] + np.einsum("nj,nj->n", a[:, 1:k], r[:, k - 1:0:-1])
        refl = -acc / err
        a[:, 1:k] = a[:, 1:k] + refl[:, None] * a[:, k - 1:0:-1]
        a[:, k] = refl
        err = np.maximum(err * (1.0 - refl**2), 1e-20)
    companion = np.zeros((rows, LPC_ORDER, LPC_ORDER))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, LPC_ORDER), np.arange(LPC_ORDER - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    rate = RATE / 2  # the predictor runs at 8 kHz
    freq = np.angle(roots) * rate / (2 * np.pi)
    bandwidth = -np.log(np.maximum(np.abs(roots), 1e-9)) * rate / np.pi
    candidate = (roots.imag > 0) & (freq > 200.0) & (freq < 3500.0) & (bandwidth < 500.0)
    ordered = np.sort(np.where(candidate, freq, np.inf), axis=1)
    f1 = np.where(np.isfinite(ordered[:, 0]), ordered[:, 0], np.nan)
    f2 = np.where(np.isfinite(ordered[:, 1]), ordered[:, 1], np.nan)
    return f1, f2


def _smooth_attack_release(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    up = 1.0 - np.exp(-1.0 / (attack * FEATURE_RATE))
    down = 1.0 - np.exp(-1.0 / (release * FEATURE_RATE))
    out = np.empty_like(x)
    y = 0.0
    for i, v in enumerate(x.tolist()):  # ~360k steps for an hour: fine in plain Python
        y += (up if v > y else down) * (v - y)
        out[i] = y
    return out


def _local_minima(x: np.ndarray, order: int) -> np.ndarray:
    """Indices lower than their ``order`` neighbours on each side (the ends compare with
    themselves, so never count); a run of equal values counts as one, found at its middle.
    (scipy.signal's argrelmin misses such a flat bottom -- the exact zeros a speech
    synthesiser leaves between syllables make one -- and importing scipy.signal costs a
    render about a second.)"""
    if x.size == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]]))
    ends = np.append(starts[1:], x.size)
    values = x[starts]
    idx = np.arange(values.size)
    lowest = np.ones(values.size, bool)
    for k in range(1, order + 1):
        lowest &= (values < values[np.maximum(idx - k, 0)]) & (values < values[np.minimum(idx + k, values.size - 1)])
    return (starts[lowest] + ends[lowest] - 1) // 2


def _moving_max(x: np.ndarray, size: int) -> np.ndarray:
    """The maximum over a window of ``size`` centred on each value, 0 beyond the ends.
    (scipy.ndimage's maximum_filter1d does the same; importing it costs a render 0.25 s.)"""
    before = size // 2
    padded = np.pad(x, (before, size - 1 - before))
    return np.lib.stride_tricks.sliding_window_view(padded, size).max(axis=1)


def _closures(level_db: np.ndarray, speaking: np.ndarray, s: MouthSettings) -> np.ndarray:
    """Hop numbers of brief lip closures: energy dips between two louder parts."""
    padded = np.pad(level_db.astype(np.float64), 1, mode="edge")  # each hop and its neighbours, the ends repeated
    smooth = ((padded[:-2] + padded[1:-1] + padded[2:]) / 3.0).astype(level_db.dtype)
    span = max(1, int(round(s.closure_span * FEATURE_RATE)))
    found = []
    for i in _local_minima(smooth, order=2):
        left = smooth[max(0, i - span):i]
        right = smooth[i + 1:i + 1 + span]
        if left.size and right.size and min(left.max(), right.max()) - smooth[i] >= s.closure_depth:
            if speaking[max(0, i - span):i + span + 1].any():
                found.append(i)
    return np.array(found, np.int64)


_GATE_OVER_FLOOR = 6.0  # dB over the noise floor (the quietest tenth of the hops) that is speech
_GATE_UNDER_LOUD = 20.0  # dB under the loud level that is always speech


def _window_levels(level_db: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """The 98th percentile of level_db[start:start + length] for each of ``starts``."""
    windows = np.lib.stride_tricks.sliding_window_view(level_db, length)
    # a few dozen windows at a time: an hour's 3600 windows of 1500 hops would be 21 MB at once
    return np.concatenate([np.percentile(windows[starts[k:k + 64]], 98, axis=1) for k in range(0, starts.size, 64)])


def _loud_level(level_db: np.ndarray, peak: float, floor: float, s: MouthSettings) -> np.ndarray:
    """Per hop (float64): the loud speech level (98th percentile, as ``peak`` is the whole
    recording's) of the ``level_window`` seconds around it, the window kept inside the
    recording: a recording no longer than one window has ``peak`` throughout. Measured once
    a second and interpolated between.

    Where the level steps (the two halves of that window differ by ``level_step`` dB or
    more), the window that ends at the moment or the one that starts there serves instead,
    whichever is nearer the level of the 2 s around it: so quieter speech after a change of
    recording level opens the mouth as fully within a second or two (the window around it,
    half loud, set the level for half a window).

    Followed down at most ``level_follow`` dB, and never to within 26 dB of the noise floor
    (its 6 dB of gate plus the 20 the gate keeps under the loud level): in a long silence
    the window holds only the room's noise, and a loud level taken from it would open the
    mouth on that noise. A recording without pauses has no floor to keep clear of and keeps
    ``peak``."""
    hops = level_db.size
    window = max(2, int(round(s.level_window * FEATURE_RATE)))
    if hops <= window:
        return np.full(hops, peak)
    second = int(FEATURE_RATE)
    points = np.append(np.arange(0, hops, second), hops - 1)
    last = hops - window
    centred = np.clip(points - window // 2, 0, last)
    levels = _window_levels(level_db, centred, window)
    half = window // 2
    step = np.abs(_window_levels(level_db, centred, half) - _window_levels(level_db, centred + window - half, half))
    changed = np.flatnonzero(step >= s.level_step)
    if changed.size:
        at = points[changed]
        ending, starting = (_window_levels(level_db, np.clip(start, 0, last), window)
                            for start in (at - window + 1, at))
        around = min(2 * second, hops)
        near = _window_levels(level_db, np.clip(at - around // 2, 0, hops - around), around)
        levels[changed] = np.where(np.abs(ending - near) <= np.abs(starting - near), ending, starting)
    lowest = min(peak, max(peak - s.level_follow, floor + _GATE_OVER_FLOOR + _GATE_UNDER_LOUD))
    return np.maximum(np.interp(np.arange(hops), points, levels), lowest)


def _relative(value: np.ndarray, voiced: np.ndarray, span: float,
              bounds: tuple[float, float] = (-np.inf, np.inf)) -> np.ndarray:
    """-1..1: a feature against the speaker's own median over voiced hops, kept within
    ``bounds`` (0 where unknown)."""
    known = voiced & np.isfinite(value)
    reference = float(np.clip(np.median(value[known]), *bounds)) if known.any() else 0.0
    return np.nan_to_num(np.tanh((value - reference) / span))


def frame_hops(starts: np.ndarray, duration: float, hops: int) -> tuple[np.ndarray, np.ndarray]:
    """Per video frame shown from ``starts`` (seconds) for ``duration``: the hops [lo, hi)
    whose centres (hop j at j / FEATURE_RATE s) fall inside that interval, within 0..``hops``.

    One rule for every per-frame figure, so frames tile the hops: at 25 fps each frame has
    exactly 4, at 30 fps 3 or 4, and no hop falls in two frames. A boundary that lies on a
    hop's centre (25 fps: every one) is rounded before it is compared, so float error in
    ``i / fps`` never widens one frame by a hop and not its neighbour. A frame shorter than
    a hop (over 100 fps) gets the hop nearest its middle.
    """
    start = np.round(np.asarray(starts, np.float64) * FEATURE_RATE, 6)
    end = np.round(start + duration * FEATURE_RATE, 6)
    lo, hi = np.ceil(start), np.ceil(end)
    empty = hi <= lo
    lo[empty] = np.round((start[empty] + end[empty]) / 2)
    hi[empty] = lo[empty] + 1
    return np.clip(lo, 0, hops).astype(np.int64), np.clip(hi, 0, hops).astype(np.int64)


def mouth_track(features: HopFeatures, fps: float, frame_count: int,
                settings: MouthSettings = MouthSettings()) -> MouthTrack:
    """Per-frame viseme values for ``frame_count`` output frames at ``fps``."""
    s = settings
    if len(features) == 0 or frame_count == 0:
        return MouthTrack.at_rest(frame_count, fps)
    level_db = 10.0 * np.log10(np.maximum(features.energy, 1e-12))
    peak = float(np.percentile(level_db, 98))
    if peak < s.silence_level:
        return MouthTrack.at_rest(frame_count, fps)  # nothing but silence or hum: the template's own mouth
    floor = float(np.percentile(level_db, 10))
    loud = _loud_level(level_db, peak, floor, s)  # per hop: the loud level around it
    # the gate sits above the noise floor, but never within 20 dB of the loud level: a clip
    # of uninterrupted speech has no pauses to measure the floor in
    gate = np.maximum(np.minimum(floor + _GATE_OVER_FLOOR, loud - _GATE_UNDER_LOUD), loud - s.gate_below_peak)
    bottom = np.maximum(gate, loud - s.dynamic_range)
    # float32 like level_db, so a recording of one loud level gives what one number did
    speaking = level_db > gate.astype(np.float32)
    span = np.maximum(loud - bottom, 1.0).astype(np.float32)
    level = np.clip((level_db - bottom.astype(np.float32)) / span, 0.0, 1.0) ** s.curve

    # the vowel: formant balances relative to this speaker, only where there is a voice to
    # judge (elsewhere they are noise), held smoothly through consonants
    voiced = level > 0.3
    weight = np.minimum(1.0, level * 2.0)
    # The vowel triangle: the first formant says how open (/a/ high, /i/ /u/ low), the
    # second how spread (/i/ high) or rounded (/u/ low); rounded and close together push
    # the lips forward. Formants are found only where there is a voice to find them in.
    f1 = np.full(len(features), np.nan)
    f2 = np.full(len(features), np.nan)
    if voiced.any():
        f1[voiced], f2[voiced] = formants(features.autocorr[voiced])
    span = s.vowel_span_octaves
    # F1 is a physical measure of the jaw (250-850 Hz in adults), so its reference is kept
    # near a mid vowel's even for a speaker who says little but "oo" and "ee"; F2's is the
    # speaker's own (it scales with the vocal tract)
    openish = _relative(np.log2(f1), voiced, span, (np.log2(420.0), np.log2(600.0))) * weight
    spreadish = _relative(np.log2(f2), voiced, span) * weight
    # Formants of recorded speech jump from hop to hop (reverberation, a formant taken for
    # its neighbour); over 0.1 s the vowel still shows, its noise much less: on the tune
    # voices, AV sync on the painted face rose 0.02-0.04 with the vowel shapes kept (0.05 s before).
    # The average is over the voiced hops, each as loud as it counts: a consonant or a pause
    # has no vowel, and taken as a neutral one it diluted every short vowel between two
    # consonants (formant-synthesised "bu bu bu" kept 0.74 of a long /u/'s rounding; German
    # "und": /U/ opened 0.53 as far as /a/ on the painted face), so the smoothed cue is
    # divided by the smoothed weight.
    # (one window for the cues and the weight: the division needs them averaged alike)
    def over_vowel(x: np.ndarray) -> np.ndarray:
        return _smooth_attack_release(x.astype(np.float32), 0.1, 0.1)

    evidence = over_vowel(weight) + np.float32(s.vowel_evidence)
    openish, spreadish = over_vowel(openish) / evidence, over_vowel(spreadish) / evidence
    hop_open = _smooth_attack_release(level, s.attack, s.release)
    hop_protrude = np.clip(-spreadish, 0.0, 1.0) * np.clip(1.0 - openish, 0.0, 1.0) * np.minimum(1.0, hop_open * 3.0)
    # rounded lips leave a small opening however loud the vowel
    vowel = 1.0 + np.where(openish > 0, s.vowel_open, s.vowel_close) * openish
    hop_open = np.clip(hop_open * vowel * (1.0 - 0.5 * hop_protrude), 0.0, 1.0)

    # speaking, with short pauses bridged: between two words the mouth stays "in speech"
    # rather than snapping back to the template's own expression
    bridge = max(1, int(round(2 * s.rest_after * FEATURE_RATE)) + 1)
    active = _moving_max(speaking.astype(np.float32), bridge)
    hop_active = _smooth_attack_release(active, 0.05, 0.15)

    # average the hops inside each frame's display interval, shifted earlier by the lead
    n = len(features)
    shown = np.arange(frame_count) / fps
    lo, hi = frame_hops(shown + s.lead, 1.0 / fps, n)
    width = np.maximum(hi - lo, 1)

    def per_frame(hops: np.ndarray) -> np.ndarray:
        cum = np.concatenate([[0.0], np.cumsum(hops, dtype=np.float64)])
        return ((cum[hi] - cum[lo]) / width).astype(np.float32)

    openness, spread = per_frame(hop_open), per_frame(spreadish)
    protrusion, activity = per_frame(hop_protrude), per_frame(hop_active)
    # a closure seals the lips for the video frame it falls in: at 25 fps a dip of 50-100 ms
    # would otherwise be averaged away. The frame is the one *showing* the dip, without the
    # lead: the silence of a /p b m/ is the lips closed, not a gesture ahead of the sound
    # (with the lead, half of all closures fell a frame early, on the vowel before them)
    closures = _closures(level_db, speaking, s)
    if closures.size:
        first, after = frame_hops(shown, 1.0 / fps, n)
        hit = np.searchsorted(closures, first, side="left") < np.searchsorted(closures, after, side="left")
        openness[hit] *= s.closure_keep
        protrusion[hit] *= s.closure_keep
    return MouthTrack(np.clip(openness, 0.0, 1.0), np.clip(spread, -1.0, 1.0), np.clip(protrusion, 0.0, 1.0),
                      np.clip(activity, 0.0, 1.0), fps)


def mouth_track_from_samples(samples: np.ndarray, fps: float, frame_count: int,
                             settings: MouthSettings = MouthSettings()) -> MouthTrack:
    """Mouth track of 16 kHz mono float samples (-1..1)."""
    features = MouthFeatures()
    features.feed(samples)
    return mouth_track(features.finish(), fps, frame_count, settings)


def mouth_track_from_file(path: Path, fps: float, frame_count: int,
                          settings: MouthSettings = MouthSettings()) -> MouthTrack:
    """Mouth track of any audio the pipeline accepts, decoded and resampled block by block."""
    from lipsync.media.audio import iter_audio  # PyAV on use: the mouth model itself is pure numpy

    features = MouthFeatures()
    for block in iter_audio(Path(path), rate=RATE):
        features.feed(block)
    return mouth_track(features.finish(), fps, frame_count, settings)

"""The mel features the Wav2Lip generator was trained on, and which window each frame sees.

The network only works with features computed exactly as in training: 16 kHz audio,
pre-emphasis 0.97, a centred STFT (n_fft 800, hop 200 → 80 columns per second) with
*reflect* padding at both ends, an 80-band Slaney mel filterbank from 55 Hz to 7600 Hz,
magnitude in dB (floor 1e-5) minus 20 dB, mapped from [-100, 0] dB to [-4, 4] and clipped.
librosa ≥ 0.10 pads with zeros by default; the padding is done here explicitly, so the
first and last columns match what the network saw.

Video frame ``i`` at ``fps`` uses the 16 columns starting at ``int(i * (80 / fps))``;
near the end of the audio the window is held at the last 16 columns.

Columns are computed on demand for the frames being rendered (:class:`MelWindows`), so
memory does not grow with the length of the audio beyond the waveform itself.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
MEL_BANDS = 80
MEL_WINDOW = 16
COLUMNS_PER_SECOND = SAMPLE_RATE / HOP  # 80
PREEMPHASIS = 0.97
_FMIN, _FMAX = 55.0, 7600.0
_AMP_FLOOR = 1e-5  # -100 dB
_REF_DB = 20.0
_MIN_DB = -100.0
_MAX_ABS = 4.0
_BLOCK_COLUMNS = 4096  # bounds the STFT's temporary memory (~13 MB per block)
_SILENT = -_MAX_ABS  # the feature value of digital silence


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=MEL_BANDS, fmin=_FMIN, fmax=_FMAX)


def prepare() -> None:
    """Pay librosa's one-time costs (lazy imports, compiled kernels: seconds) now, not in a job."""
    mel_columns(np.zeros(N_FFT * 2, np.float32), 0, 1)


def column_count(samples: int) -> int:
    """Mel columns of a waveform of ``samples`` samples (a centred STFT: one per hop, plus one)."""
    return 1 + samples // HOP


def _reflect(index: np.ndarray, length: int) -> np.ndarray:
    """Map indices outside [0, length) back inside by mirror reflection (no edge repeat)."""
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def _preemphasized(wav: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``y[n] = x[n] - 0.97 x[n-1]`` (``y[0] = x[0]``) at the given sample indices."""
    current = wav[index].astype(np.float64)
    previous = np.where(index > 0, wav[np.maximum(index - 1, 0)], 0.0)
    return (current - PREEMPHASIS * previous).astype(np.float32)


def _columns(wav: np.ndarray, first: int, stop: int) -> np.ndarray:
    """Columns ``first`` .. ``stop - 1`` of the spectrogram (80, stop - first), one STFT call."""
    # column t is centred on sample t*HOP: it covers samples t*HOP - N_FFT/2 .. + N_FFT/2
    index = np.arange(first * HOP - N_FFT // 2, (stop - 1) * HOP + N_FFT // 2)
    segment = _preemphasized(wav, _reflect(index, len(wav)))
    spectrum = np.abs(librosa.stft(segment, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, center=False))
    mel = _mel_basis() @ spectrum
    db = 20.0 * np.log10(np.maximum(_AMP_FLOOR, mel)) - _REF_DB
    scaled = 2 * _MAX_ABS * (db - _MIN_DB) / -_MIN_DB - _MAX_ABS
    return np.clip(scaled, -_MAX_ABS, _MAX_ABS).astype(np.float32)


def _as_waveform(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {wav.shape}")
    if len(wav) < 2:  # reflection needs two samples; a blip this short is silence anyway
        wav = np.pad(wav, (0, 2 - len(wav)))
    return wav


def mel_columns(wav: np.ndarray, first: int, stop: int) -> np.ndarray:
    """Mel columns ``first`` .. ``stop - 1`` of 16 kHz mono ``wav``, as (80, stop - first) float32."""
    wav = _as_waveform(wav)
    total = column_count(len(wav))
    if not 0 <= first <= stop <= total:
        raise ValueError(f"columns {first}..{stop} outside 0..{total}")
    blocks = [_columns(wav, c, min(c + _BLOCK_COLUMNS, stop)) for c in range(first, stop, _BLOCK_COLUMNS)]
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((MEL_BANDS, 0), np.float32)


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """The whole (80, column_count) feature matrix of 16 kHz mono ``wav``."""
    wav = _as_waveform(wav)
    return mel_columns(wav, 0, column_count(len(wav)))


def window_starts(frames: np.ndarray, fps: float, columns: int) -> np.ndarray:
    """First mel column of each video frame's 16-column window, held inside the audio."""
    frames = np.asarray(frames, dtype=np.int64)
    # the multiplier is rounded to a double first, as in training: i * (80 / fps), truncated
    starts = np.floor(frames.astype(np.float64) * (COLUMNS_PER_SECOND / fps)).astype(np.int64)
    return np.clip(starts, 0, max(0, columns - MEL_WINDOW))


class MelWindows:
    """The (1, 80, 16) feature window of any output frame, computed when asked for."""

    def __init__(self, wav: np.ndarray, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.wav = _as_waveform(wav)
        self.fps = float(fps)
        self.columns = column_count(len(self.wav))

    def windows(self, frames: np.ndarray) -> np.ndarray:
        """(T, 1, 80, 16) float32 for the given output frame numbers (consecutive or not)."""
        frames = np.asarray(frames, dtype=np.int64)
        if frames.size == 0:
            return np.zeros((0, 1, MEL_BANDS, MEL_WINDOW), np.float32)
        starts = window_starts(frames, self.fps, self.columns)
        first, stop = int(starts.min()), min(self.columns, int(starts.max()) + MEL_WINDOW)
        block = mel_columns(self.wav, first, stop)
        needed = int(starts.max()) - first + MEL_WINDOW
        if block.shape[1] < needed:
            # audio shorter than one window (0.2 s): what follows the sound is silence
            block = np.pad(block, ((0, 0), (0, needed - block.shape[1])), constant_values=_SILENT)
        offsets = (starts - first)[:, None] + np.arange(MEL_WINDOW)[None, :]
        return np.ascontiguousarray(block[:, offsets].transpose(1, 0, 2)[:, None])

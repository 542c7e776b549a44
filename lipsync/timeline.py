"""Which template frame each output frame shows.

The output always covers the whole audio, so it is usually longer or shorter than the
template. A shorter output simply uses the template's first frames (the template is
trimmed). A longer one plays the template forward and backward, ping-pong: 0, 1, ..., N-1,
N-2, ..., 1, 0, 1, ... The turning frames are not repeated, so the motion never stalls,
and there is no jump cut as a loop would have. A still image is frame 0 throughout.
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("pingpong", "loop")


def output_frame_count(audio_seconds: float, fps: float) -> int:
    """Frames needed to cover ``audio_seconds`` at ``fps``: rounded up, at least one."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    # a hair of tolerance: 2.0 s * 25 fps computed as 50.000000000001 is 50 frames, not 51
    return max(1, math.ceil(audio_seconds * fps - 1e-6))


def template_index(i: int, n_template_frames: int, mode: str = "pingpong") -> int:
    """Template frame shown at output frame ``i``."""
    if i < 0:
        raise ValueError(f"output frame {i} is negative")
    n = _check(n_template_frames, mode)
    if n == 1:
        return 0
    if mode == "loop":
        return i % n
    period = 2 * (n - 1)
    k = i % period
    return k if k < n else period - k


def template_indices(out_indices: np.ndarray, n_template_frames: int, mode: str = "pingpong") -> np.ndarray:
    """:func:`template_index` for an array of output frame numbers (int64 result)."""
    i = np.asarray(out_indices, dtype=np.int64)
    if i.size and i.min() < 0:
        raise ValueError("output frame numbers must not be negative")
    n = _check(n_template_frames, mode)
    if n == 1:
        return np.zeros_like(i)
    if mode == "loop":
        return i % n
    period = 2 * (n - 1)
    k = i % period
    return np.where(k < n, k, period - k)


def _check(n: int, mode: str) -> int:
    if mode not in MODES:
        raise ValueError(f"unknown timeline mode {mode!r}; use one of {', '.join(MODES)}")
    if n < 1:
        raise ValueError(f"a template has at least one frame, got {n}")
    return int(n)

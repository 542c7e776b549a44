"""Temporal smoothing of landmark trajectories with the One-Euro filter.

The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) is a low-pass filter whose cutoff
rises with speed: still faces get heavy smoothing (no jitter on the mouth), moving faces
little (no lag). Two choices specific to faces:

* one cutoff per frame for all 68 points, driven by the speed of the whole face, so every
  point is smoothed alike and the face keeps its shape while it moves;
* coordinates are divided by the face size first, so the same settings suit a face of
  80 px and one of 800 px.

Templates are analysed offline, so the filter runs forward and then backward over each
run of frames with a face; the second pass cancels the lag of the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroSettings:
    min_cutoff: float = 1.5  # Hz: cutoff for a still face (lower = smoother)
    beta: float = 4.0  # cutoff increase per face-size/second of speed (higher = less lag)
    d_cutoff: float = 2.0  # Hz: cutoff of the speed estimate


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters a stream of arrays of one shape, sampled at ``rate`` Hz."""

    def __init__(self, rate: float, settings: OneEuroSettings = OneEuroSettings()):
        self.dt = 1.0 / rate
        self.settings = settings
        self._x: np.ndarray | None = None
        self._dx = 0.0

    def reset(self) -> None:
        self._x = None
        self._dx = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x = x.copy()
            return x.copy()
        s = self.settings
        speed = float(np.mean(np.abs(x - self._x))) / self.dt
        a_d = _alpha(s.d_cutoff, self.dt)
        self._dx = a_d * speed + (1.0 - a_d) * self._dx
        a = _alpha(s.min_cutoff + s.beta * self._dx, self.dt)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in ``mask``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _face_size(points: np.ndarray) -> float:
    """Median over frames of the landmark bounding-box diagonal, in pixels."""
    span = points.max(axis=1) - points.min(axis=1)
    return float(np.median(np.hypot(span[:, 0], span[:, 1])))


def smooth_landmarks(landmarks: np.ndarray, valid: np.ndarray, fps: float,
                     settings: OneEuroSettings = OneEuroSettings()) -> np.ndarray:
    """Smoothed copy of ``landmarks`` (N, K, 2); frames where ``valid`` is False are left as
    they are, and each run of valid frames is filtered on its own (a cut or a lost face
    restarts the filter)."""
    out = np.array(landmarks, dtype=np.float32, copy=True)
    for start, stop in _runs(np.asarray(valid, bool)):
        if stop - start < 3:
            continue
        run = out[start:stop].astype(np.float64)
        scale = max(_face_size(run), 1.0)
        run /= scale
        forward = OneEuroFilter(fps, settings)
        run = np.stack([forward(p) for p in run])
        backward = OneEuroFilter(fps, settings)
        run = np.stack([backward(p) for p in run[::-1]])[::-1]
        out[start:stop] = (run * scale).astype(np.float32)
    return out

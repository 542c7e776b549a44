"""Follows one face through a sequence of frames: detect now and then, track in between.

Running the HOG detector on every full-resolution frame is the slow part of landmarking
(about 35 ms a full 720p frame, 12 ms at the 640 pixels it runs at, against 0.3-0.6 ms for
the shape predictor). So the detector runs on a downscaled copy, only every
``detect_interval`` frames or when the track is lost; in between, the predictor is seeded
with a box derived from the previous frame's landmarks.

A tracked shape is only trusted when the face still looks like the face seen at the last
detection (normalised correlation of a small patch over brows, eyes, nose and mouth): the
predictor always returns 68 points, even on a hand or a grey card held over the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lipsync.face.landmarks import Box, LandmarkModels, pick_face
from lipsync.media.color import rgb_to_gray

_PATCH = 24  # side of the appearance patch compared between frames
_INNER_FACE = slice(17, 68)  # brows, nose, eyes, mouth: stable under expression changes


@dataclass(frozen=True)
class TrackerSettings:
    detect_interval: int = 8  # frames between scheduled detections while tracking
    detect_long_side: int = 640  # detector input size; the HOG detector finds faces >= ~80 px there
    min_similarity: float = 0.5  # patch correlation below which a tracked face counts as lost


def to_gray(frame: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luma of an (H, W, 3) uint8 RGB frame; a (H, W) frame is luma already."""
    return frame if frame.ndim == 2 else rgb_to_gray(frame)


def _bbox(points: np.ndarray) -> Box:
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _appearance(gray: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """Zero-mean, unit-norm patch of the inner face, or None when it is (nearly) flat."""
    h, w = gray.shape
    x0, y0, x1, y1 = _bbox(points[_INNER_FACE])
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(w, int(np.ceil(x1)) + 1), min(h, int(np.ceil(y1)) + 1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    patch = np.asarray(Image.fromarray(gray[y0:y1, x0:x1]).resize((_PATCH, _PATCH), Image.BILINEAR), np.float32)
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    if norm < 2.0 * _PATCH:  # std below ~2 grey levels: a flat cover, not a face
        return None
    return patch / norm


class FaceTracker:
    """Feed frames in order with :meth:`update` (RGB, or their luma: all it looks at); each
    call returns (68, 2) landmarks or None."""

    def __init__(self, models: LandmarkModels, settings: TrackerSettings = TrackerSettings()):
        self.models = models
        self.settings = settings
        self.detections = 0  # detector runs, for the curious (tests, benchmarks)
        self._points: np.ndarray | None = None  # last accepted landmarks
        self._reference: np.ndarray | None = None  # appearance patch at the last detection
        self._box_relation = (0.0, 0.0, 0.0, 0.0)  # detector box relative to the landmarks' bbox
        self._since_detection = 0

    def update(self, frame: np.ndarray) -> np.ndarray | None:
        gray = to_gray(frame)
        self._since_detection += 1
        following = self._points is not None
        if following and self._since_detection < self.settings.detect_interval:
            tracked = self._track(gray)
            if tracked is not None:
                return self._accept(tracked)
            following = False  # lost: only the detector can find it again
        detected = self._detect(gray)
        if detected is not None:
            return self._accept(detected)
        # a scheduled detection missed a face the tracker still follows well: track it now
        # (a failed detection leaves what tracking uses as it was), not before every
        # detection, which would cost a prediction each time for nothing
        tracked = self._track(gray) if following else None
        if tracked is not None:
            return self._accept(tracked)
        self._points = None
        return None

    def _accept(self, points: np.ndarray) -> np.ndarray:
        self._points = points
        return points

    def _track(self, gray: np.ndarray) -> np.ndarray | None:
        points = self.models.predict(gray, self._box_from(self._points))
        if self._reference is None:
            return None
        patch = _appearance(gray, points)
        if patch is None or float(np.sum(patch * self._reference)) < self.settings.min_similarity:
            return None
        return points

    def _detect(self, gray: np.ndarray) -> np.ndarray | None:
        h, w = gray.shape
        scale = min(1.0, self.settings.detect_long_side / max(h, w))
        small = gray
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(gray).resize(size, Image.BILINEAR))
        # small inputs: let dlib upsample once so faces of ~40 px are still found
        upsample = 1 if max(small.shape) < 400 else 0
        found = [d.scaled(1 / scale) for d in self.models.detect(small, upsample)]
        self._since_detection = 0
        self.detections += 1
        # the most confident face, then the same one: a decoy (a badge, a poster) never takes over
        chosen = pick_face(found, self._box_from(self._points) if self._points is not None else None)
        if chosen is None:
            return None
        box = chosen.box
        points = self.models.predict(gray, box)
        patch = _appearance(gray, points)
        if patch is None:
            return None
        self._reference = patch
        lx0, ly0, lx1, ly1 = _bbox(points)
        lw, lh = max(lx1 - lx0, 1.0), max(ly1 - ly0, 1.0)
        self._box_relation = ((box[0] - lx0) / lw, (box[1] - ly0) / lh, (box[2] - lx1) / lw, (box[3] - ly1) / lh)
        return points

    def _box_from(self, points: np.ndarray) -> Box:
        """The box the detector would likely draw around a face with these landmarks."""
        lx0, ly0, lx1, ly1 = _bbox(points)
        lw, lh = lx1 - lx0, ly1 - ly0
        r = self._box_relation
        return lx0 + r[0] * lw, ly0 + r[1] * lh, lx1 + r[2] * lw, ly1 + r[3] * lh

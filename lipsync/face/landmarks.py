"""The offline landmark models: dlib's HOG face detector and its 68-point shape predictor.

Both ship inside PyPI packages (``dlib-bin`` and ``face_recognition_models``), so nothing is
downloaded at run time. The predictor file is located on disk directly: importing
``face_recognition_models`` itself would need ``pkg_resources``, which recent setuptools
no longer provides.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync.errors import EngineUnavailableError

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


@dataclass(eq=False)
class LandmarkModels:
    """A loaded detector + predictor. Calls are serialised: one instance is shared by every
    engine and job of a process, and dlib makes no promise about concurrent calls."""

    detector: object
    predictor: object
    path: Path

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def detect(self, gray: np.ndarray, upsample: int = 0) -> list[Box]:
        """Face boxes in ``gray`` (H, W) uint8, largest first."""
        with self._lock:
            rects = self.detector(np.ascontiguousarray(gray), upsample)
        boxes = [(float(r.left()), float(r.top()), float(r.right()), float(r.bottom())) for r in rects]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def predict(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """The 68 landmarks (68, 2) float32 of the face in ``box``."""
        import dlib  # imported on use: loading the models (above) already needed it

        rect = dlib.rectangle(*(int(round(v)) for v in box))
        with self._lock:
            shape = self.predictor(np.ascontiguousarray(gray), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


_loaded: LandmarkModels | None = None
_load_lock = threading.Lock()


def load_landmark_models() -> LandmarkModels:
    """The process-wide detector + predictor, loaded on first use (about 100 MB, ~1 s)."""
    global _loaded
    with _load_lock:
        if _loaded is None:
            path = predictor_path()
            try:
                import dlib
            except ImportError as e:
                raise EngineUnavailableError(f"dlib is not installed ({e}); install it with: pip install dlib-bin") from None
            try:
                predictor = dlib.shape_predictor(str(path))
            except RuntimeError as e:
                raise EngineUnavailableError(f"cannot load the face landmark model: {e}", path=path) from None
            _loaded = LandmarkModels(dlib.get_frontal_face_detector(), predictor, path)
        return _loaded

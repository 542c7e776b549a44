"""The mouth as an independent face-landmark detector sees it, frame by frame.

    .venv-referee/bin/python bench/referee/mouth_referee.py VIDEO [VIDEO ...]

Runs in its own environment (``scripts/setup --referee``, made by ``scripts/test``):
MediaPipe's face mesh (478 points, a neural network that ships inside the ``mediapipe``
wheel) is a different family of detector from the dlib HOG detector and 68-point shape
predictor that drive lipsyncd's engines, so a render cannot score well merely by moving
the points its own landmark model looks at. ``mediapipe`` 0.10.21 is the last release
with these models and pins ``numpy<2``; lipsyncd itself runs on numpy 2, so the two
never share a virtual environment: this script reads the video itself (PyAV) and prints
JSON on stdout, one object per video::

    {"path": ..., "frames": N, "gap": [...], "width": [...], "face": [...]}

* ``gap``: inner-lip opening (mean of three vertical inner-lip distances) over the mouth
  width, corner to corner (outer corners 61 and 291); null where no face was found;
* ``width``: mouth width over the distance between the outer eye corners (33, 263), so
  it measures the lips spreading or rounding and not the head moving nearer;
* ``face``: whether a face was found.

Nothing here imports lipsyncd.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: warnings and worse only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import av  # noqa: E402
import numpy as np  # noqa: E402

# Face-mesh indices: pairs across the inner lips (left of centre, centre, right of centre),
# the outer mouth corners and the outer eye corners.
INNER_PAIRS = ((82, 87), (13, 14), (312, 317))
MOUTH_CORNERS = (61, 291)
EYE_CORNERS = (33, 263)


def measure(path: str) -> dict:
    import mediapipe as mp

    gaps: list[float | None] = []
    widths: list[float | None] = []
    # tracking mode (static_image_mode False): the mesh of one frame seeds the next, as it
    # would for any video; refine_landmarks adds the iris model, which nothing here needs
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                                         min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh, \
            av.open(path) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            found = mesh.process(rgb).multi_face_landmarks
            if not found:
                gaps.append(None)
                widths.append(None)
                continue
            pts = np.array([(p.x * w, p.y * h) for p in found[0].landmark], np.float64)
            mouth_w = float(np.linalg.norm(pts[MOUTH_CORNERS[0]] - pts[MOUTH_CORNERS[1]]))
            eyes_w = float(np.linalg.norm(pts[EYE_CORNERS[0]] - pts[EYE_CORNERS[1]]))
            gap = float(np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in INNER_PAIRS]))
            gaps.append(gap / max(mouth_w, 1e-6))
            widths.append(mouth_w / max(eyes_w, 1e-6))
    return {"path": path, "frames": len(gaps), "gap": gaps, "width": widths, "face": [g is not None for g in gaps]}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for path in argv:
        try:
            result = measure(path)
        except (OSError, av.error.FFmpegError) as e:  # one bad file is reported, the rest still measured
            result = {"path": path, "error": str(e)}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

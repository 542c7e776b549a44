"""Where the face is in every frame of a video, for reframing: small faces included.

A crop that follows a presenter must first find them. Faces down to 5 % of the frame's
width are found -- a 96 px face in 1080p, 192 px in 4K -- where a detector run on a frame
shrunk to a few hundred pixels sees nothing under ~280 px:

* while no face is followed, the whole frame is searched at SEARCH_LONG_SIDE pixels with
  the detector's image upsampled once (about 150 ms a frame), at most once per
  LOST_SEARCH_SECONDS of video;
* once one is found, every DETECT_EVERY frames only the region around it is searched,
  scaled so that the face is about TRACK_FACE_PX wide (about 15 ms);
* the face kept is chosen by confidence and continuity
  (:func:`lipsync.face.landmarks.pick_face`): a poster or a badge does not take over.

Frames between detections are interpolated; frames before the first and after the last
detection hold the nearest one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lipsync.cachefile import write_npz
from lipsync.engine import TemplateInfo
from lipsync.errors import MediaError
from lipsync.face.landmarks import Box, Detection, LandmarkModels, landmark_models_in_use, pick_face
from lipsync.media.color import rgb_to_gray

log = logging.getLogger(__name__)

DETECT_EVERY = 5  # frames between detections while a face is followed
SEARCH_LONG_SIDE = 960  # the whole-frame search, upsampled once: faces >= ~5 % of the width
TRACK_FACE_PX = 120  # the face's width in the region searched around it
TRACK_REGION = 3.0  # the region searched: the face box grown this many times
LOST_SEARCH_SECONDS = 1.0  # whole-frame searches while no face is followed: at most one per this
# Bump when following changes what a path contains: old cache files are ignored.
PATH_VERSION = 1


@dataclass(frozen=True)
class FacePath:
    """The face of every frame: centres (N, 2) and sizes (N, 2) (width, height), NaN where
    it is unknown; ``found`` says in how many frames a detection was made."""

    centres: np.ndarray
    sizes: np.ndarray
    found: int
    searched: int

    @property
    def any(self) -> bool:
        return self.found > 0

    def take(self, indices: np.ndarray) -> FacePath:
        """The path of a video whose frame i is frame ``indices[i]`` of this one (a render's
        frames are its template's, played forward and back)."""
        at = np.minimum(np.asarray(indices, np.int64), len(self.centres) - 1)
        return FacePath(self.centres[at], self.sizes[at], self.found, self.searched)


def follow_face(frames: Iterable[np.ndarray], fps: float, models: LandmarkModels | None = None) -> FacePath:
    """The :class:`FacePath` of ``frames`` ((H, W, 3) uint8 RGB, in order)."""
    followed: Box | None = None
    last_full = -1e9
    at, boxes = [], []
    n = searched = 0
    with landmark_models_in_use(models) as in_use:
        for i, frame in enumerate(frames):
            n = i + 1
            if i % DETECT_EVERY:
                continue
            gray = rgb_to_gray(frame)
            chosen = None
            if followed is not None:
                chosen = pick_face(_search_around(in_use, gray, followed), followed)
                searched += 1
            if chosen is None and (followed is not None or i - last_full >= LOST_SEARCH_SECONDS * fps):
                chosen = pick_face(_search_whole(in_use, gray), followed)
                last_full = i
                searched += 1
            followed = chosen.box if chosen is not None else None
            if chosen is not None:
                at.append(i)
                boxes.append(chosen.box)
    centres = np.full((n, 2), np.nan)
    sizes = np.full((n, 2), np.nan)
    if at:
        b = np.array(boxes)
        idx = np.arange(n)
        for k, column in enumerate(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)):
            centres[:, k] = _between(idx, at, column)
        for k, column in enumerate((b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])):
            sizes[:, k] = np.interp(idx, at, column)
    return FacePath(centres, sizes, len(at), searched)


def follow_template(template: TemplateInfo, cache_dir: Path | None = None, frames: int | None = None) -> FacePath:
    """The :class:`FacePath` of the first ``frames`` frames of ``template`` (all of them by
    default; a short render of a long template needs its start only), from the cache folder
    when this exact file was followed that far before (a presenter template is reused job
    after job)."""
    import itertools

    from lipsync.face.analysis import file_digest  # here: it loads the tracker, which following does not need
    from lipsync.media.template import TemplateReader

    want = template.frame_count if frames is None else max(1, min(int(frames), template.frame_count))
    cached_at = None
    if cache_dir is not None:
        try:
            digest = file_digest(Path(template.path))
        except OSError as e:
            raise MediaError(f"cannot read the template: {e.strerror or e}", path=Path(template.path)) from None
        cached_at = Path(cache_dir) / f"{digest}.facepath-v{PATH_VERSION}.npz"
        try:
            with np.load(cached_at, allow_pickle=False) as z:
                # followed as far as asked (a file that decodes short gives fewer frames)
                if int(z["version"]) == PATH_VERSION and z["centres"].shape == z["sizes"].shape \
                        and len(z["centres"]) and int(z["asked"]) >= want:
                    return FacePath(z["centres"], z["sizes"], int(z["found"]), int(z["searched"]))
        except (OSError, KeyError, ValueError, EOFError):
            pass
    with TemplateReader(template) as reader:
        path = follow_face(itertools.islice(reader.iter_forward(), want), template.fps)
    if cached_at is not None:
        try:
            write_npz(cached_at, version=np.int64(PATH_VERSION), asked=np.int64(want), centres=path.centres,
                      sizes=path.sizes, found=np.int64(path.found), searched=np.int64(path.searched))
        except OSError as e:  # a read-only or full cache folder costs time on the next job, not this one
            log.warning("cannot cache the face path of %s in %s: %s", Path(template.path).name, cache_dir, e)
    return path


def _between(idx: np.ndarray, at: list[int], values: np.ndarray) -> np.ndarray:
    """``values`` detected at frames ``at``, interpolated; the frames after the last detection
    (fewer than DETECT_EVERY) go on at the speed of the last two, like the face did."""
    out = np.interp(idx, at, values)
    if len(at) >= 2 and at[-1] - at[-2] <= 2 * DETECT_EVERY:
        speed = (values[-1] - values[-2]) / (at[-1] - at[-2])
        tail = idx > at[-1]
        out[tail] = values[-1] + speed * np.minimum(idx[tail] - at[-1], DETECT_EVERY)
    return out


def _search_whole(models: LandmarkModels, gray: np.ndarray) -> list[Detection]:
    h, w = gray.shape
    scale = min(1.0, SEARCH_LONG_SIDE / max(h, w))
    small = gray if scale == 1.0 else np.asarray(
        Image.fromarray(gray).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
    return [d.scaled(1 / scale) for d in models.detect(small, 1)]


def _search_around(models: LandmarkModels, gray: np.ndarray, box: Box) -> list[Detection]:
    h, w = gray.shape
    bw, bh = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(bw, bh, 40.0) * TRACK_REGION / 2
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return []
    scale = TRACK_FACE_PX / max(bw, 1.0)
    region = Image.fromarray(gray[y0:y1, x0:x1])
    if abs(scale - 1.0) > 0.05:
        region = region.resize((max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))), Image.BILINEAR)
    return [d.scaled(1 / scale, x0, y0) for d in models.detect(np.asarray(region), 0)]

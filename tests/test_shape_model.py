"""The 68-point landmark model run by this package (lipsync.face.shape_model): dlib's own
landmarks on real faces, its converted copy kept for the next process, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lipsync.errors import EngineUnavailableError
from lipsync.face import landmarks as landmarks_module
from lipsync.face.landmarks import load_landmark_models, predictor_path
from lipsync.face.shape_model import ShapeModelFormatError, load_shape_model, read_shape_model
from lipsync.media.color import rgb_to_gray
from tests import media_factory as mf

REPO = Path(__file__).resolve().parent.parent
PAINTED = REPO / "tests" / "data" / "portraits" / "painted.jpg"
dlib = pytest.importorskip("dlib")


def real_faces() -> list[tuple[str, np.ndarray]]:
    """Grey images of real faces: the astronaut photograph, a few frames of it moving at
    720p (panned, zoomed, turned), and a painted portrait."""
    faces = [("astronaut", rgb_to_gray(mf.astronaut()))]
    painted = np.asarray(Image.open(PAINTED).convert("RGB"))
    faces.append(("painted", rgb_to_gray(painted)))
    base = Image.fromarray(mf.astronaut())
    for k, (angle, size) in enumerate(((-6.0, 300), (0.0, 420), (8.0, 360))):
        frame = Image.new("RGB", (1280, 720), (40, 60, 80))
        face = base.rotate(angle, resample=Image.BILINEAR).resize((size * 2, size * 2), Image.BILINEAR)
        frame.paste(face, (200 + 250 * k, 720 // 2 - size))
        faces.append((f"moving-{k}", rgb_to_gray(np.asarray(frame))))
    return [(name, np.ascontiguousarray(gray)) for name, gray in faces]


def boxes_around(box, shape) -> list[tuple[int, int, int, int]]:
    """The detector's box and others a tracker would give: shifted, grown, shrunk, and one
    reaching out of the image (whose feature pixels outside it read as 0, as in dlib)."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    height, width = shape
    out = [box]
    for dx, dy, grow in ((0.08, -0.05, 0.0), (-0.1, 0.07, 0.15), (0.03, 0.02, -0.12), (0.0, 0.0, 0.4)):
        out.append((int(left + dx * w - grow * w / 2), int(top + dy * h - grow * h / 2),
                    int(right + dx * w + grow * w / 2), int(bottom + dy * h + grow * h / 2)))
    out.append((width - w // 2, height - h // 2, width + w // 2, height + h // 2))  # the corner, mostly outside
    return out


def test_the_landmarks_are_dlibs_own_on_real_faces():
    ours = load_landmark_models()
    theirs = dlib.shape_predictor(str(predictor_path()))
    detector = dlib.get_frontal_face_detector()
    faces = real_faces()
    compared = 0
    for name, gray in faces:
        found = detector(gray, 1)
        assert found, f"no face found in {name}"
        r = found[0]
        for box in boxes_around((r.left(), r.top(), r.right(), r.bottom()), gray.shape):
            expected = np.array([(p.x, p.y) for p in theirs(gray, dlib.rectangle(*box)).parts()], np.float32)
            got = ours.predict(gray, box)
            assert got.shape == (68, 2) and got.dtype == np.float32
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}, box {box}")
            compared += 1
    assert compared == 5 * 6
    # and the points are a face's: the mouth under the nose, inside the detector's box
    gray = faces[0][1]
    r = detector(gray, 1)[0]
    points = ours.predict(gray, (r.left(), r.top(), r.right(), r.bottom()))
    assert points[51, 1] > points[33, 1] > points[27, 1]  # upper lip below the nose tip below the nose bridge
    assert r.left() <= points[48, 0] < points[54, 0] <= r.right()


def test_predictions_run_side_by_side_and_agree():
    """No lock around a prediction: threads predicting at once get what one thread gets."""
    models = load_landmark_models()
    faces = real_faces()
    boxes = [tuple(int(v) for v in models.detect(gray, 1)[0].box) for _, gray in faces]
    alone = [models.predict(gray, box) for (_, gray), box in zip(faces, boxes)]
    results: dict[int, list[np.ndarray]] = {}

    def predict_all(k: int) -> None:
        results[k] = [models.predict(gray, box) for _ in range(20) for (_, gray), box in zip(faces, boxes)]

    threads = [threading.Thread(target=predict_all, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == [0, 1, 2]
    for got in results.values():
        for k, points in enumerate(got):
            np.testing.assert_array_equal(points, alone[k % len(faces)])


def test_a_converted_copy_is_kept_reused_and_remade_when_damaged(tmp_path):
    source = predictor_path()
    first = load_shape_model(source, tmp_path)
    copies = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [p.name for p in copies] == [f"{source.stem}-{source.stat().st_size}-{source.stat().st_mtime_ns}-v1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    again = load_shape_model(source, tmp_path)
    assert isinstance(again.leaves, np.memmap)  # mapped from the copy, not parsed again
    for name in ("initial", "splits", "thresholds", "leaves", "anchors", "deltas"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    # a damaged copy (cut short) is noticed, and made again
    leaves = copies[0] / "leaves.npy"
    with open(leaves, "r+b") as f:
        f.truncate(leaves.stat().st_size // 2)
    mended = load_shape_model(source, tmp_path)
    np.testing.assert_array_equal(mended.leaves, first.leaves)
    assert isinstance(load_shape_model(source, tmp_path).leaves, np.memmap)
    assert leaves.stat().st_size > 60_000_000


def test_a_folder_that_cannot_be_written_costs_time_not_the_model(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model = load_shape_model(predictor_path(), blocker / "cache")
    assert not isinstance(model.leaves, np.memmap) and model.points == 68


def test_files_that_are_not_the_model_are_named_in_the_error(tmp_path):
    text = tmp_path / "notes.dat"
    text.write_text("shape predictor, honest\n" * 100)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(predictor_path().read_bytes()[:3_000_000])
    longer = tmp_path / "longer.dat"
    longer.write_bytes(predictor_path().read_bytes() + b"\x01\x00")
    for path in (text, cut, longer):
        with pytest.raises(ShapeModelFormatError) as err:
            read_shape_model(path)
        assert path.name in str(err.value)


def test_a_broken_model_file_makes_the_engine_unavailable_with_its_name(tmp_path, monkeypatch):
    broken = tmp_path / "shape_predictor_68_face_landmarks.dat"
    broken.write_bytes(b"\x01\x01" + b"\x00" * 1000)
    monkeypatch.setattr(landmarks_module, "predictor_path", lambda: broken)
    monkeypatch.setattr(landmarks_module, "_loaded", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    with pytest.raises(EngineUnavailableError) as err:
        load_landmark_models()
    assert "cannot load the face landmark model" in str(err.value) and broken.name in str(err.value)


def test_a_new_process_loads_both_models_from_their_copies(tmp_path):
    """The first process makes the copies in the user's cache folder; the next one reads
    neither the predictor's file nor dlib's built-in detector."""
    env = {k: v for k, v in os.environ.items() if k != "CACHE_DIRECTORY"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    probe = ("import dlib, sys\n"
             "from lipsync.face import shape_model, landmarks\n"
             "used = []\n"
             "if sys.argv[1] == 'second':\n"
             "    shape_model.read_shape_model = lambda *a: used.append('parsed the predictor')\n"
             "    dlib.get_frontal_face_detector = lambda *a: used.append('built the detector')\n"
             "m = landmarks.load_landmark_models()\n"
             "print(used, type(m.detector).__name__, m.predictor.points)\n")
    for which in ("first", "second"):
        run = subprocess.run([sys.executable, "-c", probe, which], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["[]", "fhog_object_detector", "68"], run.stdout
    kept = sorted(p.name for p in (tmp_path / "xdg" / "lipsyncd").iterdir() if not p.name.startswith("compiled-"))
    assert len(kept) == 2 and kept[0].startswith("frontal_face_detector-dlib") and kept[0].endswith(".svm")
    assert kept[1].startswith("shape_predictor_68_face_landmarks-")  # beside the compiled code (test_compiled.py)


def test_where_the_copies_go(tmp_path, monkeypatch):
    """systemd's cache directory first, then the XDG one, then the home's; without a home,
    none (the models load from their originals)."""
    from lipsync.cachefile import user_cache_folder

    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path / 'systemd'}:{tmp_path / 'other'}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_folder() == tmp_path / "systemd"
    monkeypatch.delenv("CACHE_DIRECTORY")
    assert user_cache_folder() == tmp_path / "xdg" / "lipsyncd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_folder() == tmp_path / "home" / ".cache" / "lipsyncd"

    def homeless() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(homeless))
    assert user_cache_folder() is None
    monkeypatch.setattr(landmarks_module, "_loaded", None)
    models = load_landmark_models()
    assert models.predictor.points == 68 and not isinstance(models.predictor.leaves, np.memmap)
    assert not (tmp_path / "home").exists()

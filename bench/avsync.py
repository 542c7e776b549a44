"""Measurements shared by the benchmarks: how well a render's mouth follows its audio, and
how much of the picture outside the mouth and jaw it changed.

* :func:`mouth_openings` re-runs landmark detection on the *output* frames and measures
  the inner-lip gap relative to the mouth width: what a viewer sees, not what the engine
  intended.
* :func:`audio_envelope` is the speech-band log energy of the audio per video frame.
* :func:`av_sync` correlates the two at lags of up to two frames either way and reports
  the best correlation and its lag (positive: the mouth moves after the sound).
* :func:`mouth_jaw_mask` is the region a lip-sync engine may change: from just under the
  nose to below the chin, cheek to cheek, from the template's 68 landmarks;
  :func:`masked_psnr` compares two renders outside it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lipsync.face.landmarks import LandmarkModels, load_landmark_models  # noqa: E402
from lipsync.face.tracking import to_gray  # noqa: E402
from lipsync.media.audio import load_mono  # noqa: E402


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video as (H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def lip_gap(points: np.ndarray) -> float:
    """Inner-lip opening over mouth width, from 68 landmarks."""
    gap = np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=1).mean()
    width = np.linalg.norm(points[54] - points[48])
    return float(gap / max(width, 1e-6))


def mouth_openings(frames: Iterable[np.ndarray], models: LandmarkModels | None = None,
                   detect_long_side: int = 640) -> np.ndarray:
    """Lip gap / mouth width of every frame, detected afresh in each (NaN: no face found)."""
    models = models or load_landmark_models()
    out = []
    for frame in frames:
        gray = to_gray(frame)
        h, w = gray.shape
        scale = min(1.0, detect_long_side / max(h, w))
        small = gray
        if scale < 1.0:
            from PIL import Image

            small = np.asarray(Image.fromarray(gray).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        boxes = models.detect(small, 1 if max(small.shape) < 400 else 0)
        if not boxes:
            out.append(np.nan)
            continue
        box = tuple(v / scale for v in boxes[0])
        out.append(lip_gap(models.predict(gray, box)))
    return np.array(out, np.float64)


def audio_envelope(audio: Path, fps: float, frames: int, band: tuple[float, float] = (300.0, 3400.0),
                   floor_db: float = 50.0) -> np.ndarray:
    """Speech-band energy (dB) of the audio during each video frame, floored ``floor_db``
    under the loudest frame so silence does not dominate the correlation."""
    rate = 16000
    samples = load_mono(audio, rate)
    per_frame = rate / fps
    energies = np.zeros(frames)
    for i in range(frames):
        a, b = int(round(i * per_frame)), int(round((i + 1) * per_frame))
        chunk = samples[a:b]
        if chunk.size < 16:
            continue
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(chunk.size))) ** 2
        freqs = np.fft.rfftfreq(chunk.size, 1.0 / rate)
        energies[i] = spectrum[(freqs >= band[0]) & (freqs <= band[1])].sum() / chunk.size
    db = 10.0 * np.log10(np.maximum(energies, 1e-12))
    return np.maximum(db, db.max() - floor_db)


def av_sync(opening: np.ndarray, envelope: np.ndarray, max_lag: int = 2) -> dict:
    """Pearson correlation of mouth opening and audio envelope at lags -max_lag..max_lag.

    Lag k compares opening[i + k] with envelope[i]: k > 0 means the mouth follows the sound
    k frames late, k < 0 that it leads. Frames without a detected face are left out.
    """
    n = min(len(opening), len(envelope))
    by_lag = {}
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            o, e = opening[lag:n], envelope[:n - lag]
        else:
            o, e = opening[:n + lag], envelope[-lag:n]
        ok = np.isfinite(o) & np.isfinite(e)
        if ok.sum() < 3 or np.std(o[ok]) == 0 or np.std(e[ok]) == 0:
            by_lag[lag] = float("nan")
        else:
            by_lag[lag] = float(np.corrcoef(o[ok], e[ok])[0, 1])
    finite = {k: v for k, v in by_lag.items() if math.isfinite(v)}
    best = max(finite, key=finite.get) if finite else 0
    return {"correlation": finite.get(best, float("nan")), "lag_frames": best,
            "by_lag": {str(k): round(v, 4) for k, v in by_lag.items()},
            "face_frames": int(np.isfinite(opening[:n]).sum()), "frames": n}


def mouth_jaw_mask(points: np.ndarray, height: int, width: int, margin: float = 16.0) -> np.ndarray:
    """(H, W) bool: the lower face a lip-sync engine may change, plus ``margin`` pixels.

    The convex hull of the jaw line (landmarks 2-14), the base of the nose (31-35) and the
    jaw line moved down by half a mouth width (the chin drops when the mouth opens),
    grown by ``margin`` (one 16-pixel macroblock by default: H.264 codes changed pixels
    together with their block).
    """
    from PIL import Image, ImageDraw
    from scipy.ndimage import distance_transform_edt
    from scipy.spatial import ConvexHull

    mouth_w = float(np.linalg.norm(points[54] - points[48]))
    jaw = points[2:15]
    chin_drop = jaw[2:11] + np.array([0.0, 0.5 * mouth_w])
    cloud = np.concatenate([jaw, points[31:36], chin_drop])
    hull = cloud[ConvexHull(cloud).vertices]
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in hull.tolist()], fill=1)
    inside = np.asarray(img, bool)
    if margin > 0:
        inside = distance_transform_edt(~inside) <= margin
    return inside


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, squared-error sum) of a vs b over pixels where ``mask`` is True."""
    diff = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    sq = float(np.sum(diff * diff))
    count = diff.size
    mse = sq / max(count, 1)
    return (float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)), sq

"""Measurements shared by the benchmarks: how well a render's mouth follows its audio, and
how much of the picture outside the mouth and jaw it changed.

* :func:`referee_mouths` re-detects the mouth on the *output* video with MediaPipe's face
  mesh (bench/referee/, in its own environment): what a viewer sees, not what the engine
  intended, judged by a landmark detector of a different family from the dlib model that
  drives the engines.
* :func:`audio_envelope` is the speech-band log energy of the audio per video frame.
* :func:`av_sync` correlates the two at lags of up to two frames either way and reports
  the best correlation and its lag (positive: the mouth moves after the sound).
* :func:`mouth_jaw_mask` is the region a lip-sync engine may change: from just under the
  nose to below the chin, cheek to cheek, from the template's 68 landmarks;
  :func:`masked_psnr` compares two renders outside it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lipsync.media.audio import load_mono  # noqa: E402


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video as (H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


REFEREE = ROOT / "bench" / "referee" / "mouth_referee.py"


def referee_python() -> Path | None:
    """The referee environment's Python (``scripts/setup --dev`` makes it), or None."""
    venv = Path(os.environ.get("LIPSYNCD_REFEREE_VENV", ROOT / ".venv-referee"))
    python = venv / "bin" / "python"
    return python if python.is_file() else None


@dataclass(frozen=True)
class RefereeMouths:
    """The mouth in every frame of a video, as MediaPipe's face mesh sees it (NaN: no face)."""

    gap: np.ndarray  # inner-lip opening / mouth width
    width: np.ndarray  # mouth width / outer-eye-corner distance

    @property
    def face_frames(self) -> int:
        return int(np.isfinite(self.gap).sum())


def referee_mouths(*videos: Path, timeout: float = 600.0) -> list[RefereeMouths]:
    """Measure the mouths of ``videos`` with the independent referee (bench/referee/).

    Raises RuntimeError when the referee is not installed or a video cannot be read.
    """
    python = referee_python()
    if python is None:
        raise RuntimeError("the quality referee is not installed: run scripts/setup --dev (makes .venv-referee)")
    done = subprocess.run([str(python), str(REFEREE), *map(str, videos)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(results) != len(videos):
        raise RuntimeError(f"the referee failed (exit {done.returncode}): {done.stderr[-2000:]}")
    out = []
    for r in results:
        if "error" in r:
            raise RuntimeError(f"the referee could not read {r['path']}: {r['error']}")
        as_array = lambda key: np.array([np.nan if x is None else x for x in r[key]], np.float64)  # noqa: E731
        out.append(RefereeMouths(as_array("gap"), as_array("width")))
    return out


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

"""A long recording whose level changes half-way: does the mouth move alike on both sides?

    python bench/level_change.py [--drop-db 20] [--out bench/results/level_change.json]

A recording made in two sessions, or with a speaker who moves away from the microphone,
changes level without the speaker speaking any differently. This bench renders the
``warp`` engine on the still portrait of the voice bench (``skimage.data.astronaut``) with
2 s of silence, then 30 s of real recorded speech (the tune voice ``en-musetalk``, over and
over), then the same 30 s ``--drop-db`` quieter, and has the referee (MediaPipe's face mesh,
bench/referee/, not the engine's landmark family) read the lips in every frame.

Per half it reports the mean and the 90th percentile of the opening beyond the mouth at
rest (read in the silence), over the half's last 22.5 s, and ``quiet_over_loud``: the
quiet half's mean opening over the loud half's. The same speech should move the mouth
alike (1.0; one loud level for the whole recording gave 0.42). ``transition_over_loud`` is
the same ratio for the quiet speech from 0.5 s to 7.5 s after the change, where a loud
level measured over the 15 s around each moment still holds loud speech (half a window).
Also the correlation of the opening with the speech envelope in each half, at lag 0.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.avsync import audio_envelope, av_sync, referee_mouths  # noqa: E402
from bench.figures import report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FPS = 25.0
LEAD_IN = 2.0  # seconds of silence: the mouth at rest
HALF = 30.0  # seconds of speech on each side of the change
TRANSITION = 7.5  # seconds after the change judged apart (half the engine's level window)
VOICE = ROOT / "tests" / "data" / "speech" / "en-musetalk.flac"


def level_change_audio(path: Path, drop_db: float) -> Path:
    from lipsync.media.audio import load_mono
    from tests.media_factory import write_wav

    voice = load_mono(VOICE, 16000)
    speech = np.tile(voice, int(np.ceil(HALF * 16000 / voice.size)))[:int(HALF * 16000)]
    quieter = speech * np.float32(10 ** (-drop_db / 20))
    samples = np.concatenate([np.zeros(int(LEAD_IN * 16000), np.float32), speech, quieter])
    return write_wav(path, np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16), 16000)


def half_figures(opening: np.ndarray, envelope: np.ndarray, rest: float) -> dict:
    beyond = opening - rest
    known = np.isfinite(beyond)
    return {"mean_opening": round(float(np.mean(beyond[known])), 4),
            "p90_opening": round(float(np.percentile(beyond[known], 90)), 4),
            "r_lag0": round(av_sync(opening, envelope, max_lag=0)["correlation"], 3),
            "face_frames": int(known.sum()), "frames": int(opening.size)}


def measure(work: Path, drop_db: float) -> dict:
    from PIL import Image
    from skimage import data

    from lipsync.engine import RenderOptions
    from lipsync.engines import create_engine
    from lipsync.render import render

    portrait = work / "portrait.png"
    Image.fromarray(data.astronaut()).save(portrait)
    audio = level_change_audio(work / "speech.wav", drop_db)
    out = work / "warp.mp4"
    options = RenderOptions(device="cpu", cache_dir=work / "cache")
    render(audio, portrait, out, engine=create_engine("warp", device="cpu"), options=options)
    (mouths,) = referee_mouths(out)
    gap = mouths.gap
    envelope = audio_envelope(audio, FPS, gap.size)
    at = lambda seconds: int(round(seconds * FPS))  # noqa: E731
    rest = float(np.nanmedian(gap[at(0.5):at(LEAD_IN)]))
    loud = slice(at(LEAD_IN + TRANSITION), at(LEAD_IN + HALF))
    quiet = slice(at(LEAD_IN + HALF + TRANSITION), at(LEAD_IN + 2 * HALF))
    figures = {"engine": "warp", "voice": VOICE.stem, "drop_db": drop_db, "rest_gap": round(rest, 4),
               "loud": half_figures(gap[loud], envelope[loud], rest),
               "quiet": half_figures(gap[quiet], envelope[quiet], rest),
               "measured_by": "MediaPipe face mesh 0.10.21 (bench/referee), re-detected on the encoded output"}
    figures["quiet_over_loud"] = round(figures["quiet"]["mean_opening"] / figures["loud"]["mean_opening"], 3)
    change = at(LEAD_IN + HALF)
    after = gap[change + at(0.5):change + at(TRANSITION)] - rest
    figures["transition_over_loud"] = round(float(np.nanmean(after)) / figures["loud"]["mean_opening"], 3)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drop-db", type=float, default=20.0, help="how much quieter the second half is")
    parser.add_argument("--out", type=Path, default=RESULTS / "level_change.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="level-change-"))
    try:
        figures = measure(work, args.drop_db)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(figures, args.out)


if __name__ == "__main__":
    main()

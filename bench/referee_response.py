"""How the referee reads the ``warp`` engine's drawn openings, template by template.

    python bench/referee_response.py [--out bench/results/referee_response.json]

The voice bench (bench/warp_voices.py) judges a render by what MediaPipe's face mesh reads
on it, and on the painted portrait every voice scores lower than on the two photographs.
This bench separates the reader from the speech: each of the voice bench's templates is
rendered with a mouth track *held* at openness 0, 0.1, ... 1 (``HOLD`` frames a step),
instead of one computed from audio -- neutral, rounded as for /u/, and spread as for /i/
-- and every frame is read by the referee. Per template and shape it reports:

* ``drawn``: the lip gap the engine draws at each step, mid-mouth, in mouth widths
  (openness x the full opening, which is a share of the face's width);
* ``read``: the referee's inner-lip gap over its mouth width, the median of each step
  after its first ``SETTLE`` frames;
* ``largest_step``: the step between neighbouring levels where the reading jumps most,
  and by how much against the mean step -- a reader that follows the drawing has none.

A reader whose response bends or jumps rewards a mouth model whose openings fall on the
steep part: the voice bench's correlation on that template measures the reader as much as
the lip-sync.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.avsync import referee_mouths  # noqa: E402
from bench.figures import report  # noqa: E402
from lipsync.engines.warp import WarpEngine, prepare  # noqa: E402
from lipsync.mouth import MouthTrack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

LEVELS = tuple(round(k / 10, 1) for k in range(11))
LEAD_IN = 10  # frames held shut before the first step: the reading at rest
HOLD = 6  # frames per step
SETTLE = 2  # of which the first are left out: the encoder and the tracker catch up
# (spread, protrusion) of each shape: neutral, /u/'s rounding, /i/'s spreading
SHAPES = {"neutral": (0.0, 0.0), "rounded": (-1.0, 1.0), "spread": (1.0, 0.0)}


def staircase(shape: str, frames: int, fps: float) -> MouthTrack:
    """``frames`` of mouth track: LEAD_IN frames shut, then each of LEVELS held HOLD frames,
    the last level held to the end; speaking throughout, in ``shape``."""
    spread, protrusion = SHAPES[shape]
    steps = np.repeat(np.asarray(LEVELS, np.float32), HOLD)
    openness = np.concatenate([np.zeros(LEAD_IN, np.float32), steps])[:frames]
    openness = np.pad(openness, (0, frames - openness.size), mode="edge")
    full = np.ones(frames, np.float32)
    return MouthTrack(openness, full * spread, full * protrusion, full, fps)


def step_readings(gap: np.ndarray) -> tuple[float, list[float]]:
    """(rest, per level): the referee's median reading while shut and on each step, after
    each step's first SETTLE frames; NaN where it found no face."""
    def median(frames: np.ndarray) -> float:
        known = frames[np.isfinite(frames)]
        return round(float(np.median(known)), 4) if known.size else float("nan")

    rest = median(gap[SETTLE:LEAD_IN])
    starts = LEAD_IN + HOLD * np.arange(len(LEVELS))
    return rest, [median(gap[s + SETTLE:s + HOLD]) for s in starts]


def largest_step(read: list[float]) -> dict:
    """Where the reading jumps most between neighbouring levels, and that jump over the mean step."""
    steps = np.diff(np.asarray(read, np.float64))
    if not np.isfinite(steps).any() or np.nanmean(steps) <= 0:
        return {"between": None, "over_mean_step": None}
    k = int(np.nanargmax(steps))
    return {"between": [LEVELS[k], LEVELS[k + 1]], "over_mean_step": round(float(steps[k] / np.nanmean(steps)), 2)}


class StaircaseEngine(WarpEngine):
    """``warp`` with its mouth track replaced by :func:`staircase`; keeps the drawn full
    opening (mouth widths) of the last render."""

    def __init__(self, shape: str):
        super().__init__(device="cpu")
        self.shape = shape
        self.full_opening = float("nan")

    def start(self, ctx):
        from lipsync.engines.warp_field import full_opening
        from lipsync.engines.warp_session import WarpSession

        prepared = prepare(ctx, self.mouth_settings)
        g = prepared.geometry
        rows = np.flatnonzero(g.valid)
        self.full_opening = float(np.median(full_opening(g, rows) / g.width[rows])) if rows.size else float("nan")
        track = staircase(self.shape, ctx.frame_count, ctx.fps)
        return WarpSession(ctx, dataclasses.replace(prepared, track=track))


def measure(templates: dict[str, Path], work: Path, fps: float = 25.0) -> dict:
    """Per template and shape: the drawn gap, the referee's reading, its largest jump."""
    from lipsync.engine import RenderOptions
    from lipsync.render import render
    from tests.media_factory import write_wav

    frames = LEAD_IN + HOLD * len(LEVELS) + 2
    silence = write_wav(work / "staircase.wav", np.zeros(int(frames / fps * 16000), np.int16), 16000)
    options = RenderOptions(device="cpu", cache_dir=work / "cache")
    runs = []
    for name, template in templates.items():
        for shape in SHAPES:
            engine = StaircaseEngine(shape)
            out = work / f"{name}-{shape}.mp4"
            render(silence, template, out, engine=engine, options=options)
            runs.append((name, shape, engine.full_opening, out))
    figures: dict[str, dict] = {}
    for (name, shape, full, _), mouths in zip(runs, referee_mouths(*(run[3] for run in runs))):
        rest, read = step_readings(mouths.gap)
        figures.setdefault(name, {})[shape] = {
            "drawn": [round(level * full, 4) for level in LEVELS], "rest": rest, "read": read,
            "largest_step": largest_step(read)}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "referee_response.json")
    args = parser.parse_args(argv)
    from bench.warp_voices import make_templates

    work = Path(tempfile.mkdtemp(prefix="referee-response-"))
    try:
        per_template = measure(make_templates(work), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, shapes in per_template.items():
        for shape, f in shapes.items():
            print(f"{name:<10}{shape:<9} drawn {' '.join(f'{x:.3f}' for x in f['drawn'])}")
            print(f"{'':<19} read  {' '.join(f'{x:.3f}' for x in f['read'])}  (rest {f['rest']:.3f}; "
                  f"largest step {f['largest_step']})")
    report({"engine": "warp", "levels": list(LEVELS), "hold_frames": HOLD, "settle_frames": SETTLE,
            "measured_by": "MediaPipe face mesh 0.10.21 (bench/referee), re-detected on the encoded output",
            "templates": per_template}, args.out, hide=("templates",))


if __name__ == "__main__":
    main()

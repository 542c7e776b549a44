"""What finishing costs as users run it: whole ``lipsyncd render`` processes, finished in
one pass, against the unfinished render and against finishing the rendered file afterwards.

    python bench/finish_bench.py [--rounds 5] [--seconds 10] [--size 1920x1080] [--engine warp]
                                 [--out bench/results/finish.json]

The source is bench/warp_bench.py's moving presenter at ``--size`` (1080p25 by default),
the audio ``--seconds`` of the committed espeak-ng speech. Each round runs, in turn:

* ``unfinished``: ``lipsyncd render`` with no finishing option;
* ``vertical``: the same with ``--resolution 1080p --aspect 9:16`` -- a 1080x1920 crop that
  follows the face, made from the engine's frames as they come, one encode;
* ``vertical_branded``: that plus a watermark and burned-in subtitles;
* ``two_pass``: what finishing cost before: the unfinished render, then a second process
  that decodes that MP4, follows the face, reframes and encodes it again
  (:func:`lipsync.finish.finish_video`); its time is the two processes' sum.

Kinds alternate round after round, so a busy spell on a shared machine hits all alike; the
figures are **medians**, with each process's peak memory from the kernel (``os.wait4``).
The face analysis and the face path are cached before the first round (a template is
reused job after job). Soft subtitles and an intro/outro of the render's own format are
joined by copying packets: those two are timed in this process, on the unfinished render.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.figures import report  # noqa: E402
from bench.warp_bench import make_speech, make_template  # noqa: E402
from bench.warp_speed import run, timed_process  # noqa: E402
from lipsync.finish import FinishSpec, finish_video  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VERTICAL = ("--resolution", "1080p", "--aspect", "9:16")
SECOND_PASS = """import sys
from pathlib import Path
from lipsync.engine import RenderOptions
from lipsync.finish import FinishSpec, finish_video
finish_video(Path(sys.argv[1]), Path(sys.argv[2]), FinishSpec(resolution="1080p", aspect="9:16"),
             RenderOptions(device="cpu"))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the four kinds")
    parser.add_argument("--seconds", type=float, default=10.0, help="speech length")
    parser.add_argument("--size", default="1920x1080", help="source WIDTHxHEIGHT")
    parser.add_argument("--template-seconds", type=float, default=8.0, help="source length (ping-pong)")
    parser.add_argument("--engine", default="warp", help="the engine every render uses")
    parser.add_argument("--out", type=Path, default=RESULTS / "finish.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="finish-bench-") as tmp:
        work = Path(tmp)
        template = make_template(work / "template.mp4", width, height, args.template_seconds)
        audio = make_speech(work / "speech.wav", args.seconds)
        (work / "captions.srt").write_text(
            "".join(f"{k + 1}\n00:00:{k:02d},100 --> 00:00:{k:02d},900\nCaption number {k + 1} 字幕\n\n"
                    for k in range(int(args.seconds))), encoding="utf-8")
        logo = np.zeros((80, 200, 4), np.uint8)
        logo[..., :3], logo[..., 3] = (255, 255, 255), 200
        Image.fromarray(logo).save(work / "logo.png")
        branded = (*VERTICAL, "--watermark", str(work / "logo.png"), "--subtitles", str(work / "captions.srt"),
                   "--subtitle-mode", "burn")
        state = work / "state"

        def render(name: str, *extra: str) -> tuple[float, float]:
            return run(args.engine, audio, template, work / f"{name}.mp4", state, *extra)

        render("prime", *VERTICAL)  # the face analysis and face path cached; not counted
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("unfinished", "vertical", "vertical_branded",
                                                                      "two_pass")}
        load = os.getloadavg()[0]
        for _ in range(max(1, args.rounds)):
            runs["unfinished"].append(render("unfinished"))
            runs["vertical"].append(render("vertical", *VERTICAL))
            runs["vertical_branded"].append(render("branded", *branded))
            first = render("first-pass")
            second = timed_process([sys.executable, "-c", SECOND_PASS, str(work / "first-pass.mp4"),
                                    str(work / "second-pass.mp4")], "finish_video")
            runs["two_pass"].append((first[0] + second[0], max(first[1], second[1])))
        copies = {}
        for name, spec in (("soft_subtitles", FinishSpec(subtitles=work / "captions.srt")),
                           ("intro_outro_same_format", FinishSpec(intro=work / "unfinished.mp4",
                                                                  outro=work / "unfinished.mp4"))):
            began = time.perf_counter()
            done = finish_video(work / "unfinished.mp4", work / f"{name}.mp4", spec)
            copies[name] = {"seconds": round(time.perf_counter() - began, 2), "method": done.method}
    median = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    memory = {k: statistics.median(m for _, m in v) for k, v in runs.items()}
    figures = {
        "source": f"{width}x{height}@25", "finished": "1080x1920", "engine": args.engine,
        "audio_seconds": args.seconds, "rounds": args.rounds,
        "timing": "medians of whole `lipsyncd render` processes, the four kinds alternating",
        "load_average_at_start": round(load, 2), "cpu_count": os.cpu_count(),
        **{f"{k}_s": round(v, 2) for k, v in median.items()},
        **{f"{k}_over_unfinished": round(median[k] / median["unfinished"], 3)
           for k in ("vertical", "vertical_branded", "two_pass")},
        **{f"peak_rss_{k}_mb": round(v, 1) for k, v in memory.items()},
        "copied_after_the_render": copies,
        "all_runs_s": {k: [round(t, 2) for t, _ in v] for k, v in runs.items()},
    }
    report(figures, args.out, hide=("all_runs_s",))


if __name__ == "__main__":
    main()

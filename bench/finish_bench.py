"""What the finishing options cost on a 720p25 render of 20 s of speech.

    python bench/finish_bench.py [--seconds 20] [--out bench/results/finish.json]

Times :func:`lipsync.finish.finish_video` on a passthrough render of the moving astronaut
template (bench/warp_bench.py's) for: soft subtitles alone (packets copied), an intro and
outro of the render's own format (joined by copy), a vertical 1080x1920 reframe that follows
the face, and the same with a watermark and burned-in subtitles (one re-encode), next to the
render itself. Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.figures import report  # noqa: E402
from bench.warp_bench import make_speech, make_template  # noqa: E402
from lipsync.engine import RenderOptions  # noqa: E402
from lipsync.engines import create_engine  # noqa: E402
from lipsync.finish import FinishSpec, Watermark, finish_video  # noqa: E402
from lipsync.render import render  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "finish.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="finish-bench-"))
    try:
        template = make_template(work / "template.mp4", 1280, 720, 8.0)
        audio = make_speech(work / "speech.wav", args.seconds)
        options = RenderOptions(device="cpu")
        began = time.perf_counter()
        rendered = render(audio, template, work / "render.mp4", engine=create_engine("passthrough"), options=options)
        render_s = time.perf_counter() - began
        intro = render(make_speech(work / "short.wav", 2.0), template, work / "intro.mp4",
                       engine=create_engine("passthrough"), options=options).path
        cues = "".join(f"{k + 1}\n00:00:{k:02d},100 --> 00:00:{k:02d},900\nCaption number {k + 1} 字幕\n\n"
                       for k in range(int(args.seconds)))
        (work / "captions.srt").write_text(cues, encoding="utf-8")
        logo = np.zeros((80, 200, 4), np.uint8)
        logo[..., :3], logo[..., 3] = (255, 255, 255), 200
        Image.fromarray(logo).save(work / "logo.png")
        cases = {
            "soft_subtitles": FinishSpec(subtitles=work / "captions.srt"),
            "intro_outro_copy": FinishSpec(intro=intro, outro=intro),
            "vertical_1080p": FinishSpec(resolution="1080p", aspect="9:16"),
            "vertical_1080p_watermark_burned": FinishSpec(resolution="1080p", aspect="9:16",
                                                          watermark=Watermark(work / "logo.png"),
                                                          subtitles=work / "captions.srt", subtitle_mode="burn"),
        }
        figures: dict = {"audio_seconds": args.seconds, "render_passthrough_s": round(render_s, 2)}
        for name, spec in cases.items():
            began = time.perf_counter()
            finished = finish_video(rendered.path, work / f"{name}.mp4", spec, options)
            spent = time.perf_counter() - began
            figures[name] = {"seconds": round(spent, 2), "x_real_time": round(finished.duration / spent, 1),
                             "method": finished.method, "size": f"{finished.width}x{finished.height}"}
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(figures, args.out)


if __name__ == "__main__":
    main()

"""Pipeline cost without any lip-sync: a 720p25 passthrough render of 20 s of audio.

    python bench/passthrough_bench.py [--seconds 20] [--template-seconds 5] [--size 1280x720]
                                      [--fps 25] [--chunk 32] [--preset veryfast]

Generates a moving template (the astronaut photograph panned across a 720p frame,
H.264 with B-frames and a keyframe every 2 s, like a phone recording) and a tone, then
renders in a fresh child process so its peak RSS is the render's alone. The template is
shorter than the audio, so the render exercises ping-pong reading (backward blocks and
seeks) as well as encoding. Also times reading the same frame sequence alone, to show
how the wall time splits between template decoding and the rest (engine, encoding).
Prints the figures and writes bench/results/passthrough.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "passthrough.json"


def make_template(path: Path, seconds: float, size: tuple[int, int], fps: int) -> Path:
    import av
    import numpy as np
    from PIL import Image

    from tests.media_factory import astronaut

    w, h = size
    photo = Image.fromarray(astronaut())
    frames = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.gop_size = 2 * fps
        vs.options = {"crf": "20", "preset": "veryfast"}
        for i in range(frames):
            dx = int(40 * np.sin(2 * np.pi * i / frames))
            crop = photo.crop((64 + dx, 0, 448 + dx, 384 * h // w)).resize((w, h), Image.BILINEAR)
            for p in vs.encode(av.VideoFrame.from_ndarray(np.asarray(crop), format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def make_tone(path: Path, seconds: float, rate: int = 48000) -> Path:
    import av
    import numpy as np

    with av.open(str(path), "w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        n, pos = int(seconds * rate), 0
        while pos < n:
            k = min(rate, n - pos)
            t = np.arange(pos, pos + k) / rate
            s = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(s, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, pos, Fraction(1, rate)
            for p in st.encode(frame):
                out.mux(p)
            pos += k
        for p in st.encode():
            out.mux(p)
    return path


def child(audio: Path, template: Path, out: Path, chunk: int, preset: str) -> dict:
    """Runs in its own process: the render, then the template reading alone."""
    from lipsync.engine import RenderOptions
    from lipsync.engines import create_engine
    from lipsync.media.template import TemplateReader, probe_template
    from lipsync.render import render
    from lipsync.timeline import template_indices

    import numpy as np

    options = RenderOptions(chunk_frames=chunk, preset=preset)
    engine = create_engine("passthrough")
    start = time.perf_counter()
    result = render(audio, template, out, engine=engine, options=options)
    render_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    info = probe_template(template, options)
    order = template_indices(np.arange(result.frames), info.frame_count)
    start = time.perf_counter()
    with TemplateReader(info) as reader:
        for _ in reader.frames(order):
            pass
    read_s = time.perf_counter() - start
    return {
        "frames": result.frames, "fps": result.fps, "width": result.width, "height": result.height,
        "output_seconds": round(result.duration, 3), "template_frames": info.frame_count,
        "render_s": round(render_s, 2), "peak_rss_mb": round(peak_mb, 1), "template_read_s": round(read_s, 2),
        "output_mb": round(out.stat().st_size / 1024**2, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="audio (= output) length")
    ap.add_argument("--template-seconds", type=float, default=5.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--chunk", type=int, default=32, help="RenderOptions.chunk_frames")
    ap.add_argument("--preset", default="veryfast", help="x264 preset of the output")
    ap.add_argument("--child", nargs=3, metavar=("AUDIO", "TEMPLATE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*map(Path, args.child), args.chunk, args.preset)))
        return

    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="passthrough-bench-") as tmp:
        d = Path(tmp)
        template = make_template(d / "template.mp4", args.template_seconds, (w, h), args.fps)
        audio = make_tone(d / "audio.wav", args.seconds)
        cmd = [sys.executable, __file__, "--chunk", str(args.chunk), "--preset", args.preset,
               "--child", str(audio), str(template), str(d / "out.mp4")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])

    render_s = figures["render_s"]
    figures.update({
        "preset": args.preset, "chunk_frames": args.chunk, "cpu_count": os.cpu_count(),
        "frames_per_s": round(figures["frames"] / render_s, 1),
        # seconds of rendering per second of video: below 1 is faster than real time
        "real_time_factor": round(render_s / figures["output_seconds"], 3),
        "template_read_fps": round(figures["frames"] / figures["template_read_s"], 1),
    })
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"passthrough {figures['width']}x{figures['height']}@{figures['fps']:g} "
          f"{figures['output_seconds']} s ({figures['frames']} frames) from a "
          f"{figures['template_frames']}-frame template, {figures['cpu_count']} CPU(s):")
    print(f"  render            {render_s:.2f} s  = {figures['frames_per_s']} frames/s, "
          f"real-time factor {figures['real_time_factor']} (x{1 / figures['real_time_factor']:.2f} real time)")
    print(f"  peak RSS          {figures['peak_rss_mb']} MB")
    print(f"  template reading  {figures['template_read_fps']} frames/s alone (ping-pong order)")
    print(f"  written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

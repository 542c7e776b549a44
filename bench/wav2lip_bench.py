"""Throughput of the wav2lip engine: the generator alone, the whole render, and the encode limit.

    python bench/wav2lip_bench.py [--device auto|cpu|cuda] [--sizes 1280x720,1920x1080]
                                  [--seconds 4] [--batch-size 32] [--precision auto]

For each frame size it renders a talking-head clip made from a real photograph
(``skimage.data.astronaut``) and reports:

* ``model_fps``: faces per second through the generator alone (the median of timed batches
  of ``--batch-size``, inputs already on the device; CUDA timings synchronised);
* ``render_fps``: frames per second of a whole ``lipsync.render.render`` with the wav2lip
  engine (decode, crop, generator, paste-back, H.264 encode), the face analysis already
  cached as it is for a template used before; the analysis time is reported on its own;
* ``passthrough_fps``: the same render with the passthrough engine, i.e. decode and
  re-encode with the same settings and pipeline and no face work;
* ``render_vs_passthrough``: render_fps / passthrough_fps, how close the engine gets to
  the pipeline's decode+encode limit (1.0 = the engine costs nothing).

Weights are random but seeded: the generator's speed does not depend on their values, so
no checkpoint is needed. Prints the figures and writes bench/results/wav2lip_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lipsync.engine import RenderOptions  # noqa: E402
from lipsync.engines import create_engine  # noqa: E402
from lipsync.engines.wav2lip import Wav2LipEngine  # noqa: E402
from lipsync.engines.wav2lip.model import Wav2LipGenerator  # noqa: E402
from lipsync.face.analysis import analyze_template  # noqa: E402
from lipsync.media.template import probe_template  # noqa: E402
from lipsync.render import render  # noqa: E402
from tests.media_factory import write_wav  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FPS = 25


def write_template(path: Path, width: int, height: int, seconds: float) -> Path:
    """A clip of the astronaut portrait filling most of the frame height, drifting slowly."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).crop((64, 0, 384, 320))  # head and shoulders
    side = int(height * 0.9)
    face = np.asarray(photo.resize((side, side), Image.BICUBIC))
    frames = int(seconds * FPS)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(frames):
            canvas = np.full((height, width, 3), 90, np.uint8)
            x = (width - side) // 2 + int(0.02 * width * np.sin(2 * np.pi * i / frames))
            y = (height - side) // 2
            canvas[y:y + side, x:x + side] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_speech_like_audio(path: Path, seconds: float, rate: int = 16000) -> Path:
    """Syllable-rate modulated harmonics: audio whose mel windows vary like speech."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / rate) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    samples = (0.25 * voice * envelope / 2.6 * 32767).astype(np.int16)
    return write_wav(path, samples, rate)


def seeded_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"state_dict": Wav2LipGenerator().state_dict()}, path)
    return path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_fps(engine: Wav2LipEngine, batches: int) -> float:
    device, size = engine.device, engine.batch_size
    gen = torch.Generator().manual_seed(1)
    mel = (torch.rand(size, 1, 80, 16, generator=gen) * 8 - 4).to(device)
    face = torch.rand(size, 6, 96, 96, generator=gen).to(device)
    fp16 = engine.precision == "fp16"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
        for _ in range(2):  # warm-up: kernel selection, allocator
            engine.model(mel, face)
        sync(device)
        times = []
        for _ in range(batches):
            start = time.perf_counter()
            engine.model(mel, face)
            sync(device)
            times.append(time.perf_counter() - start)
    # the median batch: robust to other work on a shared machine stalling a call or two
    return size / float(np.median(times))


def timed_render(audio: Path, template: Path, out: Path, engine, options: RenderOptions) -> tuple[float, int]:
    start = time.perf_counter()
    result = render(audio, template, out, engine=engine, options=options)
    return time.perf_counter() - start, result.frames


def bench_size(width: int, height: int, args, engine: Wav2LipEngine, passthrough, work: Path) -> dict:
    template = write_template(work / f"face_{width}x{height}.mp4", width, height, args.seconds)
    audio = write_speech_like_audio(work / "speech.wav", args.seconds)
    options = RenderOptions(device=str(engine.device), chunk_frames=engine.batch_size, cache_dir=work / "faces")
    start = time.perf_counter()
    analysis = analyze_template(probe_template(template, options), cache_dir=options.cache_dir)
    analysis_s = time.perf_counter() - start
    model = model_fps(engine, args.model_batches)
    render_s, frames = timed_render(audio, template, work / "wav2lip.mp4", engine, options)
    pass_s, _ = timed_render(audio, template, work / "passthrough.mp4", passthrough, options)
    row = {
        "size": f"{width}x{height}", "frames": frames, "faces_found": analysis.face_frames,
        "face_analysis_s": round(analysis_s, 2), "model_fps": round(model, 1),
        "render_fps": round(frames / render_s, 2), "passthrough_fps": round(frames / pass_s, 2),
        "render_vs_passthrough": round(pass_s / render_s, 3),
    }
    print(f"{row['size']:>10}  model {row['model_fps']:8.1f} fps   render {row['render_fps']:7.2f} fps   "
          f"passthrough {row['passthrough_fps']:7.2f} fps   ratio {row['render_vs_passthrough']:.3f}   "
          f"(face analysis {analysis_s:.1f} s, {frames} frames)")
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", default="1280x720,1920x1080")
    p.add_argument("--seconds", type=float, default=None, help="clip length (default: 10 on CUDA, 3 on the CPU)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", choices=("auto", "fp16", "fp32"))
    p.add_argument("--model-batches", type=int, default=None, help="timed generator calls (default: 20 CUDA, 5 CPU)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="wav2lip-bench-") as tmp:
        work = Path(tmp)
        engine = Wav2LipEngine(seeded_checkpoint(work / "seeded.pth"), batch_size=args.batch_size,
                               precision=args.precision, device=args.device)
        on_cuda = engine.device.type == "cuda"
        args.seconds = args.seconds or (10.0 if on_cuda else 3.0)
        args.model_batches = args.model_batches or (20 if on_cuda else 5)
        passthrough = create_engine("passthrough")
        name = torch.cuda.get_device_name(engine.device) if on_cuda else cpu_name()
        print(f"device {engine.device} ({name}), {engine.precision}, batch {engine.batch_size}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        rows = [bench_size(*map(int, size.lower().split("x")), args, engine, passthrough, work)
                for size in args.sizes.split(",")]
    report = {
        "device": str(engine.device), "device_name": name, "precision": engine.precision,
        "batch_size": engine.batch_size, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
        "seconds": args.seconds, "fps": FPS,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews CPU figures
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"wav2lip_{engine.device.type}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

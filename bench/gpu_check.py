"""The CUDA paths, measured on a GPU host: wav2lip on CUDA beside the warp, and a real out-of-memory.

    python bench/gpu_check.py --prepare DIR       # on any host with dlib: inputs + face-analysis cache
    python bench/gpu_check.py --inputs DIR [--out FILE]   # on the GPU host

Preparing and measuring are apart so that the GPU host needs neither dlib nor the 100 MB
landmark model: a template whose face analysis is cached never loads it (the cache is
keyed by the template's content, so the prepared files are used as they are).

On the GPU host it reports, for a 720p and a 1080p template and 10 s of speech-like audio:

* ``warp``: frames per second of a whole render with the warp engine (which runs on the
  CPU, GPU or not) on the GPU host's cores;
* ``wav2lip``: generator-alone faces per second (fp16 autocast and fp32, batch 32 and 128)
  and a whole fp16 render, with seeded random weights (speed does not depend on them);
* ``passthrough``: the decode + encode limit of the pipeline on the same inputs;
* ``oom``: a frame engine that really exhausts the GPU's memory; ``render()`` must raise
  ``TransientRenderError`` (``render_transient``: the daemon retries the job later);
* ``latentsync``: the full-size engine (the published 1.27 G-parameter UNet's shape, 512x512,
  fp16, 20 DDIM steps with guidance, windows of 16) on rule-filled weights: its stages per
  frame, frames per second of a whole render of the 10-s clip at 720p, and the peak GPU
  memory (the authors state 18 GB for 1.6).

Prints the figures and writes JSON (default bench/results/gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.wav2lip_bench import seeded_checkpoint, write_speech_like_audio, write_template  # noqa: E402
from lipsync.engine import EngineSession, FrameChunk, FrameEngine, RenderContext, RenderOptions  # noqa: E402
from lipsync.engines import create_engine  # noqa: E402
from lipsync.errors import TransientRenderError  # noqa: E402
from lipsync.render import render  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = ((1280, 720), (1920, 1080))
SECONDS = 10.0


def prepare(folder: Path) -> None:
    """Templates, audio and their face analysis, made where dlib is installed."""
    from lipsync.face.analysis import analyze_template
    from lipsync.media.template import probe_template

    folder.mkdir(parents=True, exist_ok=True)
    write_speech_like_audio(folder / "speech.wav", SECONDS)
    options = RenderOptions(cache_dir=folder / "faces")
    for w, h in SIZES:
        template = write_template(folder / f"face_{w}x{h}.mp4", w, h, SECONDS)
        analysis = analyze_template(probe_template(template, options), cache_dir=options.cache_dir)
        print(f"prepared {template.name}: face in {analysis.face_frames} of {analysis.frame_count} frames")


class GreedyEngine(FrameEngine):
    """Asks the GPU for more memory than it has, the way an engine with too big a batch does."""

    name = "greedy"

    def start(self, ctx: RenderContext) -> EngineSession:
        class Session(EngineSession):
            def process(self, chunk: FrameChunk) -> np.ndarray:
                free, _total = torch.cuda.mem_get_info()
                torch.empty(int(free * 2), dtype=torch.uint8, device="cuda")  # raises: out of memory
                return chunk.frames
        return Session()


def timed_render(audio: Path, template: Path, out: Path, engine, options: RenderOptions) -> tuple[float, int]:
    if options.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = render(audio, template, out, engine=engine, options=options)
    return time.perf_counter() - start, result.frames


def measure(inputs: Path, work: Path) -> dict:
    audio = inputs / "speech.wav"
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "python": platform.python_version(), "rows": []}
    cache = work / "faces"
    shutil.copytree(inputs / "faces", cache)
    checkpoint = seeded_checkpoint(work / "wav2lip-seeded.pth")  # 145 MB: made here, not carried
    try:  # a real CUDA out-of-memory from an engine must leave render() as a transient error
        render(audio, inputs / "face_1280x720.mp4", work / "oom.mp4", engine=GreedyEngine(),
               options=RenderOptions(device="cuda", cache_dir=cache))
        report["oom"] = "no error raised"
    except TransientRenderError as e:
        report["oom"] = f"TransientRenderError ({e.code}): {e}"
    except Exception as e:  # noqa: BLE001 - reported as the failure it is
        report["oom"] = f"WRONG: {type(e).__name__}: {e}"
    torch.cuda.empty_cache()
    print("oom:", report["oom"])

    warp = create_engine("warp")
    w2l16 = create_engine("wav2lip", device="cuda", checkpoint=checkpoint, batch_size=32,
                          precision="fp16")
    passthrough = create_engine("passthrough")
    for w, h in SIZES:
        template = inputs / f"face_{w}x{h}.mp4"
        row: dict = {"size": f"{w}x{h}"}
        for label, engine, device, chunk in (("passthrough", passthrough, "cuda", 32),
                                             ("warp", warp, "cpu", 32),
                                             ("wav2lip_cuda_fp16", w2l16, "cuda", 32)):
            options = RenderOptions(device=device, chunk_frames=chunk, cache_dir=cache)
            timed_render(audio, template, work / "warmup.mp4", engine, options)  # kernels, allocator, cache
            seconds, frames = timed_render(audio, template, work / f"{label}.mp4", engine, options)
            row[f"{label}_fps"] = round(frames / seconds, 1)
            row["frames"] = frames
        row["warp_vs_passthrough"] = round(row["warp_fps"] / row["passthrough_fps"], 3)
        row["wav2lip_vs_passthrough"] = round(row["wav2lip_cuda_fp16_fps"] / row["passthrough_fps"], 3)
        print(json.dumps(row))
        report["rows"].append(row)

    from bench.wav2lip_bench import model_fps

    gen = {}
    for precision in ("fp16", "fp32"):
        for batch in (32, 128):
            engine = create_engine("wav2lip", device="cuda", checkpoint=checkpoint,
                                   batch_size=batch, precision=precision)
            gen[f"{precision}_batch{batch}"] = round(model_fps(engine, 20), 1)
    report["wav2lip_generator_faces_per_s"] = gen
    print("wav2lip generator:", gen)
    report["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)

    from bench.latentsync_bench import measure as latentsync_figures
    from tests.latentsync_fill import write_models_folder

    del w2l16
    torch.cuda.empty_cache()
    models = write_models_folder(work / "latentsync-models", unet="full")  # 5.3 GB, made here
    report["latentsync"] = latentsync_figures(models, torch.device("cuda"), steps=20, seconds=SECONDS,
                                              size=SIZES[0], work=work / "latentsync", audio=audio,
                                              template=inputs / "face_1280x720.mp4", cache=cache)
    print("latentsync:", json.dumps(report["latentsync"]))
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepare", type=Path, help="make the inputs in this folder (needs dlib)")
    p.add_argument("--inputs", type=Path, help="measure with the inputs prepared in this folder (needs CUDA)")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    args = p.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return 0
    if not args.inputs or not torch.cuda.is_available():
        p.error("--inputs DIR on a host with CUDA (or --prepare DIR)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = measure(args.inputs, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return 0 if report["oom"].startswith("TransientRenderError") else 1


if __name__ == "__main__":
    sys.exit(main())

"""The latentsync engine's speed and memory: its stages, and a whole render.

    python bench/latentsync_bench.py [--config tiny|full] [--models DIR] [--device auto|cpu|cuda]
                                     [--steps 20] [--frames 16] [--seconds 0.64] [--size 1280x720]
                                     [--no-render]

Without --models it writes a models folder filled with the compatibility data's
deterministic values (tests/latentsync_fill.py), with the published sd-vae-ft-mse and
whisper-tiny and either the published 1.27 G-parameter UNet at 512x512 (``full``) or the
tiny one at 128x128 (``tiny``, what the CPU can afford): the same arithmetic as real
weights of those shapes, so the same speed. It times, per frame of a 16-frame window, the
VAE encoding (masked and reference faces), the DDIM loop (``steps`` UNet calls on the
guided batch of 2 x 16 frames) and the VAE decode, then a whole ``lipsyncd``-style render
-- decode, face analysis, alignment, the engine, paste-back, H.264 encode -- of SECONDS of
audio on a face template of SIZE (``--no-render``: the stages only). ``--frames`` times the
stages on fewer frames than a window: ``--config full --device cpu --steps 1 --frames 1
--no-render`` is one guided step of the published UNet's size on one frame, what the CPU
can afford. On CUDA it reports the peak GPU memory. Prints the figures and writes
bench/results/latentsync_<config>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.wav2lip_bench import write_speech_like_audio, write_template  # noqa: E402
from lipsync.device import resolve_device  # noqa: E402
from lipsync.engine import RenderOptions  # noqa: E402
from lipsync.engines import create_engine  # noqa: E402
from lipsync.engines.latentsync.align import keep_mask  # noqa: E402
from lipsync.render import render  # noqa: E402
from tests.latentsync_fill import write_models_folder  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(models: Path, device: torch.device, *, steps: int, seconds: float, size: tuple[int, int],
            work: Path, audio: Path | None = None, template: Path | None = None, cache: Path | None = None,
            frames: int | None = None, whole_render: bool = True) -> dict:
    """The figures; ``audio``/``template``/``cache`` default to clips made here (the template's
    face analysis then needs dlib: a GPU host passes prepared ones with their cache)."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    engine = create_engine("latentsync", latentsync_models=models, latentsync_steps=steps, device=str(device))
    figures: dict = {"device": str(device), "resolution": engine.net.resolution, "steps": steps,
                     "precision": str(engine.net.dtype).replace("torch.", ""), "window": engine.window,
                     "cpu_threads": torch.get_num_threads(), "load_s": round(time.perf_counter() - t0, 1)}
    net, res, window = engine.net, engine.net.resolution, frames or engine.window
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    faces = np.random.default_rng(0).integers(0, 255, (window, res, res, 3), dtype=np.uint8)
    tokens = torch.zeros(window, 50, 384)
    keep = keep_mask(res)
    stages: dict[str, float] = {}
    for _round in range(2):  # the first round warms kernels and the allocator up
        generator = torch.Generator().manual_seed(0)
        noise = net.initial_noise(generator).repeat(1, 1, window, 1, 1)
        sync(device); t = time.perf_counter()
        conditions, _ = net.conditions(faces, keep, generator)
        sync(device); stages["vae_encode"] = time.perf_counter() - t
        t = time.perf_counter()
        latents = net.denoise(noise, conditions, tokens, steps=steps, guidance=engine.guidance, generator=generator)
        sync(device); stages["ddim_loop"] = time.perf_counter() - t
        t = time.perf_counter()
        net.decode(latents)
        sync(device); stages["vae_decode"] = time.perf_counter() - t
    figures["per_frame_s"] = {k: round(v / window, 3) for k, v in stages.items()}
    figures["per_frame_s"]["networks"] = round(sum(stages.values()) / window, 3)
    figures["unet_call_s"] = round(stages["ddim_loop"] / steps, 3)
    figures["frames_timed"] = window
    if not whole_render:
        return figures
    audio = audio or write_speech_like_audio(work / "speech.wav", seconds)
    template = template or write_template(work / "face.mp4", size[0], size[1], max(seconds, 1.0))
    options = RenderOptions(device=str(device), cache_dir=cache or work / "cache")
    t = time.perf_counter()
    result = render(audio, template, work / "out.mp4", engine=engine, options=options)
    took = time.perf_counter() - t
    figures["render"] = {"template": template.name, "frames": result.frames, "seconds": round(took, 1),
                         "seconds_per_frame": round(took / result.frames, 3),
                         "frames_per_s": round(result.frames / took, 3)}
    if device.type == "cuda":
        figures["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=("tiny", "full"), default=None,
                   help="the synthetic UNet's size (default: full on CUDA, tiny on the CPU)")
    p.add_argument("--models", type=Path, default=None, help="a real models folder (default: synthetic weights)")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--frames", type=int, default=None, help="frames to time the stages on (default: a window)")
    p.add_argument("--no-render", action="store_true", help="time the stages only")
    p.add_argument("--seconds", type=float, default=0.64, help="length of the rendered audio (0.64 s = 16 frames)")
    p.add_argument("--size", default="1280x720", help="the template's size")
    args = p.parse_args()
    device = torch.device(resolve_device(args.device))
    config = args.config or ("full" if device.type == "cuda" else "tiny")
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="lipsyncd-latentsync-bench-") as tmp:  # the full models: 5 GB
        work = Path(tmp)
        t0 = time.perf_counter()
        models = args.models or write_models_folder(work / "models", unet=config)
        prepare_s = time.perf_counter() - t0
        figures = {"config": "real weights" if args.models else config, "prepare_weights_s": round(prepare_s, 1),
                   **measure(models, device, steps=args.steps, seconds=args.seconds, size=(w, h), work=work,
                             frames=args.frames, whole_render=not args.no_render)}
    figures["command"] = "python bench/latentsync_bench.py " + " ".join(sys.argv[1:])
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(exist_ok=True)
    suffix = "_stages" if args.no_render else ""
    (RESULTS / f"latentsync_{config}_{device.type}{suffix}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

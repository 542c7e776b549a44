"""The musetalk engine's speed: the networks alone, and whole renders at 720p and 1080p.

    python bench/musetalk_bench.py [--models DIR] [--device auto|cpu|cuda] [--seconds 0.4] [--batch 8]

Without --models it writes a models folder of the published shapes (the full-size
850 M-parameter UNet, sd-vae-ft-mse, whisper-tiny) filled with the compatibility data's
deterministic values: the same arithmetic as the real weights, so the same speed. It
times (1) the networks alone per face: VAE encode, the UNet step and VAE decode for a
batch, (2) a whole render -- decode, face analysis, the engine, H.264 encode -- of a face
video of SECONDS at 1280x720 and at 1920x1080. Prints the figures and writes
bench/results/musetalk_<device>.json. The target on a GPU host is >= 25 frames/s at
1080p end to end.
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

from lipsync.device import resolve_device  # noqa: E402
from lipsync.engine import RenderOptions  # noqa: E402
from lipsync.engines import create_engine  # noqa: E402
from lipsync.render import render  # noqa: E402
from bench.wav2lip_bench import write_template  # noqa: E402
from tests.media_factory import write_tone  # noqa: E402
from tests.musetalk_fill import write_published_folder  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=None, help="a real models folder (default: synthetic weights)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=0.4, help="length of the rendered clips")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    device = torch.device(resolve_device(args.device))
    work = Path(tempfile.mkdtemp(prefix="lipsyncd-musetalk-bench-"))
    t0 = time.perf_counter()
    models = args.models or write_published_folder(work / "models", unet_manifest="unet_manifest.json")
    prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = create_engine("musetalk", musetalk_models=models, device=str(device), musetalk_batch_size=args.batch)
    load_s = time.perf_counter() - t0
    net = engine.net
    crops = np.random.default_rng(0).integers(0, 255, (args.batch, 256, 256, 3), dtype=np.uint8)
    prompts = torch.zeros(args.batch, 50, 384)
    figures: dict = {"device": str(device), "weights": "real" if args.models else "synthetic (published shapes)",
                     "batch": args.batch, "cpu_threads": torch.get_num_threads(),
                     "prepare_weights_s": round(prepare_s, 1), "load_s": round(load_s, 1)}
    with torch.autocast(device.type, dtype=torch.float16, enabled=engine.fp16):
        net.decode(net.generate(net.latents(crops[:1]), prompts[:1]))  # warm-up
        stages = {}
        for name, fn in (("vae_encode", lambda: net.latents(crops)),):
            sync(device); t = time.perf_counter(); latents = fn(); sync(device); stages[name] = time.perf_counter() - t
        sync(device); t = time.perf_counter(); faces = net.generate(latents, prompts); sync(device)
        stages["unet_step"] = time.perf_counter() - t
        sync(device); t = time.perf_counter(); net.decode(faces); sync(device)
        stages["vae_decode"] = time.perf_counter() - t
    figures["per_face_ms"] = {k: round(v / args.batch * 1000, 1) for k, v in stages.items()}
    figures["model_faces_per_s"] = round(args.batch / sum(stages.values()), 2)
    audio = write_tone(work / "tone.wav", seconds=args.seconds)
    for label, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        template = write_template(work / f"face-{label}.mp4", size[0], size[1], args.seconds)
        out = work / f"out-{label}.mp4"
        t = time.perf_counter()
        result = render(audio, template, out, engine=engine,
                        options=RenderOptions(device=str(device), cache_dir=work / "cache"))
        seconds = time.perf_counter() - t
        frames = result.frames
        figures[f"render_{label}"] = {"frames": frames, "seconds": round(seconds, 1),
                                      "frames_per_s": round(frames / seconds, 2)}
    figures["command"] = "python bench/musetalk_bench.py " + " ".join(sys.argv[1:])
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"musetalk_{device.type}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""End-to-end figures of the default ``warp`` engine on a 720p talking-head render.

    python bench/warp_bench.py [--seconds 20] [--size 1280x720] [--template-seconds 8]
                               [--device cpu] [--out bench/results/warp.json]

It builds a moving 25 fps template from a real photograph (``skimage.data.astronaut``:
slow pan, zoom and tilt) and ``--seconds`` of speech from the committed espeak-ng
fixtures, then renders it with the passthrough engine (the reference: the template
re-timed and encoded with the same settings) and with the warp engine, and reports:

* ``rtf_cold`` / ``rtf_warm``: render seconds / audio seconds for the whole
  ``lipsync.render.render`` (probe, face analysis, audio features, decode, warp, x264
  encode), first with an empty face-analysis cache, then with the template cached as it is
  for every later job that reuses it (target: <= 1.0);
* ``engine_ms_per_frame``: ``session.process`` alone, per frame;
* ``av_sync``: mouth opening measured by landmark detection on the output frames,
  correlated with the speech-band energy of the audio at lags -2..2 frames; the best
  correlation and its lag (target: >= 0.8 at a lag of -1, 0 or 1);
* ``psnr_outside_db``: PSNR of the warp render against the passthrough render over every
  pixel outside the mouth/jaw region of its frame (target: >= 45 dB);
* ``peak_rss_mb``: peak memory of the whole benchmark process (renders and measurements).

Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.avsync import audio_envelope, av_sync, masked_psnr, mouth_jaw_mask, mouth_openings, video_frames  # noqa: E402
from lipsync.engine import FrameChunk, RenderContext, RenderOptions  # noqa: E402
from lipsync.engines import create_engine  # noqa: E402
from lipsync.face.analysis import analyze_template  # noqa: E402
from lipsync.media.audio import load_mono, probe_audio  # noqa: E402
from lipsync.media.template import TemplateReader, probe_template  # noqa: E402
from lipsync.render import render  # noqa: E402
from tests.media_factory import write_wav  # noqa: E402
from lipsync.timeline import output_frame_count, template_index, template_indices  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data"
RESULTS = ROOT / "bench" / "results"
FPS = 25


def make_template(path: Path, width: int, height: int, seconds: float) -> Path:
    """The astronaut's head and shoulders, upscaled to fill the frame, drifting slowly."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    frames = max(1, int(round(seconds * FPS)))
    face_x, face_y = 224.0, 150.0  # middle of the head in the photograph
    box_h = 280.0  # photograph pixels shown over the frame height: the face is ~40% of it
    box_w = box_h * width / height
    canvas = Image.new("RGB", (int(box_w) + 512, int(box_h) + 512), (236, 232, 228))
    canvas.paste(photo, (256, 256))  # room around the photo for the wide frame and the pan
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "14", "preset": "veryfast"}
        for i in range(frames):
            phase = math.sin(2 * math.pi * i / frames)
            zoom = 1.0 + 0.04 * phase
            cx, cy = face_x + 256 + 12 * phase, face_y + 256 + 4 * phase
            tilted = canvas.rotate(2.5 * phase, resample=Image.BICUBIC, center=(cx, cy))
            w, h = box_w / zoom, box_h / zoom
            crop = tilted.crop((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            frame = np.asarray(crop.resize((width, height), Image.BICUBIC))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_speech(path: Path, seconds: float) -> Path:
    """``seconds`` of the committed speech fixtures, one after another with short pauses."""
    rate = 16000
    parts = [load_mono(FIXTURES / name, rate) for name in ("speech_en.wav", "speech_short.wav")]
    pause = np.zeros(int(0.35 * rate), np.float32)
    pieces, total, k = [], 0, 0
    while total < seconds * rate:
        piece = np.concatenate([parts[k % 2], pause])
        pieces.append(piece)
        total += piece.size
        k += 1
    samples = np.concatenate(pieces)[: int(seconds * rate)]
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    return write_wav(path, pcm, rate)


def engine_cost(engine, audio: Path, template: Path, options: RenderOptions, device: str) -> float:
    """Milliseconds per frame spent in ``session.process`` alone (decode not counted)."""
    info = probe_template(template, options)
    frames = output_frame_count(probe_audio(audio).duration, info.fps)
    ctx = RenderContext(audio_path=audio, template=info, fps=info.fps, frame_count=frames, options=options,
                        device=device, template_index=lambda i: template_index(i, info.frame_count))
    session = engine.start(ctx)
    spent = 0.0
    with TemplateReader(info) as reader:
        for start in range(0, frames, options.chunk_frames):
            out_idx = np.arange(start, min(frames, start + options.chunk_frames), dtype=np.int64)
            t_idx = template_indices(out_idx, info.frame_count)
            chunk = FrameChunk(np.stack(list(reader.frames(t_idx))), out_idx, t_idx)
            began = time.perf_counter()
            session.process(chunk)
            spent += time.perf_counter() - began
    session.close()
    return 1000.0 * spent / frames


def outside_psnr(render_path: Path, reference_path: Path, template: Path, options: RenderOptions) -> float:
    info = probe_template(template, options)
    analysis = analyze_template(info, cache_dir=options.cache_dir)
    squared, count = 0.0, 0
    for i, (a, b) in enumerate(zip(video_frames(render_path), video_frames(reference_path))):
        t = template_index(i, info.frame_count)
        outside = np.ones(a.shape[:2], bool)
        if analysis.has_face[analysis.index(t)]:
            outside = ~mouth_jaw_mask(analysis.landmarks[analysis.index(t)], a.shape[0], a.shape[1])
        _, sq = masked_psnr(a, b, outside)
        squared += sq
        count += int(outside.sum()) * 3
    mse = squared / max(count, 1)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all the process's threads) of calling ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="speech length")
    parser.add_argument("--size", default="1280x720", help="template WIDTHxHEIGHT")
    parser.add_argument("--template-seconds", type=float, default=8.0, help="template length (ping-pong)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N]")
    parser.add_argument("--out", type=Path, default=RESULTS / "warp.json")
    parser.add_argument("--keep", type=Path, help="also copy the two renders into this folder")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    work = Path(tempfile.mkdtemp(prefix="warp-bench-"))
    try:
        template = make_template(work / "template.mp4", width, height, args.template_seconds)
        audio = make_speech(work / "speech.wav", args.seconds)
        audio_s = probe_audio(audio).duration
        cache = work / "cache"
        options = RenderOptions(device=args.device, cache_dir=cache)

        load_before = os.getloadavg()[0]
        reference = work / "passthrough.mp4"
        passthrough_s, passthrough_cpu = timed(lambda: render(audio, template, reference,
                                                              engine=create_engine("passthrough"), options=options))
        engine = create_engine("warp", device=args.device)
        output = work / "warp.mp4"
        result = None

        def warp_render():
            nonlocal result
            result = render(audio, template, output, engine=engine, options=options)

        cold_s, cold_cpu = timed(warp_render)
        warm_s, warm_cpu = timed(warp_render)

        from lipsync.device import resolve_device

        per_frame_ms = engine_cost(engine, audio, template, options, resolve_device(args.device))
        openings = mouth_openings(video_frames(output))
        envelope = audio_envelope(audio, result.fps, result.frames)
        sync = av_sync(openings, envelope)
        psnr = outside_psnr(output, reference, template, options)

        import torch

        figures = {
            "engine": "warp",
            "device": resolve_device(args.device),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "size": f"{width}x{height}",
            "fps": FPS,
            "template_seconds": args.template_seconds,
            "audio_seconds": round(audio_s, 3),
            "frames": result.frames,
            "passthrough_s": round(passthrough_s, 2),
            "render_cold_s": round(cold_s, 2),
            "render_warm_s": round(warm_s, 2),
            "cpu_s_passthrough": round(passthrough_cpu, 2),
            "cpu_s_cold": round(cold_cpu, 2),
            "cpu_s_warm": round(warm_cpu, 2),
            "load_average_at_start": round(load_before, 2),
            "rtf_passthrough": round(passthrough_s / audio_s, 3),
            "rtf_cold": round(cold_s / audio_s, 3),
            "rtf_warm": round(warm_s / audio_s, 3),
            "engine_ms_per_frame": round(per_frame_ms, 2),
            "av_sync_correlation": round(sync["correlation"], 4),
            "av_sync_lag_frames": sync["lag_frames"],
            "av_sync_by_lag": sync["by_lag"],
            "face_found_in_output_frames": sync["face_frames"],
            "psnr_outside_db": round(psnr, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "notes": list(result.notes),
            "targets": {"rtf": "<= 1.0", "av_sync_correlation": ">= 0.8 at lag -1..1", "psnr_outside_db": ">= 45"},
        }
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in ("template.mp4", "speech.wav", "passthrough.mp4", "warp.mp4"):
                shutil.copy2(work / name, args.keep / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

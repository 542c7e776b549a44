"""End-to-end figures of the default ``warp`` engine on 720p talking-head renders.

    python bench/warp_bench.py [--seconds 20] [--size 1280x720] [--template-seconds 8]
                               [--device cpu] [--out bench/results/warp.json]
                               [--sheet docs/img/warp-visemes.png]

It builds a moving 25 fps template from a real photograph (``skimage.data.astronaut``:
slow pan, zoom and tilt) and ``--seconds`` of speech from the committed espeak-ng
fixtures, then renders it with the passthrough engine (the reference: the template
re-timed and encoded with the same settings) and with the warp engine, and reports:

* ``rtf_cold`` / ``rtf_warm``: render seconds / audio seconds for the whole
  ``lipsync.render.render`` (probe, face analysis, mouth samples, audio features, decode,
  warp, x264 encode), first with an empty cache, then with the template cached as it is for
  every later job that reuses it; ``warm_over_passthrough`` / ``cold_over_passthrough``
  compare them with the plain decode + re-encode (targets: <= 1.15 and <= 1.5);
* ``engine_ms_per_frame``: ``session.process`` alone, per frame;
* ``av_sync``: mouth opening re-detected on the encoded output by the referee (MediaPipe's
  face mesh, bench/referee/, a different detector family from the dlib model that drives
  the engine), correlated with the speech-band energy of the audio at lags -2..2 frames;
  the best correlation and its lag (target: >= 0.85 at a lag of -1, 0 or 1);
* ``psnr_outside_db``: PSNR of the warp render against the passthrough render over every
  pixel outside the mouth/jaw region of its frame (target: >= 45 dB);
* ``vowels``: formant-synthesised /a/ /i/ /u/ over a still 720p presenter: mouth width
  (against the eye distance) and opening (against the face) as the referee measures them,
  relative to the mouth at rest (target: width u < a < i, opening largest for a);
* ``lines``: the same presenter with a black-and-white collar line under the chin and
  edges beside the cheeks: the largest change of any of their pixels in any frame before
  encoding (target: <= 1 level), and how far the collar's centre line wanders on the
  encoded video (pixels);
* ``peak_rss_mb``: peak memory of the whole benchmark process (renders and measurements).

``--voices`` judges the engine on every voice of the real-speech corpus instead (see
bench/warp_voices.py: timing, closures in pauses and on /p b m/, vowel shapes, a contact
sheet per voice).

``--sheet`` writes a contact sheet of the vowel render (closed, /a/ open, /u/ rounded,
/i/ spread, at 2x zoom) for judging by eye. Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
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

from bench.figures import report  # noqa: E402
from bench.avsync import audio_envelope, av_sync, masked_psnr, mouth_jaw_mask, referee_mouths, video_frames  # noqa: E402
from lipsync.engine import FrameChunk, RenderContext, RenderOptions  # noqa: E402
from lipsync.engines import create_engine  # noqa: E402
from lipsync.face.analysis import analyze_template  # noqa: E402
from lipsync.media.audio import load_mono, probe_audio  # noqa: E402
from lipsync.media.template import TemplateReader, probe_template  # noqa: E402
from lipsync.render import render  # noqa: E402
from tests.media_factory import write_frames_video, write_vowels, write_wav  # noqa: E402
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


def engine_chunks(engine, audio: Path, template: Path, options: RenderOptions, device: str):
    """(session, chunk) for every chunk of a render, in order: the engine alone, nothing
    encoded. The session is closed when the loop ends."""
    info = probe_template(template, options)
    frames = output_frame_count(probe_audio(audio).duration, info.fps)
    ctx = RenderContext(audio_path=audio, template=info, fps=info.fps, frame_count=frames, options=options,
                        device=device, template_index=lambda i: template_index(i, info.frame_count))
    session = engine.start(ctx)
    try:
        with TemplateReader(info) as reader:
            for start in range(0, frames, options.chunk_frames):
                out_idx = np.arange(start, min(frames, start + options.chunk_frames), dtype=np.int64)
                t_idx = template_indices(out_idx, info.frame_count)
                yield session, FrameChunk(np.stack(list(reader.frames(t_idx))), out_idx, t_idx)
    finally:
        session.close()


def engine_cost(engine, audio: Path, template: Path, options: RenderOptions, device: str) -> float:
    """Milliseconds per frame spent in ``session.process`` alone (decode not counted)."""
    spent, frames = 0.0, 0
    for session, chunk in engine_chunks(engine, audio, template, options, device):
        began = time.perf_counter()
        session.process(chunk)
        spent += time.perf_counter() - began
        frames += len(chunk.out_indices)
    return 1000.0 * spent / max(frames, 1)


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


VOWEL_SEQUENCE = "aiuaiu"
VOWEL_SECONDS, VOWEL_GAP = 0.6, 0.25


def presenter_with_lines(path: Path, width: int, height: int, seconds: float = 2.0) -> tuple[Path, np.ndarray, int]:
    """A still 720p presenter (the first frame of the moving template) with a collar line
    under the chin and edges beside the cheeks, black beside white; (clip, line mask, collar row)."""
    from lipsync.face.analysis import analyze_frames

    source = make_template(path.with_name("presenter-src.mp4"), width, height, 0.04)
    frame = next(video_frames(source)).copy()
    source.unlink()
    points = analyze_frames([frame], fps=FPS).landmarks[0]
    mouth_w = float(np.linalg.norm(points[54] - points[48]))
    collar = int(points[8, 1] + 0.12 * mouth_w)
    left, right = int(points[2:15, 0].min() - 0.08 * mouth_w), int(points[2:15, 0].max() + 0.08 * mouth_w)
    lines = np.zeros(frame.shape[:2], bool)
    lines[collar:collar + 4, left:right] = True
    lines[int(points[3, 1]):collar, left - 3:left + 1] = True
    lines[int(points[13, 1]):collar, right - 1:right + 3] = True
    frame[lines] = 0
    frame[np.roll(lines, 4, axis=0) & ~lines] = 255
    clip = write_frames_video(path, [frame] * int(seconds * FPS), crf=12)
    return clip, lines | np.roll(lines, 4, axis=0), collar


def vowel_figures(engine, template: Path, lines: np.ndarray, collar: int, work: Path, options: RenderOptions,
                  device: str, sheet: Path | None) -> dict:
    """Vowel shapes and line stability on the presenter with lines (see the module's docstring)."""
    audio = write_vowels(work / "vowels.wav", VOWEL_SEQUENCE, seconds=VOWEL_SECONDS, gap=VOWEL_GAP)
    output = work / "vowels.mp4"
    render(audio, template, output, engine=engine, options=options)
    mouths, = referee_mouths(output)
    face_open = mouths.gap * mouths.width  # opening against the face, not against the mouth's own width
    period = VOWEL_SECONDS + VOWEL_GAP
    per: dict[str, list] = {}
    middles: dict[str, int] = {}
    for k, v in enumerate(VOWEL_SEQUENCE):
        a = int((VOWEL_GAP + period * k + 0.2) * FPS)
        b = int((VOWEL_GAP + period * k + VOWEL_SECONDS - 0.1) * FPS)
        per.setdefault(v, []).append((np.nanmean(mouths.width[a:b]), np.nanmean(face_open[a:b])))
        middles.setdefault(v, (a + b) // 2)
    rest_w, rest_open = float(np.nanmean(mouths.width[:3])), float(np.nanmean(face_open[:3]))
    shapes = {v: {"width_vs_rest": round(float(np.mean([x[0] for x in xs])) / rest_w, 3),
                  "opening_vs_rest": round(float(np.mean([x[1] for x in xs])) / max(rest_open, 1e-6), 3)}
              for v, xs in per.items()}

    # the lines, before encoding: the engine's own output against its input
    worst = 0
    for session, chunk in engine_chunks(engine, audio, template, options, device):
        before = chunk.frames[:, lines].astype(np.int16)
        after = session.process(chunk)[:, lines].astype(np.int16)
        worst = max(worst, int(np.abs(after - before).max()))
    # ...and after encoding: the collar's centre row, column by column, in every frame
    cols = np.flatnonzero(lines[collar])
    wander = 0.0
    reference = None
    for frame in video_frames(output):
        band = frame[collar - 6:collar + 10, cols].astype(np.float64).mean(axis=2)  # rows x columns
        darkness = np.clip(128.0 - band, 0.0, None)
        centre = (darkness * np.arange(band.shape[0])[:, None]).sum(axis=0) / np.maximum(darkness.sum(axis=0), 1e-6)
        reference = centre if reference is None else reference
        wander = max(wander, float(np.abs(centre - reference).max()))
    if sheet is not None:
        contact_sheet(output, template, {"rest": 1, "open /a/": middles["a"], "rounded /u/": middles["u"],
                                         "spread /i/": middles["i"]}, options, sheet)
    return {"vowels": shapes, "vowel_rest": {"width": round(rest_w, 4), "opening": round(rest_open, 4)},
            "lines_max_change_before_encoding": worst, "collar_wander_px_encoded": round(wander, 2)}


def contact_sheet(video: Path, template: Path, picks: dict[str, int], options: RenderOptions, path: Path) -> None:
    """The mouth region of the picked frames side by side at 2x zoom, labelled."""
    from PIL import Image, ImageDraw

    info = probe_template(template, options)
    analysis = analyze_template(info, cache_dir=options.cache_dir)
    points = analysis.landmarks[0]
    mouth_w = float(np.linalg.norm(points[54] - points[48]))
    cx, cy = points[48:68].mean(axis=0)
    half_w, half_h = 0.9 * mouth_w, 0.75 * mouth_w
    box = tuple(int(round(v)) for v in (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    wanted = {i: name for name, i in picks.items()}
    tiles = {}
    for i, frame in enumerate(video_frames(video)):
        if i in wanted:
            crop = Image.fromarray(frame).crop(box)
            tiles[wanted[i]] = crop.resize((crop.width * 2, crop.height * 2), Image.BICUBIC)
    names = [n for n in picks if n in tiles]
    tw, th = tiles[names[0]].size
    sheet = Image.new("RGB", (tw * len(names), th + 28), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(names):
        sheet.paste(tiles[name], (k * tw, 28))
        draw.text((k * tw + 8, 7), name, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all the process's threads) of calling ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    if "--voices" in sys.argv[1:]:  # the per-voice judgement: bench/warp_voices.py
        from bench.warp_voices import run_voices

        return run_voices(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="speech length")
    parser.add_argument("--size", default="1280x720", help="template WIDTHxHEIGHT")
    parser.add_argument("--template-seconds", type=float, default=8.0, help="template length (ping-pong)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N]")
    parser.add_argument("--out", type=Path, default=RESULTS / "warp.json")
    parser.add_argument("--keep", type=Path, help="also copy the two renders into this folder")
    parser.add_argument("--repeat", type=int, default=3, help="time each render this many times, keep the fastest")
    parser.add_argument("--sheet", type=Path, help="write the contact sheet of the vowel render here (PNG)")
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
        passthrough = create_engine("passthrough")

        def passthrough_render():
            render(audio, template, reference, engine=passthrough, options=options)

        engine = create_engine("warp", device=args.device)
        # the landmark model loads once per process (a daemon has it from its first job on):
        # timed apart, so "cold" is a new template, not a new process
        from lipsync.face.landmarks import load_landmark_models

        model_load_s, _ = timed(load_landmark_models)
        output = work / "warp.mp4"
        result = None

        def warp_render(fresh_cache: bool = False):
            nonlocal result
            if fresh_cache:
                shutil.rmtree(cache, ignore_errors=True)
            result = render(audio, template, output, engine=engine, options=options)

        # the three kinds of run take turns, so a busy spell on the machine hits them alike
        runs: dict[str, list[tuple[float, float]]] = {"passthrough": [], "cold": [], "warm": []}
        for _ in range(max(1, args.repeat)):
            runs["passthrough"].append(timed(passthrough_render))
            runs["cold"].append(timed(lambda: warp_render(fresh_cache=True)))
            runs["warm"].append(timed(warp_render))
        (passthrough_s, passthrough_cpu), (cold_s, cold_cpu), (warm_s, warm_cpu) = (
            min(runs[k], key=lambda t: t[0]) for k in ("passthrough", "cold", "warm"))

        from lipsync.device import resolve_device

        per_frame_ms = engine_cost(engine, audio, template, options, resolve_device(args.device))
        mouths, = referee_mouths(output)
        envelope = audio_envelope(audio, result.fps, result.frames)
        sync = av_sync(mouths.gap, envelope)
        psnr = outside_psnr(output, reference, template, options)
        presenter, lines, collar = presenter_with_lines(work / "presenter.mp4", width, height)
        shapes = vowel_figures(engine, presenter, lines, collar, work, options, resolve_device(args.device), args.sheet)

        import numba

        figures = {
            "engine": "warp",
            "device": "cpu",  # the warp runs on the CPU whatever --device says
            "cpu_count": os.cpu_count(),
            "numba": numba.__version__,
            "machine": platform.machine(),
            "size": f"{width}x{height}",
            "fps": FPS,
            "template_seconds": args.template_seconds,
            "audio_seconds": round(audio_s, 3),
            "frames": result.frames,
            "passthrough_s": round(passthrough_s, 2),
            "render_cold_s": round(cold_s, 2),
            "render_warm_s": round(warm_s, 2),
            "landmark_model_load_s": round(model_load_s, 2),
            "cpu_s_passthrough": round(passthrough_cpu, 2),
            "cpu_s_cold": round(cold_cpu, 2),
            "cpu_s_warm": round(warm_cpu, 2),
            "load_average_at_start": round(load_before, 2),
            "timing": f"fastest of {args.repeat} runs each, the kinds taking turns",
            "all_runs_s": {k: [round(t[0], 2) for t in v] for k, v in runs.items()},
            "rtf_passthrough": round(passthrough_s / audio_s, 3),
            "rtf_cold": round(cold_s / audio_s, 3),
            "rtf_warm": round(warm_s / audio_s, 3),
            "warm_over_passthrough": round(warm_s / passthrough_s, 3),
            "cold_over_passthrough": round(cold_s / passthrough_s, 3),
            "engine_ms_per_frame": round(per_frame_ms, 2),
            "av_sync_correlation": round(sync["correlation"], 4),
            "av_sync_lag_frames": sync["lag_frames"],
            "av_sync_by_lag": sync["by_lag"],
            "face_found_in_output_frames": sync["face_frames"],
            "measured_by": "MediaPipe face mesh 0.10.21 (bench/referee), re-detected on the encoded output",
            "psnr_outside_db": round(psnr, 2),
            **shapes,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "notes": list(result.notes),
            "targets": {"warm_over_passthrough": "<= 1.15", "cold_over_passthrough": "<= 1.5",
                        "av_sync_correlation": ">= 0.85 at lag -1..1 (referee: MediaPipe)", "psnr_outside_db": ">= 45",
                        "vowels": "width u < a < i; opening largest for a", "lines_max_change_before_encoding": "<= 1"},
        }
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in ("template.mp4", "speech.wav", "passthrough.mp4", "warp.mp4"):
                shutil.copy2(work / name, args.keep / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(figures, args.out)


if __name__ == "__main__":
    main()

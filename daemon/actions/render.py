"""``lipsyncd render AUDIO TEMPLATE -o OUT``: one job in the foreground, no daemon, no storage."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TextIO

from lipsync.engines import AUTO, LATENTSYNC, MUSETALK, NAMES as ENGINE_NAMES, WAV2LIP
from lipsync.engines import summaries as engine_summaries
from lipsync.finish.spec import ASPECTS, SUBTITLE_MODES, FinishSpec, Watermark

from daemon.actions import EXIT_FAILURE, EXIT_OK, EXIT_USAGE


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "render",
        help="render one audio + template to an MP4 in the foreground",
        description="Renders AUDIO (any format FFmpeg reads) onto TEMPLATE (a video or a photo of a person) "
                    "and writes an H.264/AAC MP4. Settings come from -c FILE when given, else the defaults.",
    )
    p.add_argument("audio", metavar="AUDIO", type=Path)
    p.add_argument("template", metavar="TEMPLATE", type=Path)
    p.add_argument("-o", "--output", metavar="OUT", type=Path, required=True, help="MP4 to write")
    p.add_argument("--engine", choices=ENGINE_NAMES, default=None,
                   help="; ".join(f"{n}: {text}" for n, text in engine_summaries().items())
                   + " (default: render.engine of the config)")
    p.add_argument("--checkpoint", metavar="PATH", type=Path, default=None, help="Wav2Lip checkpoint (wav2lip, auto)")
    p.add_argument("--models", metavar="DIR", type=Path, default=None,
                   help="models folder of the musetalk or latentsync engine (auto: both are tried; see "
                        "scripts/fetch-models musetalk|latentsync)")
    p.add_argument("--device", default=None, help='"auto", "cpu", "cuda" or "cuda:N" (default: render.device)')
    p.add_argument("--still-fps", type=float, default=None, help="frame rate for a still-photo template")
    p.add_argument("--no-progress", action="store_true", help="do not report progress on stderr")
    f = p.add_argument_group("finishing", "applied as the video is rendered, in its one encode")
    f.add_argument("--resolution", default=None, help='"keep", 2160p, 1440p, 1080p, 720p, 540p, 480p, 360p or WxH')
    f.add_argument("--aspect", default=None, choices=ASPECTS,
                   help="reframe to this shape; the crop follows the face")
    f.add_argument("--fps", type=float, default=None, help="frame rate of the finished video")
    f.add_argument("--watermark", metavar="IMAGE", type=Path, default=None,
                   help="a .png (transparency kept) or .jpg drawn bottom right")
    f.add_argument("--intro", metavar="CLIP", type=Path, default=None, help="a video clip played before")
    f.add_argument("--outro", metavar="CLIP", type=Path, default=None, help="a video clip played after")
    f.add_argument("--subtitles", metavar="FILE", type=Path, default=None,
                   help="an .srt or .vtt file timed against the speech")
    f.add_argument("--subtitle-mode", choices=SUBTITLE_MODES, default="soft",
                   help="soft: a track players can switch on; burn: also drawn into the picture")
    return p


def finish_spec(args: argparse.Namespace) -> tuple[FinishSpec | None, list[str]]:
    """The finishing the flags ask for (None: none), and every problem with them at once."""
    from lipsync.finish.spec import check

    values = {"resolution": args.resolution, "aspect": args.aspect, "fps": args.fps, "subtitles": args.subtitle_mode}
    problems = ["--" + message for _, message in check({k: v for k, v in values.items() if v is not None})]
    if args.watermark is not None and args.watermark.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        problems.append(f"--watermark: {args.watermark}: give a .png (transparency kept) or .jpg")
    for flag, path in (("--watermark", args.watermark), ("--intro", args.intro), ("--outro", args.outro),
                       ("--subtitles", args.subtitles)):
        if path is not None and not path.is_file():
            problems.append(f"{flag}: {path}: " + ("no such file" if not path.exists() else "not a regular file"))
    spec = FinishSpec(resolution=args.resolution or "keep", aspect=args.aspect or "keep", fps=args.fps,
                      watermark=Watermark(args.watermark) if args.watermark is not None else None,
                      intro=args.intro, outro=args.outro, subtitles=args.subtitles,
                      subtitle_mode=args.subtitle_mode)
    return (None if spec.is_noop else spec), problems


class ProgressBar:
    """A text bar redrawn in place on a terminal; whole-ten percentages on one line each otherwise."""

    def __init__(self, stream: TextIO, label: str, width: int = 30) -> None:
        self.stream = stream
        self.label = label
        self.width = width
        self.tty = _isatty(stream)
        self._last = -1
        self._started = time.monotonic()

    def __call__(self, fraction: float) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        percent = int(fraction * 100)
        if self.tty:
            if percent == self._last:
                return
            filled = int(fraction * self.width)
            elapsed = time.monotonic() - self._started
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}% {elapsed:5.1f}s")
        else:
            step = percent // 10 * 10
            if step <= self._last:
                return
            percent = step
            self.stream.write(f"{self.label}: {percent}%\n")
        self._last = percent
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._last >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"lipsyncd render: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from lipsync.errors import LipsyncError

    from daemon import config, logsetup
    from daemon.errors import ConfigError
    from daemon.pipeline.engines import engine_options, render_options

    for label, path in (("audio", args.audio), ("template", args.template)):
        if not path.is_file():
            what = "no such file" if not path.exists() else "not a regular file"
            return _fail(f"{path}: {what} ({label})")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        return _fail(f"{args.checkpoint}: no such checkpoint file")
    finish, problems = finish_spec(args)
    if problems:
        return _fail("; ".join(problems), EXIT_USAGE)
    out: Path = args.output
    if out.suffix.lower() != ".mp4":
        return _fail(f"{out}: the output must be an .mp4 file", EXIT_USAGE)
    if not out.parent.exists():
        return _fail(f"{out.parent}: output folder does not exist")

    if args.config:
        try:
            cfg = config.load(args.config)
        except ConfigError as e:
            return _fail(str(e), EXIT_USAGE)
    else:
        cfg = config.Config()
    logsetup.configure(args.log_level or "warning", "auto", stream=sys.stderr)

    engine_name = args.engine or cfg.render.engine
    if engine_name == WAV2LIP and args.checkpoint is None and cfg.render.wav2lip.checkpoint is None:
        return _fail("the wav2lip engine needs --checkpoint PATH (a Wav2Lip .pth file)", EXIT_USAGE)
    if args.models is not None:
        if engine_name in (MUSETALK, AUTO):
            cfg.render.musetalk.models = args.models
        if engine_name in (LATENTSYNC, AUTO):
            cfg.render.latentsync.models = args.models
    if engine_name == MUSETALK and cfg.render.musetalk.models is None:
        return _fail("the musetalk engine needs --models DIR (the MuseTalk 1.5 files)", EXIT_USAGE)
    if engine_name == LATENTSYNC and cfg.render.latentsync.models is None:
        return _fail("the latentsync engine needs --models DIR (the LatentSync 1.6 files)", EXIT_USAGE)
    options = render_options(cfg, device=args.device)
    if args.still_fps:
        options = dataclasses.replace(options, still_fps=args.still_fps)

    from lipsync.engines import create_engine
    from lipsync.face.landmarks import keep_landmark_models_loaded
    from lipsync.render import render

    keep_landmark_models_loaded(False)  # one render: the models' 65 MB go back once the face is analysed

    bar = None if args.no_progress else ProgressBar(sys.stderr, out.name)
    started = time.monotonic()
    try:
        engine = create_engine(engine_name, **engine_options(cfg, engine_name, device=args.device,
                                                             checkpoint=args.checkpoint))
        for note in engine.load_notes:
            print(f"note: {note}", file=sys.stderr)
        result = render(args.audio, args.template, out, engine=engine, options=options,
                        progress=bar or (lambda _f: None), finish=finish)
    except LipsyncError as e:
        if bar:
            bar.finish()
        return _fail(str(e))
    except OSError as e:
        if bar:
            bar.finish()
        return _fail(f"{e.filename or out}: {e.strerror or e}")
    if bar:
        bar.finish()
    seconds = time.monotonic() - started
    size = out.stat().st_size
    print(f"{result.path}: {result.duration:.2f}s {result.width}x{result.height} @ {result.fps:g} fps, "
          f"{size / 1e6:.2f} MB, engine {result.engine}, rendered in {seconds:.1f}s")
    for note in result.notes:
        print(f"note: {note}")
    return EXIT_OK

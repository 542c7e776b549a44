"""What lipsyncd adds around a HeyGem render: preparing inputs, polling, checking and re-muxing.

    python bench/heygem_overhead.py [--seconds 60] [--size 1920x1080] [--poll-interval 2]

A stand-in server (tests/heygem_standin.py, the project's own, for the closed GPU service)
"renders" by copying a prepared H.264 video of the given length and size, so the time
measured, less the stand-in's fixed 3 s "render", is lipsyncd's alone: writing the WAV,
linking the template, submitting, the poll that sees the task finish (up to one poll
interval late), checking the result and re-muxing it with the job's audio.
Targets: overhead under 2 s plus the re-mux, and the re-mux at least 20 x faster than real
time. Prints the figures and writes bench/results/heygem_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lipsync.engine import FileRenderRequest, RenderOptions  # noqa: E402
from lipsync.engines.heygem import HeyGemEngine  # noqa: E402
from lipsync.media.remux import remux_with_audio  # noqa: E402
from lipsync.media.template import probe_template  # noqa: E402
from tests.heygem_standin import Behaviour, StandInServer  # noqa: E402
from tests.media_factory import write_tone  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RENDER_SECONDS = 3.0


def write_video(path: Path, seconds: float, width: int, height: int, fps: int = 25, *, audio: bool = False) -> Path:
    """A moving gradient, H.264 (crf 15 like the service's output), optionally with a silent track."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": "15", "preset": "ultrafast"}
        a = out.add_stream("aac", rate=48000) if audio else None
        ramp = np.tile(np.arange(width, dtype=np.uint16), (height, 1))
        for i in range(int(seconds * fps)):
            frame = np.stack([(ramp + i * 4) % 256] * 3, axis=-1).astype(np.uint8)
            for packet in v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        if a is not None:
            silence = av.AudioFrame.from_ndarray(np.zeros((1, 48000), np.float32), format="fltp", layout="mono")
            silence.sample_rate = 48000
            for packet in list(a.encode(silence)) + list(a.encode()):
                out.mux(packet)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--poll-interval", type=float, default=2.0, help="render.heygem.poll_interval")
    p.add_argument("--out", type=Path, default=RESULTS / "heygem_overhead.json")
    args = p.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"making a {args.seconds:.0f} s {width}x{height} result and the inputs ...", flush=True)
        result = write_video(work / "result.mp4", args.seconds, width, height)
        template = write_video(work / "template.mp4", 2.0, width, height, audio=True)
        audio = write_tone(work / "speech.wav", seconds=args.seconds, rate=16000)
        # the "render" takes RENDER_SECONDS, so that the poll that sees it finish is measured too
        server = StandInServer(work / "face2face", Behaviour(prerendered=result, min_seconds=RENDER_SECONDS)).start()
        engine = HeyGemEngine([{"url": server.url, "host_dir": str(server.data_dir)}],
                              poll_interval=args.poll_interval)
        options = RenderOptions(device="cpu")
        request = FileRenderRequest(audio=audio, template=probe_template(template, options),
                                    audio_duration=args.seconds, output=work / "out.mp4", options=options)
        started = time.perf_counter()
        engine.render_file(request)
        total = time.perf_counter() - started
        remux_started = time.perf_counter()
        remux_with_audio(result, audio, work / "remux.mp4", options)
        remux = time.perf_counter() - remux_started
        server.stop()
    report = {"seconds": args.seconds, "size": args.size, "poll_interval": args.poll_interval,
              "total_s": round(total, 3), "remux_s": round(remux, 3),
              "stand_in_render_s": RENDER_SECONDS,
              "overhead_without_remux_s": round(total - RENDER_SECONDS - remux, 3), "remux_speed_x_realtime": round(args.seconds / remux, 1),
              "targets": {"overhead_without_remux_s": "< 2", "remux_speed_x_realtime": ">= 20"}}
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What refusing a hostile file costs: time and peak memory of the header checks.

    python bench/hostile_probe.py

Each hostile input from tests/hostile_media.py is probed the way a job probes it
(``probe_template`` / ``probe_audio`` with the default limits) in a fresh subprocess, so
the peak resident memory (VmHWM, reset after the imports) belongs to that one probe. Prints a table and writes
bench/results/hostile_probe.json. A probe that refuses a file should cost about as much as
one that accepts a small valid file; a large difference means something was allocated or
decoded before the limits were applied.

For comparison, ``ffmpeg_open_*`` is what merely opening the same file with FFmpeg
(``av.open``, which runs its stream-info probing) costs: what a check made only after
opening would pay before it could refuse.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import hostile_media as hm  # noqa: E402
from tests.media_factory import write_plain_video, write_tone  # noqa: E402

PROBE = """
import json, sys, time
from pathlib import Path
from lipsync.media.audio import probe_audio
from lipsync.media.template import probe_template
import av

def peak_kib():
    # the high-water mark of this process image; ru_maxrss would also count the pages
    # shared with the parent that forked it
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

kind, path = sys.argv[1], Path(sys.argv[2])
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak starts again from the memory in use after the imports
except OSError:
    pass
base = peak_kib()
t = time.perf_counter()
try:
    if kind == "ffmpeg_open":
        av.open(str(path)).close()
    else:
        (probe_audio if kind == "audio" else probe_template)(path)
    outcome = "accepted"
except Exception as e:
    outcome = f"{getattr(e, 'code', type(e).__name__)}"
seconds = time.perf_counter() - t
print(json.dumps({"outcome": outcome, "seconds": seconds, "extra_mib": (peak_kib() - base) / 1024}))
"""


def cases(folder: Path) -> list[tuple[str, str, Path]]:
    return [
        ("valid 128x128 template", "template", write_plain_video(folder / "ok.mp4", seconds=1.0, size=(128, 128))),
        ("valid 1 s WAV", "audio", write_tone(folder / "ok.wav", seconds=1.0)),
        ("MP4 declaring 12000x12000", "template", hm.mp4_declaring(folder / "big.mp4", width=12000, height=12000)),
        ("MP4 declaring 16000x16000", "template", hm.mp4_declaring(folder / "bigger.mp4", width=16000, height=16000)),
        ("WebM declaring 12000x12000", "template", hm.webm_declaring(folder / "big.webm", width=12000, height=12000)),
        ("WebM declaring 16000x16000", "template",
         hm.webm_declaring(folder / "bigger.webm", width=16000, height=16000)),
        ("16000x16000 MP4 as audio", "audio", hm.mp4_declaring(folder / "bigger-a.mp4", width=16000, height=16000)),
        ("MP4 declaring 100 h", "template", hm.mp4_declaring(folder / "long.mp4", seconds=100 * 3600)),
        ("MP4 declaring 10M frames", "template", hm.mp4_declaring(folder / "frames.mp4", frames=10_000_000)),
        ("WAV declaring 100 h", "audio", hm.wav_declaring(folder / "long.wav", seconds=100 * 3600)),
        ("truncated MP4", "template", hm.truncated_mp4(folder / "cut.mp4")),
        ("corrupt MP4", "template", hm.corrupt_mp4(folder / "bad.mp4")),
        ("WAV cut in its data", "audio", hm.truncated_wav_data(folder / "cut.wav")),
        ("noise named .mp3", "audio", hm.garbage_mp3(folder / "noise.mp3")),
    ]


def measure(kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'input':28s} {'size':>11s}  {'outcome':18s} {'time':>11s} {'extra peak':>12s}   "
              f"{'ffmpeg open: time, extra peak':>30s}")
        for label, kind, path in cases(Path(tmp)):
            row = {"input": label, "bytes": path.stat().st_size, **measure(kind, path)}
            opened = measure("ffmpeg_open", path)
            row["ffmpeg_open_seconds"], row["ffmpeg_open_extra_mib"] = opened["seconds"], opened["extra_mib"]
            results.append(row)
            print(f"{label:28s} {row['bytes']:>9d} B  {row['outcome']:18s} {row['seconds'] * 1000:8.1f} ms "
                  f"{row['extra_mib']:8.1f} MiB   {opened['seconds'] * 1000:14.1f} ms {opened['extra_mib']:8.1f} MiB")
    out_path = ROOT / "bench" / "results" / "hostile_probe.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"probes": results}, indent=2) + "\n")
    print(f"wrote {out_path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Daemon overhead: what the pipeline costs around the render itself.

    python bench/daemon_throughput.py [--jobs 20] [--seconds 1.0] [--engine passthrough]

Drops JOBS tiny jobs (a 128x128 still photo + a tone of SECONDS) into a fresh inbox, runs
``lipsyncd run --burst`` once in this process with the embedded SeaweedFS store, and reads
the sidecars: jobs per minute, and per job the time spent outside the render (claim,
sidecars, sha256, upload, link, filing the inputs). Prints the figures and writes
bench/results/daemon_throughput.json.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import report  # noqa: E402
from daemon import config, logsetup  # noqa: E402
from daemon.outbox import read_document  # noqa: E402
from daemon.pipeline.worker import Worker  # noqa: E402
from tests.media_factory import write_still, write_tone  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "daemon_throughput.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(root: Path, jobs: int, seconds: float, engine: str) -> dict:
    (root / "inbox").mkdir()
    cfg_path = root / "lipsyncd.toml"
    cfg_path.write_text(
        '[paths]\ninbox = "inbox"\noutbox = "outbox"\ndone = "done"\nfailed = "failed"\nstate = "state"\n'
        "[watch]\nsettle_seconds = 0.2\npoll_interval = 0.2\n"
        f'[render]\nengine = "{engine}"\ndevice = "cpu"\nstill_fps = 25\npreset = "veryfast"\n'
        f'[storage]\nmode = "embedded"\n[storage.embedded]\nport = {free_port()}\n'
        '[links]\nrefresh_cron = ""\n[cleanup]\ncron = ""\n')
    still = write_still(root / "face.png", (128, 128))
    tone = write_tone(root / "tone.wav", seconds=seconds)
    for i in range(jobs):
        for src, ext in ((still, ".png"), (tone, ".wav")):
            tmp = root / "inbox" / f".job{i:03d}{ext}"
            shutil.copyfile(src, tmp)
            os.replace(tmp, root / "inbox" / f"job{i:03d}{ext}")

    logsetup.configure("warning", "json", stream=io.StringIO())
    worker = Worker(config.load(cfg_path, env={}))
    started = time.perf_counter()
    status = worker.run(burst=True)
    wall = time.perf_counter() - started
    docs = [read_document(p) for p in sorted((root / "outbox").glob("job*.json"))]
    assert status == 0 and len(docs) == jobs and all(d["state"] == "done" for d in docs), status
    render = [d["timings"]["render_seconds"] for d in docs]
    upload = [d["timings"]["upload_seconds"] for d in docs]
    total = [d["timings"]["total_seconds"] for d in docs]
    return {
        "jobs": jobs, "audio_seconds": seconds, "engine": engine, "cpu_count": os.cpu_count(),
        "wall_seconds": round(wall, 2),
        # the wall time includes starting the store and loading the engine once
        "jobs_per_minute": round(jobs / wall * 60, 1),
        "render_seconds_mean": round(statistics.mean(render), 3),
        "upload_seconds_mean": round(statistics.mean(upload), 3),
        "upload_seconds_p95": round(sorted(upload)[max(0, int(len(upload) * 0.95) - 1)], 3),
        # everything of the run that was not rendering, spread over the jobs
        "overhead_seconds_per_job": round((wall - sum(render)) / jobs, 3),
        "claim_to_done_seconds_median": round(statistics.median(total), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--engine", default="passthrough", choices=("passthrough", "warp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lipsyncd-bench-") as tmp:
        figures = run(Path(tmp), args.jobs, args.seconds, args.engine)
    report(figures, RESULTS)


if __name__ == "__main__":
    main()

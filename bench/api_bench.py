"""The HTTP API's intake: submissions per second, upload speed against a plain copy, and the
server's memory while a large file streams in.

    python bench/api_bench.py [--jobs 40] [--concurrency 4] [--size 2GB]

Runs ``lipsyncd serve`` as its own process on a fresh share (no daemon: only the intake is
measured) and

* submits JOBS tiny jobs (a 64x48 1 s video and a 1 s tone, multipart) from CONCURRENCY
  client threads: jobs accepted per second, and the latency of one submission;
* uploads one SIZE file twice -- as a tus upload (PATCH streamed from disk) and as a
  multipart submission -- and copies it with ``shutil.copyfile`` on the same filesystem,
  each timed until the data is on disk (``sync``): MB/s of each, and the upload's share
  of the copy's speed (target >= 0.5);
* samples the server's resident memory (VmRSS) every 50 ms during the uploads: the start,
  the peak, and the growth (flat means the file never sits in memory; a multipart upload
  keeps at most 32 MiB in flight when the disk is slower than the network).

Prints the figures and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import report  # noqa: E402
from daemon.config import parse_size  # noqa: E402
from tests.api_harness import ApiProcess, auth, new_key  # noqa: E402
from tests.daemon_harness import Share, config_text, free_port  # noqa: E402
from tests.media_factory import write_plain_video, write_tone  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "api.json"
MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    def __init__(self, pid: int):
        self.pid, self.samples, self._stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self.thread.join()


def big_file(path: Path, size: int) -> Path:
    """SIZE bytes that do not compress (so no layer can cheat), written 8 MiB at a time."""
    block = os.urandom(8 * MB)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            fh.write(block[:min(left, len(block))])
            left -= len(block)
    return path


def submit_throughput(url: str, key: str, media: tuple[Path, Path], jobs: int, concurrency: int) -> dict:
    audio, template = (p.read_bytes() for p in media)

    def one(i: int) -> float:
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/api/v1/jobs", headers=auth(key), timeout=60, data={"name": f"bench-{i}"},
                       files=[("audio", ("tone.wav", audio)), ("template", ("plain.mp4", template))])
        assert r.status_code == 202, r.text
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(jobs)))
    wall = time.perf_counter() - t0
    return {"jobs": jobs, "concurrency": concurrency, "jobs_per_second": round(jobs / wall, 1),
            "latency_median_ms": round(statistics.median(latencies) * 1000, 1),
            "latency_max_ms": round(max(latencies) * 1000, 1)}


def tus_upload(url: str, key: str, path: Path) -> float:
    size = path.stat().st_size
    meta = f"filename {base64.b64encode(path.name.encode()).decode()},filetype {base64.b64encode(b'video/mp4').decode()}"
    tus = {**auth(key), "Tus-Resumable": "1.0.0"}
    r = httpx.post(f"{url}/api/v1/uploads", headers={**tus, "Upload-Length": str(size), "Upload-Metadata": meta})
    assert r.status_code == 201, r.text
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        r = httpx.patch(r.headers["location"], content=iter(lambda: fh.read(MB), b""), timeout=600, headers={
            **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(size)})
    assert r.status_code == 204, r.text
    os.sync()  # on disk, like the copy it is compared with
    return time.perf_counter() - t0


def multipart_upload(url: str, key: str, path: Path, audio: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as big, open(audio, "rb") as a:
        r = httpx.post(f"{url}/api/v1/jobs", headers=auth(key), timeout=600,
                       files=[("audio", ("tone.wav", a)), ("template", ("big.mp4", big))])
    # random bytes are not a video: the server streams all of it to disk, then refuses it (422)
    assert r.status_code == 422, r.text
    os.sync()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--size", default="2GB", help="the large upload (e.g. 512MB, 2GB)")
    parser.add_argument("--workdir", default=None, help="where the share is made (default: a temp folder)")
    args = parser.parse_args()
    size = parse_size(args.size)

    root = Path(tempfile.mkdtemp(prefix="lipsyncd-api-bench-", dir=args.workdir))
    try:
        share = Share(root / "share")
        media = (write_tone(root / "tone.wav", seconds=1.0), write_plain_video(root / "plain.mp4", seconds=1.0))
        port = free_port()
        cfg_path = root / "api.toml"
        cfg_path.write_text(config_text(share, None, "bench", extra={
            "api": {"port": port, "rate_limit": ""}, "limits": {"max_file_size": size + MB},
            "logging": {"level": "warning", "format": "json"}}))
        api = ApiProcess(cfg_path, root / "api.log").start()
        key = new_key(api.cfg, "bench")
        try:
            pid = api.proc.pid
            idle = rss_mb(pid)
            intake = submit_throughput(api.url, key, media, args.jobs, args.concurrency)
            big = big_file(root / "big.mp4", size)
            t0 = time.perf_counter()
            shutil.copyfile(big, share.inbox / ".copy.tmp")
            os.sync()
            copy_s = time.perf_counter() - t0
            os.unlink(share.inbox / ".copy.tmp")
            with RssSampler(pid) as tus_mem:
                tus_s = tus_upload(api.url, key, big)
            with RssSampler(pid) as mp_mem:
                mp_s = multipart_upload(api.url, key, big, media[0])
        finally:
            api.stop()
        mb = size / MB
        samples = tus_mem.samples + mp_mem.samples
        figures = {
            "cpu_cores": os.cpu_count(),
            "submit": intake,
            "upload_bytes": size,
            "copy_mb_per_s": round(mb / copy_s, 1),
            "tus_mb_per_s": round(mb / tus_s, 1),
            "multipart_mb_per_s": round(mb / mp_s, 1),
            "tus_vs_copy": round(copy_s / tus_s, 2),
            "multipart_vs_copy": round(copy_s / mp_s, 2),
            "rss_idle_mb": round(idle, 1),
            "rss_before_uploads_mb": round(samples[0], 1),
            "rss_peak_during_uploads_mb": round(max(samples), 1),
            "rss_growth_mb": round(max(samples) - samples[0], 1),
            "command": "python bench/api_bench.py " + " ".join(sys.argv[1:]),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(figures, RESULTS)


if __name__ == "__main__":
    main()

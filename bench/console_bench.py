"""The web console and the job list with a full outbox.

    python bench/console_bench.py [--jobs 10000] [--repeat 5]

Writes JOBS sidecars (done, failed, expired, a few rendering) into a fresh outbox, runs
``lipsyncd serve`` on it, signs in like a browser and times: the first jobs page (every
sidecar read once), the next ones (only changed sidecars are read again), a page filtered
by state, a search by name, the second page through the cursor, and the JSON list route.
Prints the figures and writes bench/results/console.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import report  # noqa: E402
from daemon.atomic import write_atomic  # noqa: E402
from tests.api_harness import ApiProcess, new_key  # noqa: E402
from tests.daemon_harness import Share, config_text, free_port  # noqa: E402
from tests.outbox_files import new_document  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "console.json"


def fill(outbox: Path, n: int) -> None:
    states = ["done"] * 6 + ["failed", "expired", "rendering", "queued"]
    for i in range(n):
        state = states[i % len(states)]
        doc = new_document(job=f"job-{i:05d}", job_id=f"job-{i:05d}-20261101T000000Z-abcdef", host="gpu-01",
                           inputs={"audio": {"name": "a.wav", "size": 1}, "templates": [], "manifest": None},
                           engine="warp", state=state)
        doc["created_at"] = f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
        if state == "failed":
            doc["error"] = {"code": "no_face", "message": "t.mp4: no usable face", "retryable": False}
        write_atomic(outbox / f"job-{i:05d}.json", json.dumps(doc).encode())


def timed(client: httpx.Client, path: str, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return {"median_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lipsyncd-console-bench-"))
    try:
        share = Share(root / "share")
        t0 = time.perf_counter()
        fill(share.outbox, args.jobs)
        fill_s = time.perf_counter() - t0
        port = free_port()
        (root / "api.toml").write_text(config_text(share, None, "bench", extra={
            "api": {"port": port, "rate_limit": ""}, "logging": {"level": "warning", "format": "json"}}))
        api = ApiProcess(root / "api.toml", root / "api.log").start()
        try:
            key = new_key(api.cfg, "bench")
            with httpx.Client(base_url=api.url, timeout=120) as browser:
                browser.post("/signin", data={"key": key, "next": "/"})
                t0 = time.perf_counter()
                assert browser.get("/").status_code == 200
                first = round((time.perf_counter() - t0) * 1000, 1)
                page2 = browser.get("/api/v1/jobs", params={"limit": 50}).json()["next_cursor"]
                figures = {
                    "sidecars": args.jobs, "cpu_cores": os.cpu_count(),
                    "jobs_page_first_ms": first,
                    "jobs_page": timed(browser, "/", args.repeat),
                    "jobs_page_failed_only": timed(browser, "/?state=failed", args.repeat),
                    "jobs_page_search": timed(browser, "/?q=job-0999", args.repeat),
                    "jobs_page_2": timed(browser, f"/?cursor={page2}", args.repeat),
                    "api_list_50": timed(browser, "/api/v1/jobs?limit=50", args.repeat),
                    "job_page": timed(browser, "/jobs/job-00042", args.repeat),
                    "writing_sidecars_s": round(fill_s, 1),
                    "command": "python bench/console_bench.py " + " ".join(sys.argv[1:]),
                }
        finally:
            api.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(figures, RESULTS)


if __name__ == "__main__":
    main()

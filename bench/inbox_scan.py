"""Intake throughput: how long an inbox scan and a claim take with many drops waiting.

    python bench/inbox_scan.py [--pairs 2000] [--manifests 200] [--folder DIR]

Fills a fresh inbox (in a temporary folder, or under --folder to measure a real share)
with same-stem pairs and manifest jobs, then times the first scan (observes every file),
a steady-state scan (nothing settled yet), the scan that returns every job, and claiming
all of them. Prints the figures and writes bench/results/inbox_scan.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import report  # noqa: E402
from daemon import workarea  # noqa: E402
from daemon.intake import claims  # noqa: E402
from daemon.config import from_dict  # noqa: E402
from daemon.intake.inbox import Inbox  # noqa: E402
from daemon.logsetup import configure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "inbox_scan.json"


def fill(inbox: Path, pairs: int, manifests: int) -> int:
    for i in range(pairs):
        (inbox / f"pair{i:05d}.wav").write_bytes(b"a" * 64)
        (inbox / f"pair{i:05d}.mp4").write_bytes(b"v" * 64)
    for i in range(manifests):
        (inbox / f"batch{i:04d}.job.toml").write_text(
            f'audio = "speech{i:04d}.mp3"\ntemplates = ["t{i:04d}a.mp4", "t{i:04d}b.jpg"]\n')
        for name in (f"speech{i:04d}.mp3", f"t{i:04d}a.mp4", f"t{i:04d}b.jpg"):
            (inbox / name).write_bytes(b"x" * 64)
    return pairs * 2 + manifests * 4


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run(root: Path, pairs: int, manifests: int) -> dict:
    (root / "inbox").mkdir()
    cfg = from_dict({"paths": {"inbox": "inbox", "done": "done", "failed": "failed", "state": "state"},
                     "watch": {"settle_seconds": 3}, "cluster": {"host_id": "bench"}}, base=root)
    files = fill(cfg.paths.inbox, pairs, manifests)
    inbox = Inbox(cfg)
    first, t_first = timed(lambda: inbox.scan(now=0))
    steady, t_steady = timed(lambda: inbox.scan(now=1))
    specs, t_ready = timed(lambda: inbox.scan(now=3))
    assert first == [] and steady == [] and len(specs) == pairs + manifests
    workarea.prepare_work_area(cfg)
    per_claim = []
    for spec in specs:
        job, t = timed(lambda s=spec: claims.claim(s, cfg))
        assert job is not None
        per_claim.append(t)
    return {
        "files": files, "jobs": len(specs),
        "first_scan_s": round(t_first, 4), "steady_scan_s": round(t_steady, 4), "ready_scan_s": round(t_ready, 4),
        "scan_us_per_file": round(t_steady / files * 1e6, 1),
        "claim_median_ms": round(statistics.median(per_claim) * 1000, 3),
        "claim_p95_ms": round(sorted(per_claim)[int(len(per_claim) * 0.95)] * 1000, 3),
        "claims_per_s": round(len(per_claim) / sum(per_claim), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--manifests", type=int, default=200)
    ap.add_argument("--folder", type=Path, default=None, help="where to create the inbox (default: a temp folder)")
    args = ap.parse_args()
    configure(level="warning")  # one line per claim would drown the figures
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        figures = run(Path(tmp), args.pairs, args.manifests)
    report(figures, RESULTS)


if __name__ == "__main__":
    main()

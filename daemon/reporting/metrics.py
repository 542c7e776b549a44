"""Prometheus metrics in the text exposition format (0.0.4), served on a local port.

Two kinds of figures:

* counted as jobs finish (:meth:`Metrics.observe_job`, called by the worker with the
  final sidecar): render seconds (histogram), uploaded bytes, finished jobs by outcome;
* read at scrape time: jobs by state and queue depth (from the sidecars, cached for a few
  seconds so a busy scraper cannot turn into a disk scan loop), free disk space of each
  configured area, and GPU memory when CUDA is in use.

The server is the standard library's; it answers ``GET /metrics`` only and binds to
``metrics.bind`` (127.0.0.1 by default: metrics are not for the whole network).
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from daemon.reporting import status
from daemon.config import Config
from daemon.logsetup import get_logger

log = get_logger("lipsyncd.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RENDER_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
SCAN_CACHE_SECONDS = 5.0

Labels = dict[str, str]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def _sample(name: str, labels: Labels, value: float) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {_number(value)}"
    return f"{name} {_number(value)}"


def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> list[str]:
    """One metric family: HELP and TYPE lines followed by its samples."""
    lines = [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}"]
    lines += [_sample(name, labels, value) for labels, value in samples]
    return lines


class Histogram:
    def __init__(self, buckets: Iterable[float]):
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * len(self.bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} histogram"]
        for bound, n in zip(self.bounds, self.counts):
            out.append(_sample(f"{name}_bucket", {"le": _number(bound)}, n))
        out.append(_sample(f"{name}_bucket", {"le": "+Inf"}, self.count))
        out.append(_sample(f"{name}_sum", {}, self.sum))
        out.append(_sample(f"{name}_count", {}, self.count))
        return out


class Metrics:
    """The daemon's figures. Thread-safe: jobs finish on the worker, scrapes on the server."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._render = Histogram(RENDER_BUCKETS)
        self._upload_bytes = 0
        self._upload_seconds = 0.0
        self._finished = {"done": 0, "failed": 0}
        self._scan: tuple[float, dict[str, int]] | None = None

    # ---------------------------------------------------------------- events
    def observe_job(self, doc: dict[str, Any]) -> None:
        """Count a finished job from its final sidecar (a worker ``on_finished`` hook)."""
        state = doc.get("state")
        if state not in self._finished:
            return
        timings = doc.get("timings") or {}
        uploaded = sum(int(o.get("size") or 0) for o in doc.get("outputs", []) if o.get("state") == "done")
        with self._lock:
            self._finished[state] += 1
            if timings.get("render_seconds") is not None:
                self._render.observe(float(timings["render_seconds"]))
            self._upload_bytes += uploaded
            self._upload_seconds += float(timings.get("upload_seconds") or 0)

    # ---------------------------------------------------------------- exposition
    def job_counts(self) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            cached = self._scan
        if cached is not None and now - cached[0] < SCAN_CACHE_SECONDS:
            return cached[1]
        counts = status.counts(status.collect(self.cfg))
        with self._lock:
            self._scan = (now, counts)
        return counts

    def render(self) -> str:
        lines: list[str] = []
        counts = self.job_counts()
        lines += family("lipsyncd_jobs", "gauge", "Jobs by state, from the sidecars and the work area.",
                        [({"state": s}, n) for s, n in counts.items()])
        lines += family("lipsyncd_queue_depth", "gauge", "Jobs claimed and waiting to render.",
                        [({}, counts.get("queued", 0))])
        with self._lock:
            lines += family("lipsyncd_jobs_finished_total", "counter", "Jobs finished since start, by outcome.",
                            [({"state": s}, n) for s, n in self._finished.items()])
            lines += self._render.lines("lipsyncd_render_seconds", "Seconds spent rendering each finished job.")
            lines += family("lipsyncd_upload_bytes_total", "counter", "Bytes of video uploaded since start.",
                            [({}, self._upload_bytes)])
            lines += family("lipsyncd_upload_seconds_total", "counter", "Seconds spent uploading since start.",
                            [({}, self._upload_seconds)])
        lines += family("lipsyncd_disk_free_bytes", "gauge", "Free space on the filesystem of each area.",
                        [({"area": a}, free) for a, free in self._disk_free()])
        gpu = gpu_memory()
        if gpu:
            lines += family("lipsyncd_gpu_memory_free_bytes", "gauge", "Free memory of each CUDA device.",
                            [({"device": d}, free) for d, free, _total, _used in gpu])
            lines += family("lipsyncd_gpu_memory_total_bytes", "gauge", "Total memory of each CUDA device.",
                            [({"device": d}, total) for d, _free, total, _used in gpu])
            lines += family("lipsyncd_gpu_memory_allocated_bytes", "gauge", "Memory held by lipsyncd's tensors.",
                            [({"device": d}, used) for d, _free, _total, used in gpu])
        return "\n".join(lines) + "\n"

    def _disk_free(self) -> list[tuple[str, int]]:
        p = self.cfg.paths
        areas: list[tuple[str, Path | None]] = [("inbox", p.inbox), ("work", self.cfg.work_dir), ("outbox", p.outbox),
                                                ("state", p.state), ("outputs", p.outputs)]
        out = []
        for area, path in areas:
            if path is None:
                continue
            probe = path
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent  # an area not created yet lives on its parent's filesystem
            try:
                out.append((area, shutil.disk_usage(probe).free))
            except OSError:
                continue  # an unmounted share: no figure rather than a wrong one
        return out


def gpu_memory() -> list[tuple[str, int, int, int]]:
    """(device, free, total, allocated by us) per CUDA device already in use, else []."""
    torch = sys.modules.get("torch")  # only report what the renderer loaded: never import it here
    if torch is None:
        return []
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            out.append((f"cuda:{i}", int(free), int(total), int(torch.cuda.memory_allocated(i))))
        return out
    except Exception as e:  # a driver problem must not break the other metrics
        log.warning("GPU memory figures unavailable", error=f"{type(e).__name__}: {e}")
        return []


# --------------------------------------------------------------------------- the server


class MetricsServer:
    """``GET /metrics`` on ``bind:port`` in a background thread; :meth:`close` stops it."""

    def __init__(self, metrics: Metrics, bind: str, port: int):
        self.metrics = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?")[0] not in ("/metrics", "/metrics/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = metrics.render().encode()
                except Exception as e:
                    log.error("metrics could not be produced", error=f"{type(e).__name__}: {e}")
                    self.send_error(500, "metrics unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # one line per scrape would drown the journal

        self._server = ThreadingHTTPServer((bind, port), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics served", bind=self.address[0], port=self.address[1])
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_metrics_server(cfg: Config, metrics: Metrics | None = None, *,
                         port: int | None = None) -> MetricsServer | None:
    """Serve metrics when ``metrics.enabled``; None otherwise. ``port`` 0 picks a free one (tests)."""
    if not cfg.metrics.enabled:
        return None
    return MetricsServer(metrics or Metrics(cfg), cfg.metrics.bind, cfg.metrics.port if port is None else port).start()

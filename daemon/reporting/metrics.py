"""Prometheus metrics, through ``prometheus_client``, served on a local port.

Two kinds of figures:

* counted as jobs finish (:meth:`Metrics.observe_job`, called by the worker with the
  final sidecar): render seconds (histogram), uploaded bytes and seconds, finished jobs
  by outcome -- ordinary ``prometheus_client`` counters and a histogram;
* read at scrape time by a custom collector: jobs by state and queue depth (from one
  outbox scan, cached for a few seconds so a busy scraper cannot turn into a disk scan
  loop), free disk space of each configured area, and GPU memory when CUDA is in use.

Metric names (unchanged since the first release): ``lipsyncd_jobs{state}``,
``lipsyncd_queue_depth``, ``lipsyncd_jobs_finished_total{state}``,
``lipsyncd_render_seconds`` (histogram), ``lipsyncd_upload_bytes_total``,
``lipsyncd_upload_seconds_total``, ``lipsyncd_disk_free_bytes{area}`` and
``lipsyncd_gpu_memory_{free,total,allocated}_bytes{device}``.

The server answers ``GET /metrics`` only and binds to ``metrics.bind`` (127.0.0.1 by
default: metrics are not for the whole network).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from daemon.config import Config
from daemon.logsetup import get_logger
from daemon.outbox import State
from daemon.reporting import status

log = get_logger(__name__)

RENDER_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
SCAN_CACHE_SECONDS = 5.0
FINISHED_STATES = (State.DONE, State.FAILED)

# the *_created samples (a counter's start time) mean nothing to lipsyncd's users
disable_created_metrics()


class _ScrapeTimeFigures(Collector):
    """Figures that are read when Prometheus asks, not counted as things happen."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # registering must not scan the outbox; the names are not known in advance

    def collect(self) -> Iterator[Metric]:
        counts = self.metrics.job_counts()
        jobs = GaugeMetricFamily("lipsyncd_jobs", "Jobs by state, from the sidecars and the work area.",
                                 labels=["state"])
        for state, n in counts.items():
            if state != "in_line":
                jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily("lipsyncd_queue_depth", "Jobs that will run: claimed and queued, or complete "
                                "in the inbox.", value=counts.get("in_line", 0))
        disk = GaugeMetricFamily("lipsyncd_disk_free_bytes", "Free space on the filesystem of each area.",
                                 labels=["area"])
        for area, free in self.metrics.disk_free():
            disk.add_metric([area], free)
        yield disk
        slots = self.metrics.slots()
        if slots:
            busy = GaugeMetricFamily("lipsyncd_render_slot_busy", "1 while the render slot (a device, or a CPU "
                                     "worker) renders a job, else 0.", labels=["slot"])
            for label, job in slots:
                busy.add_metric([label], 1 if job else 0)
            yield busy
        remote = self.metrics.remote_servers()
        if remote:
            up = GaugeMetricFamily("lipsyncd_heygem_server_up", "1 while the HeyGem server answers, 0 while it "
                                   "is marked down.", labels=["server"])
            busy = GaugeMetricFamily("lipsyncd_heygem_server_busy", "1 while the HeyGem server renders a task "
                                     "of this daemon.", labels=["server"])
            since = GaugeMetricFamily("lipsyncd_heygem_server_down_since_seconds", "Unix time since which the "
                                      "HeyGem server is marked down (only while it is).", labels=["server"])
            for row in remote:
                up.add_metric([row["server"]], 0 if row["state"] == "down" else 1)
                busy.add_metric([row["server"]], 1 if row["state"] == "busy" else 0)
                if row.get("down_since"):
                    since.add_metric([row["server"]], float(row["down_since"]))
            yield up
            yield busy
            yield since
        gpu = gpu_memory()
        if gpu:
            for kind, index, text in (("free", 1, "Free memory of each CUDA device."),
                                      ("total", 2, "Total memory of each CUDA device."),
                                      ("allocated", 3, "Memory held by lipsyncd's tensors.")):
                family = GaugeMetricFamily(f"lipsyncd_gpu_memory_{kind}_bytes", text, labels=["device"])
                for row in gpu:
                    family.add_metric([row[0]], row[index])
                yield family


class Metrics:
    """The daemon's figures in a registry of their own. Thread-safe (prometheus_client is)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._scan: tuple[float, dict[str, int]] | None = None
        # (slot label, job or None) of the daemon's render slots, set by the worker
        self.slots: Callable[[], list[tuple[str, str | None]]] = list
        # the HeyGem servers of the daemon's remote engine: state, job, down since; set by the worker
        self.remote_servers: Callable[[], list[dict]] = list
        self.registry = CollectorRegistry()
        self._finished = Counter("lipsyncd_jobs_finished", "Jobs finished since start, by outcome.", ["state"],
                                 registry=self.registry)
        for state in FINISHED_STATES:
            self._finished.labels(state=state)  # present at 0 before the first job finishes
        self._render = Histogram("lipsyncd_render_seconds", "Seconds spent rendering each finished job.",
                                 buckets=RENDER_BUCKETS, registry=self.registry)
        self._upload_bytes = Counter("lipsyncd_upload_bytes", "Bytes of video uploaded since start.",
                                     registry=self.registry)
        self._upload_seconds = Counter("lipsyncd_upload_seconds", "Seconds spent uploading since start.",
                                       registry=self.registry)
        self.registry.register(_ScrapeTimeFigures(self))

    def observe_job(self, doc: dict[str, Any]) -> None:
        """Count a finished job from its final sidecar (a worker ``on_finished`` hook)."""
        state = State.of(doc)
        if state not in FINISHED_STATES:
            return
        timings = doc.get("timings") or {}
        self._finished.labels(state=state).inc()
        if timings.get("render_seconds") is not None:
            self._render.observe(float(timings["render_seconds"]))
        self._upload_bytes.inc(sum(int(o.get("size") or 0) for o in doc.get("outputs", [])
                                   if o.get("state") == State.DONE))
        self._upload_seconds.inc(float(timings.get("upload_seconds") or 0))

    def job_counts(self) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            cached = self._scan
        if cached is not None and now - cached[0] < SCAN_CACHE_SECONDS:
            return cached[1]
        jobs = status.collect(self.cfg)
        counts = {**status.counts(jobs), "in_line": status.in_line(jobs)}
        with self._lock:
            self._scan = (now, counts)
        return counts

    def disk_free(self) -> list[tuple[str, int]]:
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
        base = MetricsHandler.factory(metrics.registry)

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?")[0] not in ("/metrics", "/metrics/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                super().do_GET()

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

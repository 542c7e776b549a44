"""What runs beside the job pipeline: hooks on finished jobs and background services.

The worker knows nothing about webhooks, metrics or schedules; it calls every
``on_finished`` hook with a job's final sidecar, starts every service once the store is
open and stops them at shutdown. A new feature plugs in here with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.config import Config
from daemon.housekeeping.scheduler import start_scheduler
from daemon.reporting.metrics import Metrics, start_metrics_server
from daemon.reporting.notify import Notifier
from daemon.storage import Store

FinishedHook = Callable[[dict[str, Any]], None]
Stop = Callable[[], None]
# started with the open store once the daemon is ready; returns how to stop it (or None)
Service = Callable[[Store], Stop | None]

NOTIFY_CLOSE_GRACE = 10.0  # seconds pending webhooks get at shutdown


@dataclass
class Extensions:
    on_finished: list[FinishedHook] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    metrics: Metrics | None = None  # the worker tells it about its render slots


def default_extensions(cfg: Config) -> Extensions:
    ext = Extensions()
    notifier = Notifier.from_config(cfg)
    ext.on_finished.append(notifier)

    def stop_notifier(_store: Store) -> Stop:
        return lambda: notifier.close(grace=NOTIFY_CLOSE_GRACE)

    ext.services.append(stop_notifier)

    metrics = ext.metrics = Metrics(cfg)
    ext.on_finished.append(metrics.observe_job)

    def serve_metrics(_store: Store) -> Stop | None:
        server = start_metrics_server(cfg, metrics)
        return server.close if server is not None else None

    ext.services.append(serve_metrics)

    if cfg.api.enabled:
        def serve_api(store: Store) -> Stop:
            from daemon.api.server import BackgroundServer  # FastAPI loads only when the API is on

            return BackgroundServer(cfg, store, metrics).start().stop

        ext.services.append(serve_api)

    def run_schedules(store: Store) -> Stop:
        scheduler = start_scheduler(cfg, store)
        return lambda: scheduler.shutdown(wait=True)  # a running refresh needs the store still open

    ext.services.append(run_schedules)
    return ext

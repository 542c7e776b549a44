"""Health and the service at a glance: ``/healthz`` (public: the process is up),
``/readyz``, ``/metrics`` and ``/api/v1/status`` (a key or a session)."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.api.deps import API, Caller, ServicesDep, StoreProvider
from daemon.api.drops import api_dir
from daemon.api.errors import responses
from daemon.config import Config
from daemon.errors import StorageError
from daemon.reporting import status

router = APIRouter(tags=["health"])
STATUS_CACHE = 10.0  # seconds; the HeyGem probes take a moment and every console page shows the strip


@router.get("/healthz", operation_id="healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", summary="The inbox is writable and the store answers",
            description="Open to probes (Kubernetes, load balancers): without a key the answer says only "
                        "ready or not and which check failed; with a key, why.",
            responses=responses(503))
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    checks = await anyio.to_thread.run_sync(readiness, services.cfg, services.store)
    ok = all(c["ok"] for c in checks.values())
    if getattr(request.state, "principal", None) is None:  # a probe: no detail about the store
        checks = {name: {"ok": c["ok"]} for name, c in checks.items()}
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", operation_id="metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
            responses=responses(401))
async def prometheus(services: ServicesDep, _who: Caller) -> PlainTextResponse:
    body = await anyio.to_thread.run_sync(generate_latest, services.metrics.registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


@router.get(f"{API}/status", operation_id="serviceStatus",
            summary="The service at a glance: daemons on the share, engines, HeyGem servers, store, queue",
            responses=responses(401))
async def service_status(services: ServicesDep, _who: Caller) -> dict[str, Any]:
    cfg, probes = services.cfg, services.glance
    # the slow part (HeyGem servers, the store) at most every STATUS_CACHE seconds; the jobs
    # and daemons whenever the outbox or a daemon's presence changed, so a finished job
    # never shows as rendering on a page that already shows it done
    if probes.value is None or time.monotonic() - probes.at > STATUS_CACHE:
        probes.value = await anyio.to_thread.run_sync(slow_probes, cfg, services.store)
        probes.at = time.monotonic()
    stamp = _stamp(cfg.paths.outbox), _stamp(cfg.work_dir)
    jobs = services.jobs_view
    if jobs.value is None or jobs.at != stamp:
        jobs.value = await anyio.to_thread.run_sync(jobs_view, cfg)
        jobs.at = stamp
    return {**jobs.value, **probes.value, "engine": cfg.render.engine}


def readiness(cfg: Config, store: StoreProvider) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        folder = api_dir(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ready-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        checks["inbox"] = {"ok": True}
    except OSError as e:
        checks["inbox"] = {"ok": False, "error": e.strerror or "not writable"}
    try:
        store().ping()
        checks["storage"] = {"ok": True, "bucket": cfg.storage.bucket}
    except StorageError as e:
        checks["storage"] = {"ok": False, "bucket": cfg.storage.bucket, "error": e.message}
    return checks


def slow_probes(cfg: Config, store: StoreProvider) -> dict[str, Any]:
    try:
        store().ping()
        storage = {"ok": True, "detail": f"bucket {cfg.storage.bucket}"}
    except StorageError as e:
        storage = {"ok": False, "detail": e.message}
    return {"heygem": status.remote_servers(cfg, timeout=1.5), "storage": storage}


def jobs_view(cfg: Config) -> dict[str, Any]:
    jobs = status.collect(cfg)
    return {"daemons": status.daemons_on_share(cfg), "queue": status.in_line(jobs), "counts": status.counts(jobs)}


def _stamp(folder) -> int:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return 0

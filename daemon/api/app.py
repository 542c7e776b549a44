"""The HTTP API as a FastAPI application, assembled from its parts.

* :mod:`daemon.api.access` -- who may do what, decided before routing (every request);
* :mod:`daemon.api.routes` -- one router per resource: jobs, uploads (tus 1.0), templates,
  links, health, docs; :mod:`daemon.api.console` -- the web console's pages;
* :mod:`daemon.api.errors` -- one error shape for every failure, the framework's included.

The app only reads and writes the share (and, for links and deletes, the store); it never
renders. One process may serve it alone (``lipsyncd serve``) or inside ``lipsyncd run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from lipsync import __version__

from daemon.api import console, openapi_extras
from daemon.api.access import AccessGate, Gatekeeper
from daemon.api.auth import KeyRing, RateLimiter, Sessions
from daemon.api.deps import Services, StoreProvider
from daemon.api.drops import sweep_stale_staging
from daemon.api.errors import install as install_errors
from daemon.api.jobdesk import JobDesk
from daemon.api.routes import docs, health, jobs, links, templates, uploads
from daemon.api.uploads import UploadStore
from daemon.config import Config, parse_rate
from daemon.confine import PathScrubber
from daemon.logsetup import get_logger
from daemon.reporting.metrics import Metrics
from daemon.storage.permalinks import load_signer

log = get_logger(__name__)
SWEEP_EVERY = 600.0

__all__ = ["StoreProvider", "create_app", "make_services"]


def make_services(cfg: Config, store: StoreProvider, metrics: Metrics | None = None) -> Services:
    keys = KeyRing(cfg.api_keys_file)
    signer = load_signer(cfg.link_secret_file)
    sessions = Sessions(signer.derived_key(b"console-session"), keys)
    rate = parse_rate(cfg.api.rate_limit)
    limiter = RateLimiter(*rate) if rate else None
    scrub = PathScrubber.for_config(cfg)
    return Services(cfg=cfg, store=store, metrics=metrics or Metrics(cfg), desk=JobDesk(cfg), keys=keys,
                    sessions=sessions, limiter=limiter, signer=signer, scrub=scrub,
                    gatekeeper=Gatekeeper(cfg, keys, sessions, limiter),
                    uploads=UploadStore(uploads_dir(cfg), max_size=int(cfg.limits.max_file_size),
                                        expiry=float(cfg.api.upload_expiry)))


def uploads_dir(cfg: Config):
    """Where tus uploads collect: on the inbox's filesystem, so a job takes them by rename."""
    return cfg.paths.inbox / ".lipsyncd" / "uploads"


def create_app(cfg: Config, *, store: StoreProvider, metrics: Metrics | None = None) -> FastAPI:
    services = make_services(cfg, store, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweeper(services))
        log.info("http api ready", url=cfg.api_base_url, auth=cfg.api.auth)
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(
        title="lipsyncd", version=__version__, lifespan=lifespan, redirect_slashes=False,
        summary="Lip-synced talking-head videos from an audio file and a video or photo of a person.",
        description="Submit a job (audio + one or more templates), follow it, get permanent links to the "
                    "videos. Jobs are dropped into the inbox that lipsyncd daemons watch; the API itself never "
                    "renders. Authenticate with `Authorization: Bearer KEY`.",
        openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None,
        servers=[{"url": cfg.api_base_url}],
    )
    app.state.services = services
    app.state.scrub_paths = services.scrub
    install_errors(app)
    for module in (health, docs, jobs, uploads, templates, links):
        app.include_router(module.router)
    app.include_router(jobs.events_router)
    console.install(app)
    openapi_extras.install(app)
    app.add_middleware(AccessGate, gatekeeper=services.gatekeeper)
    return app


async def _sweeper(services: Services) -> None:
    """Delete tus uploads no job took within api.upload_expiry, and dead staging folders."""
    while True:
        try:
            await anyio.to_thread.run_sync(sweep_stale_staging, services.cfg)
            await anyio.to_thread.run_sync(services.uploads.sweep)
        except Exception as e:  # noqa: BLE001 - a sweep that fails is tried again next time
            log.warning("upload sweep failed", error=str(e))
        await asyncio.sleep(SWEEP_EVERY)

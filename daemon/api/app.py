"""The HTTP API as a FastAPI application: :func:`create_app` wires the routes to the share.

Routes (all documented in the OpenAPI document at ``/api/v1/openapi.json``):

* ``POST /api/v1/jobs`` submit; ``GET /api/v1/jobs`` list; ``GET /api/v1/jobs/{name}``
  one sidecar; ``GET /api/v1/jobs/{name}/events`` Server-Sent Events; ``DELETE`` withdraw,
  cancel or delete; ``POST /api/v1/jobs/{name}/retry``.
* ``/api/v1/uploads``: tus 1.0 resumable uploads (tuspyserver), used by ``*_upload``.
* ``GET /l/{token}``: permanent links. ``/healthz``, ``/readyz``, ``/metrics``, docs.

The app only reads and writes the share (and, for links and deletes, the store); it never
renders. One process may serve it alone (``lipsyncd serve``) or inside ``lipsyncd run``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tuspyserver import create_tus_router

from lipsync import __version__

from daemon.api import console, docs_page, openapi_extras, templates_api
from daemon.api.auth import SESSION_COOKIE, KeyRing, Principal, RateLimiter, Sessions, retry_after_header
from daemon.api.drops import Staging, api_dir, clean_job_name, sweep_stale_staging
from daemon.api.errors import ApiError, install as install_errors, responses
from daemon.api.jobdesk import LIST_STATES, JobDesk
from daemon.api.submit import check_options, gather, probe_staged, read_request
from daemon.config import Config, parse_rate
from daemon.errors import StorageError
from daemon.intake.names import job_stem
from daemon.logsetup import get_logger
from daemon.outbox import State
from daemon.reporting.metrics import Metrics
from daemon.storage import Store
from daemon.storage.permalinks import load_signer

log = get_logger(__name__)
API = "/api/v1"
CONSOLE_HEADER = "X-Lipsyncd-Console"
EVENT_POLL = 0.2  # seconds between looks at a sidecar while streaming its events
KEEPALIVE = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream
SWEEP_EVERY = 600.0
FINAL = {State.DONE, State.FAILED, State.EXPIRED}

StoreProvider = Callable[[], Store]


def uploads_dir(cfg: Config) -> Path:
    """Where tus uploads collect: on the inbox's filesystem, so a job takes them by rename."""
    return cfg.paths.inbox / ".lipsyncd" / "uploads"


def create_app(cfg: Config, *, store: StoreProvider, metrics: Metrics | None = None) -> FastAPI:
    keys = KeyRing(cfg.api_keys_file)
    rate = parse_rate(cfg.api.rate_limit)
    limiter = RateLimiter(*rate) if rate else None
    desk = JobDesk(cfg)
    signer = load_signer(cfg.link_secret_file)
    metrics = metrics or Metrics(cfg)
    bearer = HTTPBearer(auto_error=False, description="an API key from `lipsyncd api-key create NAME`")
    base_url = cfg.api_base_url

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweeper(cfg))
        log.info("http api ready", url=base_url, auth=cfg.api.auth)
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(
        title="lipsyncd", version=__version__, lifespan=lifespan,
        summary="Lip-synced talking-head videos from an audio file and a video or photo of a person.",
        description="Submit a job (audio + one or more templates), follow it, get permanent links to the "
                    "videos. Jobs are dropped into the inbox that lipsyncd daemons watch; the API itself never "
                    "renders. Authenticate with `Authorization: Bearer KEY`.",
        openapi_url=f"{API}/openapi.json", docs_url=None, redoc_url=None,
        servers=[{"url": base_url}],
    )
    install_errors(app)

    sessions = Sessions(signer.derived_key(b"console-session"), keys)

    def caller(write: bool) -> Callable[..., Principal]:
        def dependency(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
            who = _identify(request, credentials, write)
            bucket = f"key:{who.name}" if who.name != "anonymous" else \
                f"addr:{request.client.host if request.client else '?'}"
            if limiter is not None:
                wait = limiter.take(bucket)
                if wait > 0:
                    raise ApiError(429, "rate_limited", f"more than api.rate_limit ({cfg.api.rate_limit}) requests; "
                                   f"retry in {math.ceil(wait)} s", headers={"Retry-After": retry_after_header(wait)})
            if write and not who.can_write:
                raise ApiError(403, "forbidden", f"the key {who.name!r} is read-only" if who.name != "anonymous"
                               else "sign in with an API key to change jobs")
            return who
        return dependency

    def viewer(request: Request) -> Principal | None:
        """Who a caller is without an API key: everyone with ``auth = "none"``, else the
        console session's key, else an anonymous reader where that is allowed; or None."""
        if cfg.api.auth == "none":
            return Principal("anonymous", "full")
        who = sessions.check(request.cookies.get(SESSION_COOKIE))
        if who is None and cfg.api.console_read_only_without_key:
            return Principal("anonymous", "read")
        return who

    def _identify(request: Request, credentials: HTTPAuthorizationCredentials | None, write: bool) -> Principal:
        if cfg.api.auth != "none" and credentials is not None and credentials.scheme.lower() == "bearer":
            who = keys.lookup(credentials.credentials)
            if who is None:
                raise ApiError(401, "unauthorized", "the API key is not valid (revoked or mistyped)",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return who
        who = viewer(request)
        anonymous_reader = who is not None and who.name == "anonymous" and not who.can_write
        if who is None or (anonymous_reader and request.method not in ("GET", "HEAD")):
            raise ApiError(401, "unauthorized", "send an API key: Authorization: Bearer KEY",
                           headers={"WWW-Authenticate": "Bearer"})
        # a cookie rides along with any request the browser makes, also ones another site
        # triggers: changes need a header only our own pages' scripts send (CSRF)
        if write and who.name != "anonymous" and request.headers.get(CONSOLE_HEADER) != "1":
            raise ApiError(403, "forbidden", f"requests signed in by cookie must carry {CONSOLE_HEADER}: 1")
        return who

    reader, writer = caller(False), caller(True)

    def links_for(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "status_url": f"{base_url}{API}/jobs/{quote(doc.get('job', ''), safe='')}"}

    # -- health ---------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], operation_id="healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], operation_id="readyz", summary="The inbox is writable and the store answers",
             responses=responses(503))
    async def readyz(_who: Principal = Depends(reader)) -> JSONResponse:
        checks = await anyio.to_thread.run_sync(_readiness, cfg, store)
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], operation_id="metrics", summary="Prometheus metrics",
             response_class=PlainTextResponse)
    async def prometheus(_who: Principal = Depends(reader)) -> PlainTextResponse:
        body = await anyio.to_thread.run_sync(generate_latest, metrics.registry)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    @app.get(f"{API}/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page.render(app.openapi()))

    # -- jobs -----------------------------------------------------------------------------
    @app.post(f"{API}/jobs", status_code=202, tags=["jobs"], operation_id="submitJob",
              summary="Submit a job: an audio and one or more templates",
              description=openapi_extras.SUBMIT_DESCRIPTION, openapi_extra=openapi_extras.SUBMIT_BODY,
              responses={202: openapi_extras.ACCEPTED, **responses(400, 401, 403, 404, 409, 413, 415, 422, 429)})
    async def submit(request: Request, who: Principal = Depends(writer)) -> JSONResponse:
        staging = await anyio.to_thread.run_sync(Staging, cfg)
        try:
            req = await read_request(request, staging, cfg)
            name, options = await anyio.to_thread.run_sync(check_options, req, cfg)
            audio, templates, fields = await anyio.to_thread.run_sync(
                lambda: gather(req, staging, cfg, uploads_dir=uploads_dir(cfg)))
            await anyio.to_thread.run_sync(probe_staged, staging, audio, templates, cfg, fields)
            first = audio or next((t for where, t in templates if where == "staged"), None) or templates[0][1]
            name = name or clean_job_name(job_stem(first.rsplit("/", 1)[-1])) or "job"
            published = await anyio.to_thread.run_sync(
                lambda: staging.publish(name, audio=audio, templates=templates, options=options,
                                        subtitles=req.subtitle_file))
        except BaseException:
            await anyio.to_thread.run_sync(staging.discard)
            raise
        log.info("job submitted", job=published, by=who.name, templates=len(templates))
        url = f"{base_url}{API}/jobs/{quote(published, safe='')}"
        return JSONResponse({"name": published, "state": "waiting", "status_url": url, "events_url": f"{url}/events"},
                            status_code=202, headers={"Location": url})

    @app.get(f"{API}/jobs", tags=["jobs"], operation_id="listJobs", summary="A page of jobs, newest first",
             responses=responses(400, 401, 429))
    async def list_jobs(
        state: str | None = Query(None, description=f"only jobs in this state: {', '.join(LIST_STATES)}"),
        limit: int = Query(50, ge=1, le=500, description="jobs per page"),
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
        q: str | None = Query(None, max_length=200, description="only jobs whose name contains this text"),
        _who: Principal = Depends(reader),
    ) -> dict[str, Any]:
        if state is not None and state not in LIST_STATES:
            raise ApiError(400, "bad_request", f"state: {state!r} is not one of {', '.join(LIST_STATES)}", field="state")
        jobs, next_cursor = await anyio.to_thread.run_sync(
            lambda: desk.page(state=state, limit=limit, cursor=cursor, query=q))
        return {"jobs": [links_for(d) for d in jobs], "next_cursor": next_cursor}

    job_name = PathParam(..., description="the job name, as returned by submitJob", max_length=400)

    @app.get(f"{API}/jobs/{{name}}", tags=["jobs"], operation_id="getJob",
             summary="A job's sidecar: state, progress, links, error",
             responses=responses(401, 404, 429))
    async def get_job(name: str = job_name, _who: Principal = Depends(reader)) -> dict[str, Any]:
        doc = await anyio.to_thread.run_sync(desk.find, name)
        if doc is None:
            raise ApiError(404, "not_found", f"no job {name!r}", field="name")
        return links_for(doc)

    @app.get(f"{API}/jobs/{{name}}/events", tags=["jobs"], operation_id="jobEvents",
             summary="Server-Sent Events: the sidecar each time it changes, until done or failed",
             response_class=StreamingResponse, responses={200: openapi_extras.EVENTS, **responses(401, 404, 429)})
    async def job_events(request: Request, name: str = job_name, _who: Principal = Depends(reader)) -> StreamingResponse:
        first = await anyio.to_thread.run_sync(desk.find, name)
        if first is None:
            raise ApiError(404, "not_found", f"no job {name!r}", field="name")
        return StreamingResponse(_events(request, desk, name, first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get(f"{API}/events", tags=["jobs"], operation_id="jobsEvents",
             summary="Server-Sent Events for several jobs at once (a page of a job list)",
             response_class=StreamingResponse, responses={200: openapi_extras.EVENTS, **responses(400, 401, 429)})
    async def jobs_events(request: Request,
                          name: list[str] = Query(..., description="a job name; repeat for several (at most 200)"),
                          _who: Principal = Depends(reader)) -> StreamingResponse:
        if len(name) > 200:
            raise ApiError(400, "bad_request", "name: at most 200 jobs per stream", field="name")
        return StreamingResponse(_many_events(request, desk, list(dict.fromkeys(name))),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.delete(f"{API}/jobs/{{name}}", tags=["jobs"], operation_id="deleteJob",
                summary="Withdraw a waiting job, cancel a running one, or delete a finished one's videos",
                responses={200: openapi_extras.DELETED, **responses(401, 403, 404, 409, 429, 503)})
    async def delete_job(name: str = job_name, who: Principal = Depends(writer)) -> JSONResponse:
        def act() -> dict[str, Any]:
            handle = _store_or_none(store)
            return desk.delete(name, store=handle, by=f"api key {who.name}").as_dict()
        result = await anyio.to_thread.run_sync(act)
        return JSONResponse(result, status_code=202 if result["action"] == "cancel_requested" else 200)

    @app.post(f"{API}/jobs/{{name}}/retry", status_code=202, tags=["jobs"], operation_id="retryJob",
              summary="Drop a failed job's inputs into the inbox again",
              responses={202: openapi_extras.ACCEPTED, **responses(401, 403, 404, 409, 429)})
    async def retry_job(name: str = job_name, who: Principal = Depends(writer)) -> JSONResponse:
        published = await anyio.to_thread.run_sync(desk.retry, name)
        log.info("job retried", job=published, by=who.name)
        url = f"{base_url}{API}/jobs/{quote(published, safe='')}"
        return JSONResponse({"name": published, "state": "waiting", "status_url": url, "events_url": f"{url}/events"},
                            status_code=202)

    # -- permanent links --------------------------------------------------------------------
    @app.get("/l/{token}", tags=["links"], operation_id="openLink", status_code=307,
             summary="A permanent link: redirects to a freshly signed URL of the video",
             responses={307: {"description": "redirect to the video"}, **responses(404, 410, 503)})
    async def open_link(token: str = PathParam(..., description="the token of a link from a sidecar's outputs[].link",
                                               max_length=2048),
                        download: bool = Query(False, description="true: save the file instead of playing it")
                        ) -> RedirectResponse:
        key = signer.key_of(token)
        if key is None or not key.startswith(cfg.storage.prefix):
            raise ApiError(404, "not_found", "no such link")

        def sign() -> str:
            handle = store()
            if handle.head(key) is None:
                raise ApiError(410, "gone", "this video was deleted")
            lifetime = min(float(cfg.api.link_redirect_lifetime), handle.max_link_lifetime())
            url, _expires = handle.presign_get(key, lifetime=lifetime, filename=key.rsplit("/", 1)[-1],
                                               disposition="attachment" if download else None)
            return url
        try:
            url = await anyio.to_thread.run_sync(sign)
        except StorageError as e:
            raise ApiError(503, "storage_unavailable", f"the store is not reachable: {e.message}",
                           headers={"Retry-After": "30"}) from None
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})

    # -- resumable uploads (tus 1.0) -----------------------------------------------------------
    tus = create_tus_router(prefix=f"{API}/uploads", files_dir=str(uploads_dir(cfg)),
                            max_size=int(cfg.limits.max_file_size), auth=writer,
                            days_to_keep=max(1, math.ceil(float(cfg.api.upload_expiry) / 86400)),
                            tags=["uploads"])
    app.include_router(tus)
    ctx = Context(cfg=cfg, desk=desk, store=store, reader=reader, writer=writer, viewer=viewer,
                  sessions=sessions, signer=signer, base_url=base_url)
    templates_api.register(app, ctx)
    console.register(app, ctx)
    openapi_extras.install(app)
    return app


@dataclass
class Context:
    """What the route modules beside this one (templates, console) are given."""

    cfg: Config
    desk: JobDesk
    store: StoreProvider
    reader: Callable[..., Principal]
    writer: Callable[..., Principal]
    viewer: Callable[[Request], Principal | None]
    sessions: Sessions
    signer: Any
    base_url: str


async def _events(request: Request, desk: JobDesk, name: str, first: dict[str, Any]) -> AsyncIterator[bytes]:
    # The sidecar is polled: a stat every EVENT_POLL, a read only when it changed. Changes
    # closer together than that arrive as one event (the sidecar's timings keep them all).
    # Until the job has a sidecar (waiting in the inbox) the inbox is looked at instead.
    seq, last, quiet, stamp = 0, None, 0.0, None
    doc: dict[str, Any] | None = first
    while True:
        if doc is None:
            yield _event(seq + 1, "gone", {"job": name, "state": "gone"})
            return
        body = json.dumps(doc, sort_keys=True)
        if body != last:
            seq, last, quiet = seq + 1, body, 0.0
            yield _event(seq, "job", doc)
            if State.of(doc) in FINAL:
                return
        elif quiet >= KEEPALIVE:
            quiet = 0.0
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL)
        quiet += EVENT_POLL
        now = await anyio.to_thread.run_sync(desk.record_stamp, name)
        if now is not None and now == stamp and doc.get("state") != "waiting":
            continue
        stamp = now
        doc = await anyio.to_thread.run_sync(desk.find, name)


async def _many_events(request: Request, desk: JobDesk, names: list[str]) -> AsyncIterator[bytes]:
    # one stream for a whole page of jobs (a browser allows only ~6 connections per host):
    # an event whenever one of them changes; it ends when all of them are final
    last: dict[str, str] = {}
    final: dict[str, bool] = {}
    stamps: dict[str, tuple[int, int] | None] = {}
    seq, quiet = 0, 0.0
    while True:
        changed = False
        # one trip to a worker thread for all the stats; a sidecar is read only when it changed
        now = await anyio.to_thread.run_sync(lambda: {n: desk.record_stamp(n) for n in names})
        for name in names:
            stamp = now[name]
            if name in last and stamp is not None and stamp == stamps.get(name):
                continue
            stamps[name] = stamp
            doc = await anyio.to_thread.run_sync(desk.find, name)
            body = json.dumps(doc, sort_keys=True)
            final[name] = doc is not None and State.of(doc) in FINAL
            if doc is not None and body != last.get(name):
                last[name] = body
                seq, changed = seq + 1, True
                yield _event(seq, "job", doc)
            elif doc is None:
                last[name] = body
        if all(final.values()):
            return
        if not changed and quiet >= KEEPALIVE:
            quiet = 0.0
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL * 2)
        quiet = 0.0 if changed else quiet + EVENT_POLL * 2


def _event(seq: int, kind: str, doc: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(doc, ensure_ascii=False)}\n\n".encode()


def _store_or_none(store: StoreProvider) -> Store | None:
    try:
        return store()
    except StorageError:
        return None


def _readiness(cfg: Config, store: StoreProvider) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        folder = api_dir(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ready-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        checks["inbox"] = {"ok": True, "path": str(cfg.paths.inbox)}
    except OSError as e:
        checks["inbox"] = {"ok": False, "path": str(cfg.paths.inbox), "error": e.strerror or str(e)}
    try:
        store().ping()
        checks["storage"] = {"ok": True, "bucket": cfg.storage.bucket}
    except StorageError as e:
        checks["storage"] = {"ok": False, "bucket": cfg.storage.bucket, "error": e.message}
    return checks


async def _sweeper(cfg: Config) -> None:
    """Delete tus uploads no job took within api.upload_expiry, and dead staging folders."""
    while True:
        try:
            await anyio.to_thread.run_sync(_sweep, cfg)
        except Exception as e:  # noqa: BLE001 - a sweep that fails is tried again next time
            log.warning("upload sweep failed", error=str(e))
        await asyncio.sleep(SWEEP_EVERY)


def _sweep(cfg: Config) -> None:
    sweep_stale_staging(cfg)
    folder, now = uploads_dir(cfg), time.time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for e in entries:
        try:
            if e.is_file(follow_symlinks=False) and now - e.stat().st_mtime > float(cfg.api.upload_expiry):
                os.unlink(e.path)
        except FileNotFoundError:
            continue

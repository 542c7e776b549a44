"""The console's pages, its health summary and the video posters."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from lipsync import __version__
from lipsync.engines import NAMES as ENGINE_NAMES
from lipsync.finish.spec import ASPECTS

from daemon.api import library, previews
from daemon.api.auth import SESSION_COOKIE, Principal
from daemon.api.errors import ApiError
from daemon.api.jobdesk import LIST_STATES
from daemon.errors import StorageError
from daemon.outbox import parse_time
from daemon.reporting import status
from daemon.reporting.advice import advice

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
HEALTH_CACHE = 10.0  # seconds; the HeyGem probes take a moment and every page shows the strip


def register(app: FastAPI, ctx: Any) -> None:
    cfg, desk = ctx.cfg, ctx.desk
    pages = Jinja2Templates(directory=str(HERE / "templates"))
    pages.env.filters.update(duration=_duration, size=_size, age=_age, when=_when)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    health_cache: dict[str, Any] = {"at": 0.0, "value": None}

    viewer = ctx.viewer

    def page(request: Request, template: str, who: Principal, **values: Any) -> HTMLResponse:
        return pages.TemplateResponse(request, template, {
            "who": who, "version": __version__, "auth": cfg.api.auth, "states": LIST_STATES, **values})

    def signed_in(request: Request) -> Principal | RedirectResponse:
        who = viewer(request)
        if who is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?{urlencode({'next': target})}", status_code=303)
        return who

    # -- signing in -------------------------------------------------------------------------
    @app.get("/signin", include_in_schema=False)
    async def signin_form(request: Request, next: str = "/") -> HTMLResponse:
        return page(request, "signin.html", viewer(request), next=_local(next), error=None)

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request, key: str = Form(...), next: str = Form("/")) -> Response:
        cookie = ctx.sessions.open(key.strip())
        if cookie is None:
            return page(request, "signin.html", None, next=_local(next), error="That key is not valid.")
        reply = RedirectResponse(_local(next), status_code=303)
        # no max_age: a session cookie, gone when the browser closes (the server also stops
        # honouring it after SESSION_HOURS)
        reply.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                         secure=request.url.scheme == "https", path="/")
        return reply

    @app.post("/signout", include_in_schema=False)
    async def signout() -> Response:
        reply = RedirectResponse("/signin", status_code=303)
        reply.delete_cookie(SESSION_COOKIE, path="/")
        return reply

    # -- pages ------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def jobs_page(request: Request, state: str | None = Query(None), q: str | None = Query(None),
                        cursor: str | None = Query(None)) -> Response:
        who = signed_in(request)
        if isinstance(who, RedirectResponse):
            return who
        state = state if state in LIST_STATES else None
        try:
            jobs, next_cursor = await anyio.to_thread.run_sync(
                lambda: desk.page(state=state, limit=PAGE_SIZE, cursor=cursor, query=q or None))
        except ApiError:
            jobs, next_cursor = [], None
        more = None
        if next_cursor:
            more = "/?" + urlencode({k: v for k, v in {"state": state, "q": q, "cursor": next_cursor}.items() if v})
        return page(request, "jobs.html", who, jobs=[_row(d) for d in jobs], state=state, q=q or "", more=more,
                    first=cursor is None)

    @app.get("/jobs/{name}", include_in_schema=False)
    async def job_page(request: Request, name: str) -> Response:
        who = signed_in(request)
        if isinstance(who, RedirectResponse):
            return who
        doc = await anyio.to_thread.run_sync(desk.find, name)
        if doc is None:
            return page(request, "missing.html", who, name=name)
        return page(request, "job.html", who, job=_row(doc), doc=doc, outputs=_outputs(doc),
                    advice=advice((doc.get("error") or {}).get("code")))

    @app.get("/jobs/{name}/outputs", include_in_schema=False)
    async def job_outputs(request: Request, name: str) -> Response:
        """The outputs section alone: the job page swaps it in when the job finishes."""
        who = signed_in(request)
        if isinstance(who, RedirectResponse):
            return Response(status_code=401)
        doc = await anyio.to_thread.run_sync(desk.find, name)
        if doc is None:
            return Response(status_code=404)
        return page(request, "outputs.html", who, job=_row(doc), doc=doc, outputs=_outputs(doc),
                    advice=advice((doc.get("error") or {}).get("code")))

    @app.get("/new", include_in_schema=False)
    async def new_page(request: Request) -> Response:
        who = signed_in(request)
        if isinstance(who, RedirectResponse):
            return who
        templates = await anyio.to_thread.run_sync(_library_or_empty, cfg)
        return page(request, "new.html", who, engines=ENGINE_NAMES, default_engine=cfg.render.engine,
                    library=templates, has_library=cfg.paths.templates is not None, aspects=ASPECTS[1:])

    @app.get("/templates", include_in_schema=False)
    async def templates_page(request: Request) -> Response:
        who = signed_in(request)
        if isinstance(who, RedirectResponse):
            return who
        templates = await anyio.to_thread.run_sync(_library_or_empty, cfg)
        return page(request, "templates.html", who, library=templates, has_library=cfg.paths.templates is not None)

    # -- data the pages load ----------------------------------------------------------------
    @app.get("/api/v1/status", tags=["health"], operation_id="serviceStatus",
             summary="The service at a glance: daemons on the share, engines, HeyGem servers, store, queue")
    async def service_status(_who: Principal = Depends(ctx.reader)) -> dict[str, Any]:
        if health_cache["value"] is None or time.monotonic() - health_cache["at"] > HEALTH_CACHE:
            health_cache["value"] = await anyio.to_thread.run_sync(_health, cfg, ctx.store)
            health_cache["at"] = time.monotonic()
        return health_cache["value"]

    @app.get("/api/v1/jobs/{name}/outputs/{index}/poster", tags=["jobs"], operation_id="outputPoster",
             summary="A JPEG of an output video's first frame (made once, then cached)",
             response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}})
    async def poster(name: str, index: int, _who: Principal = Depends(ctx.reader)) -> FileResponse:
        def make() -> Path:
            doc = desk.find(name)
            outs = (doc or {}).get("outputs") or []
            if not 0 <= index < len(outs) or outs[index].get("state") != "done" or not outs[index].get("key"):
                raise ApiError(404, "not_found", f"{name}: no finished output {index}")
            out = outs[index]
            url, _ = ctx.store().presign_get(out["key"], lifetime=300)
            return previews.poster(cfg, url, out["sha256"])
        try:
            path = await anyio.to_thread.run_sync(make)
        except StorageError as e:
            raise ApiError(503, "storage_unavailable", e.message, headers={"Retry-After": "30"}) from None
        except (OSError, ValueError) as e:
            raise ApiError(404, "no_picture", f"{name}: no picture could be read ({e})") from None
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


# --------------------------------------------------------------------------- helpers


def _local(target: str) -> str:
    """Only paths of this site after sign-in: never an open redirect elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _library_or_empty(cfg) -> list[dict[str, Any]]:
    try:
        return library.listing(cfg)
    except ApiError:
        return []


def _row(doc: dict[str, Any]) -> dict[str, Any]:
    timings = doc.get("timings") or {}
    state = doc.get("state") or "queued"
    return {
        "name": doc.get("job", "?"), "state": state, "progress": doc.get("progress"),
        "engine": doc.get("engine"), "host": doc.get("host"), "created_at": doc.get("created_at"),
        "render_seconds": timings.get("render_seconds"), "total_seconds": timings.get("total_seconds"),
        "url": f"/jobs/{quote(str(doc.get('job', '')), safe='')}",
        "active": state in ("waiting", "queued", "rendering", "uploading"),
        "error": doc.get("error"), "notes": doc.get("notes") or [],
    }


def _outputs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, o in enumerate(doc.get("outputs") or []):
        link = o.get("link") or o.get("url")
        out.append({**o, "index": i, "href": link,
                    "download": (o["link"] + "?download=1") if o.get("link") else o.get("url"),
                    "poster": f"/api/v1/jobs/{quote(str(doc.get('job', '')), safe='')}/outputs/{i}/poster"
                    if o.get("state") == "done" else None})
    return out


def _health(cfg, store) -> dict[str, Any]:
    try:
        store().ping()
        storage = {"ok": True, "detail": f"bucket {cfg.storage.bucket}"}
    except StorageError as e:
        storage = {"ok": False, "detail": e.message}
    jobs = status.collect(cfg)
    return {"daemons": status.daemons_on_share(cfg), "engine": cfg.render.engine,
            "heygem": status.remote_servers(cfg, timeout=1.5), "storage": storage,
            "queue": status.in_line(jobs), "counts": status.counts(jobs)}


def _duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    return status.human_duration(float(seconds))


def _size(n: Any) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _age(stamp: Any) -> str:
    try:
        seconds = (datetime.now(timezone.utc) - parse_time(str(stamp))).total_seconds()
    except (ValueError, TypeError):
        return ""
    return status.human_duration(max(0.0, seconds)) + " ago"


def _when(stamp: Any) -> str:
    return str(stamp).replace("T", " ").replace("Z", " UTC") if stamp else ""




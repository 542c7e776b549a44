"""The console's pages and its sign-in.

The access gate (:mod:`daemon.api.access`) has sent a browser without a session to the
sign-in page before any of these run; a page reads the caller from the request. Names in
paths are confined like the API's (:func:`daemon.api.deps.job_name`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from lipsync import __version__

from daemon.api import library
from daemon.api.auth import SESSION_COOKIE, Principal
from daemon.api.deps import Caller, ServicesDep, job_name
from daemon.api.errors import ApiError
from daemon.api.jobdesk import LIST_STATES
from daemon.joboptions import form_fields
from daemon.jobstate import UNFINISHED, OutputState, State
from daemon.outbox import parse_time
from daemon.reporting import status
from daemon.reporting.advice import advice

PAGE_SIZE = 50
SIGNIN_BODY = 16 * 1024  # bytes: a key and where to go next

router = APIRouter(include_in_schema=False)
# the pages ship as package data: found through the package, wherever it is installed
pages = Jinja2Templates(env=Environment(loader=PackageLoader("daemon.api.console", "templates"),
                                        autoescape=select_autoescape(["html"])))


def page(request: Request, template: str, who: Principal | None, **values: Any) -> HTMLResponse:
    cfg = request.app.state.services.cfg
    return pages.TemplateResponse(request, template, {
        "who": who, "version": __version__, "auth": cfg.api.auth, "states": LIST_STATES, **values})


# -- signing in -------------------------------------------------------------------------------
@router.get("/signin")
async def signin_form(request: Request, services: ServicesDep, next: str = Query("/", max_length=2048)
                      ) -> HTMLResponse:
    return page(request, "signin.html", services.gatekeeper.viewer(request.cookies), next=_local(next), error=None)


@router.post("/signin")
async def signin(request: Request, services: ServicesDep) -> Response:
    form = await _small_form(request)
    key, target = (form.get("key") or "").strip(), _local(form.get("next") or "/")
    cookie = services.sessions.open(key) if key else None
    if cookie is None:
        return page(request, "signin.html", None, next=target, error="That key is not valid.")
    reply = RedirectResponse(target, status_code=303)
    # no max_age: a session cookie, gone when the browser closes (the server also stops
    # honouring it after SESSION_HOURS)
    reply.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                     secure=request.url.scheme == "https", path="/")
    return reply


@router.post("/signout")
async def signout() -> Response:
    reply = RedirectResponse("/signin", status_code=303)
    reply.delete_cookie(SESSION_COOKIE, path="/")
    return reply


async def _small_form(request: Request) -> dict[str, str]:
    """The sign-in form (urlencoded), read within SIGNIN_BODY bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > SIGNIN_BODY:
            raise ApiError(413, "too_large", f"the sign-in form is at most {SIGNIN_BODY // 1024} KiB")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "the sign-in form is not a urlencoded form") from None
    return {k: v[0] for k, v in fields.items() if v}


# -- pages ------------------------------------------------------------------------------------
@router.get("/")
async def jobs_page(request: Request, services: ServicesDep, who: Caller, state: str | None = Query(None),
                    q: str | None = Query(None, max_length=200), cursor: str | None = Query(None, max_length=2048)
                    ) -> Response:
    state = state if state in LIST_STATES else None
    try:
        jobs, next_cursor = await anyio.to_thread.run_sync(
            lambda: services.desk.page(state=state, limit=PAGE_SIZE, cursor=cursor, query=q or None))
    except ApiError:
        jobs, next_cursor = [], None
    more = None
    if next_cursor:
        more = "/?" + urlencode({k: v for k, v in {"state": state, "q": q, "cursor": next_cursor}.items() if v})
    return page(request, "jobs.html", who, jobs=[_row(d) for d in jobs], state=state, q=q or "", more=more,
                first=cursor is None)


@router.get("/jobs/{name}")
async def job_page(request: Request, services: ServicesDep, who: Caller, name: str) -> Response:
    doc = await anyio.to_thread.run_sync(services.desk.find, job_name(services.cfg, name))
    if doc is None:
        return page(request, "missing.html", who, name=name)
    return page(request, "job.html", who, job=_row(doc), doc=doc, outputs=_outputs(doc),
                advice=advice((doc.get("error") or {}).get("code")))


@router.get("/jobs/{name}/outputs")
async def job_outputs(request: Request, services: ServicesDep, who: Caller, name: str) -> Response:
    """The outputs section alone: the job page swaps it in when the job finishes."""
    doc = await anyio.to_thread.run_sync(services.desk.find, job_name(services.cfg, name))
    if doc is None:
        return Response(status_code=404)
    return page(request, "outputs.html", who, job=_row(doc), doc=doc, outputs=_outputs(doc),
                advice=advice((doc.get("error") or {}).get("code")))


@router.get("/new")
async def new_page(request: Request, services: ServicesDep, who: Caller) -> Response:
    cfg = services.cfg
    templates = await anyio.to_thread.run_sync(_library_or_empty, cfg)
    defaults = {"engine": cfg.render.engine, "aspect": cfg.output.aspect, "subtitles": cfg.output.subtitles}
    return page(request, "new.html", who, fields=form_fields(), defaults=defaults, library=templates,
                has_library=cfg.paths.templates is not None)


@router.get("/templates")
async def templates_page(request: Request, services: ServicesDep, who: Caller) -> Response:
    cfg = services.cfg
    templates = await anyio.to_thread.run_sync(_library_or_empty, cfg)
    return page(request, "templates.html", who, library=templates, has_library=cfg.paths.templates is not None)


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
    state = doc.get("state") or State.QUEUED
    return {
        "name": doc.get("job", "?"), "state": state, "progress": doc.get("progress"),
        "engine": doc.get("engine"), "host": doc.get("host"), "created_at": doc.get("created_at"),
        "render_seconds": timings.get("render_seconds"), "total_seconds": timings.get("total_seconds"),
        "url": f"/jobs/{quote(str(doc.get('job', '')), safe='')}",
        "active": state in UNFINISHED,
        "error": doc.get("error"), "notes": doc.get("notes") or [],
    }


def _outputs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, o in enumerate(doc.get("outputs") or []):
        link = o.get("link") or o.get("url")
        out.append({**o, "index": i, "href": link,
                    "download": (o["link"] + "?download=1") if o.get("link") else o.get("url"),
                    "poster": f"/api/v1/jobs/{quote(str(doc.get('job', '')), safe='')}/outputs/{i}/poster"
                    if o.get("state") == OutputState.DONE else None})
    return out


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





pages.env.filters.update(duration=_duration, size=_size, age=_age, when=_when)

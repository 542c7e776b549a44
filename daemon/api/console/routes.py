"""The console's pages and its sign-in.

The access gate (:mod:`daemon.api.access`) has sent a browser without a session to the
sign-in page before any of these run; a page reads the caller from the request. Names in
paths are confined like the API's (:func:`daemon.api.deps.job_name`).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from lipsync import __version__

from daemon.api import library
from daemon.api.auth import SESSION_COOKIE, Principal
from daemon.api.console.words import CHOICE_NAMES, KIND_NAMES, STATE_NAMES, script_messages
from daemon.api.deps import Caller, ServicesDep, job_name
from daemon.api.errors import ApiError
from daemon.api.jobdesk import LIST_STATES
from daemon.i18n import LANGUAGES, negotiate, supported, translations
from daemon.i18n import formats
from daemon.joboptions import form_fields
from daemon.jobstate import UNFINISHED, OutputState, State
from daemon.outbox import parse_time
from daemon.reporting.advice import advice

PAGE_SIZE = 50
SIGNIN_BODY = 16 * 1024  # bytes: a key and where to go next

LANGUAGE_COOKIE = "lipsyncd_lang"
LANGUAGE_COOKIE_DAYS = 365

router = APIRouter(include_in_schema=False)


def language_of(request: Request) -> str:
    """The page's language: the switch's cookie, else the browser's Accept-Language, else
    ``[api] console_language``."""
    return supported(request.cookies.get(LANGUAGE_COOKIE)) or negotiate(request.headers.get("accept-language"), request.app.state.services.cfg.api.console_language)


def page(request: Request, template: str, who: Principal | None, **values: Any) -> HTMLResponse:
    cfg = request.app.state.services.cfg
    lang = language_of(request)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    reply = pages(lang).TemplateResponse(request, template, {
        "who": who, "version": __version__, "auth": cfg.api.auth, "states": LIST_STATES, "lang": lang,
        "languages": LANGUAGES, "here": here, "messages": script_messages(lang), **values})
    reply.headers["Content-Language"] = lang
    reply.headers["Vary"] = "Accept-Language, Cookie"
    return reply


# -- signing in -------------------------------------------------------------------------------
@router.get("/signin")
async def signin_form(request: Request, services: ServicesDep, next: str = Query("/", max_length=2048)
                      ) -> HTMLResponse:
    return page(request, "signin.html", services.gatekeeper.viewer(request.cookies), next=_local(next), error=None,
                command=_code("lipsyncd api-key create NAME"))


@router.post("/signin")
async def signin(request: Request, services: ServicesDep) -> Response:
    form = await _small_form(request)
    key, target = (form.get("key") or "").strip(), _local(form.get("next") or "/")
    cookie = services.sessions.open(key) if key else None
    if cookie is None:
        return page(request, "signin.html", None, next=target, error="invalid_key",
                    command=_code("lipsyncd api-key create NAME"))
    reply = RedirectResponse(target, status_code=303)
    # no max_age: a session cookie, gone when the browser closes (the server also stops
    # honouring it after SESSION_HOURS)
    reply.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                     secure=request.url.scheme == "https", path="/")
    return reply


@router.post("/language")
async def choose_language(request: Request) -> Response:
    """The language switch: kept in a cookie (a preference, not a credential), back to the page."""
    form = await _small_form(request)
    reply = RedirectResponse(_local(form.get("next") or "/"), status_code=303)
    lang = supported(form.get("lang"))
    if lang:
        reply.set_cookie(LANGUAGE_COOKIE, lang, max_age=LANGUAGE_COOKIE_DAYS * 86400, samesite="lax",
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
    return page(request, "templates.html", who, library=templates, has_library=cfg.paths.templates is not None,
                option=_code("paths.templates"))


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


def _code(text: str) -> Markup:
    return Markup("<code>%s</code>") % text


_CODE_SPAN = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")


def _markdown_inline(text: str) -> Markup:
    """The advice table's Markdown, as little of it as it uses: `code` spans, [links](to the README)."""
    plain = _LINK.sub(lambda m: m.group(1), str(text))
    out, last = Markup(""), 0
    for m in _CODE_SPAN.finditer(plain):
        out += escape(plain[last:m.start()]) + _code(m.group(1))
        last = m.end()
    return out + escape(plain[last:])


def _when(stamp: Any) -> str:
    return str(stamp).replace("T", " ").replace("Z", " UTC") if stamp else ""


def _stamp(value: Any) -> datetime | None:
    try:
        return parse_time(str(value))
    except (ValueError, TypeError):
        return None


@lru_cache(maxsize=None)
def pages(lang: str) -> Jinja2Templates:
    """The pages in one language: its catalog and its number formats, built once."""
    # the pages ship as package data: found through the package, wherever it is installed
    env = Environment(loader=PackageLoader("daemon.api.console", "templates"),
                      autoescape=select_autoescape(["html"]), extensions=["jinja2.ext.i18n"])
    catalog = translations(lang)
    env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    _ = catalog.gettext
    env.filters.update(
        duration=lambda s: formats.duration(None if s is None else float(s), lang),
        size=lambda n: formats.size(n, lang),
        number=lambda v: formats.number(v, lang),
        age=lambda stamp: formats.age(_stamp(stamp), lang),
        when=_when,
        state_name=lambda state: _(STATE_NAMES[state]) if state in STATE_NAMES else state,
        choice_name=lambda c: _(CHOICE_NAMES[c]) if c in CHOICE_NAMES else c,
        kind_name=lambda k: _(KIND_NAMES[k]) if k in KIND_NAMES else k,
        markdown_inline=_markdown_inline,
    )
    return Jinja2Templates(env=env)

"""What a route handler is given: the app's services and the caller.

Authentication and authorisation happened before routing (:mod:`daemon.api.access`);
:func:`caller` only reads its result. Every name a handler takes from a request goes
through :func:`job_name`, :func:`template_name` or :func:`upload_id`, which confine it to
its folder by :func:`daemon.confine.confine` or answer 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from daemon.api.access import Gatekeeper
from daemon.api.auth import KeyRing, Principal, RateLimiter, Sessions
from daemon.api.errors import ApiError, bad_name
from daemon.api.jobdesk import JobDesk
from daemon.api.uploads import UploadStore
from daemon.config import Config
from daemon.confine import NameRefused, PathScrubber, confine
from daemon.reporting.metrics import Metrics
from daemon.storage import Store

API = "/api/v1"
StoreProvider = Callable[[], Store]


@dataclass
class Cached:
    """A value and when (or from what) it was made (the service-status strip every console page shows)."""

    at: Any = 0.0
    value: Any = None


@dataclass
class Services:
    """Everything the routes share, made once per app (``app.state.services``)."""

    cfg: Config
    store: StoreProvider
    metrics: Metrics
    desk: JobDesk
    keys: KeyRing
    sessions: Sessions
    limiter: RateLimiter | None
    signer: Any  # daemon.storage.permalinks.LinkSigner
    uploads: UploadStore
    scrub: PathScrubber
    gatekeeper: Gatekeeper
    glance: Cached = field(default_factory=lambda: Cached())  # the service status's slow probes
    jobs_view: Cached = field(default_factory=lambda: Cached())  # ... and its jobs, by folder stamps

    @property
    def base_url(self) -> str:
        return self.cfg.api_base_url

    def location(self, path: str) -> str:
        """A Location header for ``path``: under the configured base URL (``api.public_url``,
        else ``http://bind:port``), like the status URLs; never from the request's Host header."""
        return f"{self.base_url}{path}"


async def services(request: Request) -> Services:
    return request.app.state.services


async def caller(request: Request) -> Principal:
    """Who is calling, as the access gate found (an admitted request always has one)."""
    who = getattr(request.state, "principal", None)
    if who is None:  # a route the gate treats as public asked for a caller: a wiring bug
        raise ApiError(401, "unauthorized", "send an API key: Authorization: Bearer KEY",
                       headers={"WWW-Authenticate": "Bearer"})
    return who


ServicesDep = Annotated[Services, Depends(services)]
Caller = Annotated[Principal, Depends(caller)]


# --------------------------------------------------------------------------- names from requests


def job_name(cfg: Config, name: str, *, field: str = "name") -> str:
    """``name`` when it can be a job's name (its record ``outbox/NAME.json``); else 400."""
    try:
        confine(cfg.paths.outbox, name, suffix=".json", where="outbox")
    except NameRefused as e:
        raise bad_name(field, name, e) from None
    return name


def template_name(folder: Path, name: str, *, field: str = "name") -> Path:
    """The library path of the template ``name``; else 400."""
    try:
        return confine(folder, name, where="template library")
    except NameRefused as e:
        raise bad_name(field, name, e) from None


def upload_id(folder: Path, uid: str, *, field: str = "id") -> str:
    """``uid`` when it names an upload (32 hex digits) inside the uploads folder; else 400."""
    try:
        confine(folder, uid, where="uploads folder")
    except NameRefused as e:
        raise bad_name(field, uid, e) from None
    if len(uid) != 32 or any(c not in "0123456789abcdef" for c in uid):
        raise ApiError(400, "bad_upload", f"{field}: {uid[:40]!r} is not an upload id (32 hex digits)", field=field)
    return uid

"""``/api/v1/jobs``: submit, list, read, follow, withdraw / cancel / delete, retry.

A submission is written into the inbox like any drop (:mod:`daemon.api.drops`); the API
never renders or queues. Every job name from a request is confined by
:func:`daemon.api.deps.job_name` before it is looked up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from daemon.api import events, openapi_extras, previews
from daemon.api.deps import API, Caller, Services, ServicesDep, job_name
from daemon.api.drops import Staging, clean_job_name
from daemon.api.errors import ApiError, responses
from daemon.api.jobdesk import LIST_STATES
from daemon.api.submit import check_options, gather, probe_staged, read_request
from daemon.errors import StorageError
from daemon.names import job_stem
from daemon.jobstate import WAITING
from daemon.logsetup import get_logger
from daemon.storage import Store

log = get_logger(__name__)
router = APIRouter(prefix=f"{API}/jobs", tags=["jobs"])
NAME = PathParam(..., description="the job name, as returned by submitJob", max_length=400)
MAX_STREAMED = 200  # jobs in one /events stream


def with_links(services: Services, doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "status_url": f"{services.base_url}{API}/jobs/{quote(doc.get('job', ''), safe='')}"}


def accepted(services: Services, name: str) -> JSONResponse:
    """202 for a job dropped into the inbox (submitted or retried): where to follow it."""
    path = f"{API}/jobs/{quote(name, safe='')}"
    url = f"{services.base_url}{path}"
    return JSONResponse({"name": name, "state": WAITING, "status_url": url, "events_url": f"{url}/events"},
                        status_code=202, headers={"Location": services.location(path)})


@router.post("", status_code=202, operation_id="submitJob",
             summary="Submit a job: an audio and one or more templates",
             description=openapi_extras.SUBMIT_DESCRIPTION, openapi_extra=openapi_extras.SUBMIT_BODY,
             responses={202: openapi_extras.ACCEPTED, **responses(400, 401, 403, 404, 409, 413, 415, 422, 429)})
async def submit(request: Request, services: ServicesDep, who: Caller) -> JSONResponse:
    cfg = services.cfg
    staging = await anyio.to_thread.run_sync(Staging, cfg)
    try:
        req = await read_request(request, staging, cfg)
        name, options = await anyio.to_thread.run_sync(check_options, req, cfg)
        audio, templates, fields = await anyio.to_thread.run_sync(
            lambda: gather(req, staging, cfg, uploads=services.uploads, owner=who.name))
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
    return accepted(services, published)


@router.get("", operation_id="listJobs", summary="A page of jobs, newest first",
            responses=responses(400, 401, 429))
async def list_jobs(
    services: ServicesDep, _who: Caller,
    state: str | None = Query(None, description=f"only jobs in this state: {', '.join(LIST_STATES)}"),
    limit: int = Query(50, ge=1, le=500, description="jobs per page"),
    cursor: str | None = Query(None, max_length=2048, description="next_cursor of the previous page"),
    q: str | None = Query(None, max_length=200, description="only jobs whose name contains this text"),
) -> dict[str, Any]:
    if state is not None and state not in LIST_STATES:
        raise ApiError(400, "bad_request", f"state: {state!r} is not one of {', '.join(LIST_STATES)}", field="state")
    jobs, next_cursor = await anyio.to_thread.run_sync(
        lambda: services.desk.page(state=state, limit=limit, cursor=cursor, query=q))
    return {"jobs": [with_links(services, d) for d in jobs], "next_cursor": next_cursor}


@router.get("/{name}", operation_id="getJob", summary="A job's sidecar: state, progress, links, error",
            responses=responses(400, 401, 404, 429))
async def get_job(services: ServicesDep, _who: Caller, name: str = NAME) -> dict[str, Any]:
    doc = await anyio.to_thread.run_sync(services.desk.find, job_name(services.cfg, name))
    if doc is None:
        raise ApiError(404, "not_found", f"no job {name!r}", field="name")
    return with_links(services, doc)


@router.get("/{name}/events", operation_id="jobEvents",
            summary="Server-Sent Events: the sidecar each time it changes, until done or failed",
            response_class=StreamingResponse, responses={200: openapi_extras.EVENTS, **responses(400, 401, 404, 429)})
async def job_events(request: Request, services: ServicesDep, _who: Caller, name: str = NAME) -> StreamingResponse:
    first = await anyio.to_thread.run_sync(services.desk.find, job_name(services.cfg, name))
    if first is None:
        raise ApiError(404, "not_found", f"no job {name!r}", field="name")
    return StreamingResponse(events.one_job(request, services.desk, name, first), media_type="text/event-stream",
                             headers=events.HEADERS)


@router.delete("/{name}", operation_id="deleteJob",
               summary="Withdraw a waiting job, cancel a running one, or delete a finished one's videos",
               responses={200: openapi_extras.DELETED, **responses(400, 401, 403, 404, 409, 429, 503)})
async def delete_job(services: ServicesDep, who: Caller, name: str = NAME) -> JSONResponse:
    name = job_name(services.cfg, name)

    def act() -> dict[str, Any]:
        return services.desk.delete(name, store=_store_or_none(services), by=f"api key {who.name}").as_dict()
    result = await anyio.to_thread.run_sync(act)
    return JSONResponse(result, status_code=202 if result["action"] == "cancel_requested" else 200)


@router.post("/{name}/retry", status_code=202, operation_id="retryJob",
             summary="Drop a failed job's inputs into the inbox again",
             responses={202: openapi_extras.ACCEPTED, **responses(400, 401, 403, 404, 409, 429)})
async def retry_job(services: ServicesDep, who: Caller, name: str = NAME) -> JSONResponse:
    published = await anyio.to_thread.run_sync(services.desk.retry, job_name(services.cfg, name))
    log.info("job retried", job=published, by=who.name)
    return accepted(services, published)


@router.get("/{name}/outputs/{index}/poster", operation_id="outputPoster",
            summary="A JPEG of an output video's first frame (made once, then cached)",
            response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}, **responses(400, 401, 404, 503)})
async def poster(services: ServicesDep, _who: Caller, index: int, name: str = NAME) -> FileResponse:
    name = job_name(services.cfg, name)

    def make() -> Path:
        doc = services.desk.find(name)
        outs = (doc or {}).get("outputs") or []
        if not 0 <= index < len(outs) or outs[index].get("state") != "done" or not outs[index].get("key"):
            raise ApiError(404, "not_found", f"{name}: no finished output {index}")
        out = outs[index]
        url, _ = services.store().presign_get(out["key"], lifetime=300)
        return previews.poster(services.cfg, url, out["sha256"])
    try:
        path = await anyio.to_thread.run_sync(make)
    except StorageError as e:
        raise ApiError(503, "storage_unavailable", e.message, headers={"Retry-After": "30"}) from None
    except (OSError, ValueError):
        raise ApiError(404, "no_picture", f"{name}: output {index} has no picture that could be read") from None
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


# the stream for several jobs lives beside the collection: /api/v1/events?name=a&name=b
events_router = APIRouter(prefix=API, tags=["jobs"])


@events_router.get("/events", operation_id="jobsEvents",
                   summary="Server-Sent Events for several jobs at once (a page of a job list)",
                   response_class=StreamingResponse,
                   responses={200: openapi_extras.EVENTS, **responses(400, 401, 429)})
async def jobs_events(request: Request, services: ServicesDep, _who: Caller,
                      name: list[str] = Query(..., description=f"a job name; repeat for several "
                                                               f"(at most {MAX_STREAMED})")) -> StreamingResponse:
    if len(name) > MAX_STREAMED:
        raise ApiError(400, "bad_request", f"name: at most {MAX_STREAMED} jobs per stream", field="name")
    names = [job_name(services.cfg, n) for n in dict.fromkeys(name)]
    return StreamingResponse(events.many_jobs(request, services.desk, names), media_type="text/event-stream",
                             headers=events.HEADERS)


def _store_or_none(services: Services) -> Store | None:
    try:
        return services.store()
    except StorageError:
        return None

"""Server-Sent Events of job records: one job until it is final, or a page of jobs.

The sidecars are polled: a stat every ``EVENT_POLL``, a read only when one changed.
Changes closer together than that arrive as one event (the sidecar's timings keep them
all). Until a job has a sidecar (waiting in the inbox) the inbox is looked at instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import Request

from daemon.api.jobdesk import JobDesk
from daemon.jobstate import FINAL_STATES, WAITING, State

EVENT_POLL = 0.2  # seconds between looks at a sidecar while streaming its events
KEEPALIVE = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _final(doc: dict[str, Any] | None) -> bool:
    return doc is not None and State.of(doc) in FINAL_STATES


async def one_job(request: Request, desk: JobDesk, name: str, first: dict[str, Any]) -> AsyncIterator[bytes]:
    seq, last, quiet, stamp = 0, None, 0.0, None
    doc: dict[str, Any] | None = first
    while True:
        if doc is None:
            yield event(seq + 1, "gone", {"job": name, "state": "gone"})
            return
        body = json.dumps(doc, sort_keys=True)
        if body != last:
            seq, last, quiet = seq + 1, body, 0.0
            yield event(seq, "job", doc)
            if _final(doc):
                return
        elif quiet >= KEEPALIVE:
            quiet = 0.0
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL)
        quiet += EVENT_POLL
        now = await anyio.to_thread.run_sync(desk.record_stamp, name)
        if now is not None and now == stamp and doc.get("state") != WAITING:
            continue
        stamp = now
        doc = await anyio.to_thread.run_sync(desk.find, name)


async def many_jobs(request: Request, desk: JobDesk, names: list[str]) -> AsyncIterator[bytes]:
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
            # a job that is not there (never was, or withdrawn) has nothing more to say
            final[name] = doc is None or _final(doc)
            if doc is not None and body != last.get(name):
                last[name] = body
                seq, changed = seq + 1, True
                yield event(seq, "job", doc)
            elif doc is None:
                if last.get(name, "null") != "null":
                    seq, changed = seq + 1, True
                    yield event(seq, "gone", {"job": name, "state": "gone"})
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


def event(seq: int, kind: str, doc: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(doc, ensure_ascii=False)}\n\n".encode()

"""Keeping the links in the sidecars alive, and saying "expired" when a video is gone.

A presigned link dies at a deadline (at most 7 days with SigV4, sooner with temporary
credentials), but people open sidecars days or weeks later. :func:`refresh_links`
re-signs every link of a finished job that expires within ``links.refresh_margin`` -- if
its object still exists -- and rewrites the sidecar atomically. When the object is gone
(deleted by cleanup, a lifecycle rule or a person) the output says ``"expired"`` with
``url: null`` instead of carrying a dead link, and a job with no video left is
``"expired"`` as a whole.

Only finished records are edited, through :meth:`daemon.outbox.Outbox.replace_if_unchanged`:
a sidecar is replaced only when it still reads exactly as it did before the change was
computed; otherwise it is left for the next run.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from daemon.config import Config
from daemon.errors import StorageError
from daemon.logsetup import get_logger
from daemon.outbox import (Entry, Outbox, OutputState, State, expire_output, note_links_refreshed, parse_time,
                           read_document, relink_output, utcnow)
from daemon.storage import Store

log = get_logger(__name__)

RACE_RETRIES = 3


@dataclass
class RefreshReport:
    refreshed: list[str] = field(default_factory=list)  # "job/output" re-signed
    expired: list[str] = field(default_factory=list)  # "job/output" whose object is gone
    not_due: int = 0  # live links with more than the margin left
    skipped: list[str] = field(default_factory=list)  # sidecars changed meanwhile, foreign buckets
    errors: list[str] = field(default_factory=list)  # storage unreachable etc.; retried next run

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------- refresh


def link_lifetime(cfg: Config, store: Store, options: dict | None) -> float:
    """The job's link lifetime (manifest, else config), capped by what the store can sign."""
    wanted = (options or {}).get("link_lifetime") or cfg.links.lifetime
    return max(1.0, min(float(wanted), float(store.max_link_lifetime())))


def _expires_at(out: dict) -> datetime | None:
    try:
        return parse_time(out["url_expires_at"])
    except (KeyError, TypeError, ValueError):
        return None


def _due(out: dict, now: datetime, margin: float) -> bool:
    expires = _expires_at(out)
    return not out.get("url") or expires is None or expires - now <= timedelta(seconds=margin)


def _matches(entry: Entry, names: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(entry.job, n) or fnmatch.fnmatchcase(entry.path.stem, n) for n in names)


def refresh_links(cfg: Config, store: Store, *, names: Iterable[str] = (), force: bool = False,
                  now: datetime | None = None) -> RefreshReport:
    """Re-sign links that expire within the margin; mark outputs whose object is gone.

    ``names`` (job names or glob patterns) limits the run to those jobs and re-signs their
    links whatever time they have left, as does ``force`` for every job.
    """
    now = now or utcnow()
    wanted = list(names)
    report = RefreshReport()
    outbox = Outbox(cfg.paths.outbox)
    for entry in outbox.scan():
        if entry.state is not State.DONE:
            continue  # unfinished jobs belong to the worker; failed/expired have no live link
        if wanted and not _matches(entry, wanted):
            continue
        _refresh_one(cfg, store, outbox, entry, now, force or bool(wanted), report)
    log.info("link refresh finished", refreshed=len(report.refreshed), expired=len(report.expired),
             not_due=report.not_due, skipped=len(report.skipped), errors=len(report.errors))
    return report


def _refresh_one(cfg: Config, store: Store, outbox: Outbox, before: Entry, now: datetime, force: bool,
                 report: RefreshReport) -> None:
    doc = copy.deepcopy(before.doc)
    job = before.job
    changed: list[tuple[str, str, str | None]] = []  # (what, job/output, valid until)
    for out in doc.get("outputs", []):
        if out.get("state") != OutputState.DONE or not out.get("key"):
            continue
        label = f"{job}/{out.get('name', out['key'])}"
        if not force and not _due(out, now, cfg.links.refresh_margin):
            report.not_due += 1
            continue
        if out.get("bucket") and out["bucket"] != cfg.storage.bucket:
            log.warning("link not refreshed: object is in another bucket than the configured one",
                        job=job, bucket=out["bucket"], key=out["key"])
            report.skipped.append(label)
            continue
        try:
            if store.head(out["key"]) is None:
                expire_output(doc, out, "object no longer in storage")
                changed.append(("expired", label, None))
                continue
            lifetime = link_lifetime(cfg, store, doc.get("options"))
            url, expires = store.presign_get(out["key"], lifetime=lifetime, filename=out.get("name"))
        except StorageError as e:
            # never mark a video expired because the store could not be asked
            log.warning("link not refreshed: storage unavailable", job=job, key=out["key"], error=str(e))
            report.errors.append(f"{label}: {e}")
            continue
        relink_output(out, url, expires)
        changed.append(("refreshed", label, out["url_expires_at"]))
    if not changed:
        return
    note_links_refreshed(doc, now)
    if not outbox.replace_if_unchanged(before, doc):
        report.skipped.append(job)
        return
    for what, label, until in changed:
        if what == "expired":
            log.info("output expired: its video is no longer in storage", output=label, sidecar=str(before.path))
            report.expired.append(label)
        else:
            log.info("link re-signed", output=label, until=until)
            report.refreshed.append(label)


# --------------------------------------------------------------------------- expiry by key


def expire_objects(cfg: Config, objects: set[tuple[str, str]], *, reason: str,
                   entries: list[Entry] | None = None) -> list[str]:
    """Mark every output stored at one of ``objects`` ((bucket, key) pairs) expired.

    Only finished sidecars are touched (done/failed); ``entries`` is this pass's scan of
    the outbox, when the caller has one. Returns the sidecars rewritten.
    """
    if not objects:
        return []
    outbox = Outbox(cfg.paths.outbox)
    scanned = entries if entries is not None else outbox.scan()
    return [str(e.path) for e in scanned if _expire_in(cfg, outbox, e, objects, reason)]


def _expire_in(cfg: Config, outbox: Outbox, entry: Entry, objects: set[tuple[str, str]], reason: str) -> bool:
    # The object is gone for good, so unlike a refresh this must not wait for a next run:
    # when the worker rewrote the sidecar meanwhile, read it again and retry.
    for _attempt in range(RACE_RETRIES):
        if entry.state not in (State.DONE, State.FAILED):
            return False
        doc = copy.deepcopy(entry.doc)
        hits = [o for o in doc.get("outputs", []) if o.get("state") != OutputState.EXPIRED
                and (o.get("bucket") or cfg.storage.bucket, o.get("key")) in objects]
        if not hits:
            return False
        for out in hits:
            expire_output(doc, out, reason)
        if outbox.replace_if_unchanged(entry, doc):
            log.info("sidecar marked expired", job=doc.get("job"), sidecar=str(entry.path),
                     outputs=[o.get("name") for o in hits], job_state=doc["state"], reason=reason)
            return True
        fresh = read_document(entry.path)
        if fresh is None:
            return False
        entry = Entry(entry.path, fresh)
    log.warning("sidecar kept changing; it is marked expired by a later run", sidecar=str(entry.path))
    return False

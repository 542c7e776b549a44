"""Keeping the links in the sidecars alive, and saying "expired" when a video is gone.

A presigned link dies at a deadline (at most 7 days with SigV4, sooner with temporary
credentials), but people open sidecars days or weeks later. :func:`refresh_links`
re-signs every link of a finished job that expires within ``links.refresh_margin`` -- if
its object still exists -- and rewrites the sidecar atomically. When the object is gone
(deleted by cleanup, a lifecycle rule or a person) the output says ``"expired"`` with
``url: null`` instead of carrying a dead link, and a job with no video left is
``"expired"`` as a whole.

The worker may be writing a sidecar while this runs (a re-run of the same job name), so a
sidecar is only replaced when it still reads exactly as it did before the change was
computed; otherwise it is left for the next run.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from daemon import sidecar
from daemon.config import Config
from daemon.errors import StorageError
from daemon.logsetup import get_logger
from daemon.reporting.status import read_sidecars

log = get_logger("lipsyncd.links")

RACE_RETRIES = 3
_REFRESH_NOTE = "links re-signed "
_EXPIRED_NOTE = "video deleted from storage "


class LinkSigner(Protocol):
    """What refresh needs from the object store (daemon.storage's store provides it)."""

    def head(self, key: str) -> Any | None: ...

    def presign_get(self, key: str, *, lifetime: float, filename: str | None = None) -> tuple[str, Any]: ...

    def max_link_lifetime(self) -> float: ...


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


# --------------------------------------------------------------------------- rewriting


def rewrite_if_unchanged(path: Path, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Replace the sidecar at ``path`` with ``after`` unless it no longer equals ``before``."""
    problems = sidecar.validate({**after, "updated_at": sidecar.isotime()})
    if problems:
        log.error("sidecar not rewritten: the change would make it invalid", sidecar=str(path),
                  problems=problems[:3])
        return False
    if sidecar.read(path) != before:
        log.info("sidecar changed meanwhile; left for the next run", sidecar=str(path))
        return False
    sidecar.write(path, after)
    return True


def _set_note(doc: dict[str, Any], prefix: str, text: str) -> None:
    # one note per kind, replaced each time, so refreshes do not grow the file forever
    doc["notes"] = [n for n in doc.get("notes", []) if not n.startswith(prefix)] + [prefix + text]


def expire_output(doc: dict[str, Any], out: dict[str, Any], reason: str) -> None:
    """Mark one output of ``doc`` gone; the job too when it has no live video left."""
    out["state"] = "expired"
    out["url"] = None
    out["url_expires_at"] = None
    _set_note(doc, _EXPIRED_NOTE, f"{sidecar.isotime()}: {reason}")
    if doc.get("state") == "done" and not any(o.get("state") == "done" for o in doc.get("outputs", [])):
        doc["state"] = "expired"


# --------------------------------------------------------------------------- refresh


def link_lifetime(cfg: Config, store: LinkSigner, options: dict[str, Any] | None) -> float:
    """The job's link lifetime (manifest, else config), capped by what the store can sign."""
    wanted = (options or {}).get("link_lifetime") or cfg.links.lifetime
    return max(1.0, min(float(wanted), float(store.max_link_lifetime())))


def _expires_at(out: dict[str, Any]) -> datetime | None:
    try:
        return sidecar.parse_time(out["url_expires_at"])
    except (KeyError, TypeError, ValueError):
        return None


def _due(out: dict[str, Any], now: datetime, margin: float) -> bool:
    expires = _expires_at(out)
    return not out.get("url") or expires is None or expires - now <= timedelta(seconds=margin)


def _matches(path: Path, doc: dict[str, Any], names: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(doc.get("job", ""), n) or fnmatch.fnmatchcase(path.stem, n) for n in names)


def refresh_links(cfg: Config, store: LinkSigner, *, names: Iterable[str] = (), force: bool = False,
                  now: datetime | None = None) -> RefreshReport:
    """Re-sign links that expire within the margin; mark outputs whose object is gone.

    ``names`` (job names or glob patterns) limits the run to those jobs and re-signs their
    links whatever time they have left, as does ``force`` for every job.
    """
    now = now or sidecar.utcnow()
    wanted = list(names)
    report = RefreshReport()
    for path, doc in read_sidecars(cfg.paths.outbox):
        if doc.get("state") != "done":
            continue  # unfinished jobs belong to the worker; failed/expired have no live link
        if wanted and not _matches(path, doc, wanted):
            continue
        _refresh_one(cfg, store, path, doc, now, force or bool(wanted), report)
    log.info("link refresh finished", refreshed=len(report.refreshed), expired=len(report.expired),
             not_due=report.not_due, skipped=len(report.skipped), errors=len(report.errors))
    return report


def _refresh_one(cfg: Config, store: LinkSigner, path: Path, before: dict[str, Any], now: datetime,
                 force: bool, report: RefreshReport) -> None:
    doc = copy.deepcopy(before)
    job = doc.get("job", path.stem)
    changed: list[tuple[str, str, str | None]] = []  # (what, job/output, valid until)
    for out in doc.get("outputs", []):
        if out.get("state") != "done" or not out.get("key"):
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
        out["url"] = url
        out["url_expires_at"] = sidecar.isotime(expires)
        changed.append(("refreshed", label, out["url_expires_at"]))
    if not changed:
        return
    refreshed = [o.get("url_expires_at") for o in doc["outputs"] if o.get("state") == "done"]
    if refreshed:
        _set_note(doc, _REFRESH_NOTE, f"{sidecar.isotime(now)}, valid until {min(refreshed)}")
    if not rewrite_if_unchanged(path, before, doc):
        report.skipped.append(job)
        return
    for what, label, until in changed:
        if what == "expired":
            log.info("output expired: its video is no longer in storage", output=label, sidecar=str(path))
            report.expired.append(label)
        else:
            log.info("link re-signed", output=label, until=until)
            report.refreshed.append(label)


# --------------------------------------------------------------------------- expiry by key


def expire_objects(cfg: Config, objects: set[tuple[str, str]], *, reason: str) -> list[str]:
    """Mark every output stored at one of ``objects`` ((bucket, key) pairs) expired.

    Only finished sidecars are touched (done/failed). Returns the sidecars rewritten.
    """
    if not objects:
        return []
    rewritten = []
    for path, _doc in read_sidecars(cfg.paths.outbox):
        if _expire_in(cfg, path, objects, reason):
            rewritten.append(str(path))
    return rewritten


def _expire_in(cfg: Config, path: Path, objects: set[tuple[str, str]], reason: str) -> bool:
    # The object is gone for good, so unlike a refresh this must not wait for a next run:
    # when the worker rewrote the sidecar meanwhile, read it again and retry.
    for _attempt in range(RACE_RETRIES):
        before = sidecar.read(path)
        if before is None or before.get("state") not in ("done", "failed"):
            return False
        doc = copy.deepcopy(before)
        hits = [o for o in doc.get("outputs", []) if o.get("state") != "expired"
                and (o.get("bucket") or cfg.storage.bucket, o.get("key")) in objects]
        if not hits:
            return False
        for out in hits:
            expire_output(doc, out, reason)
        if rewrite_if_unchanged(path, before, doc):
            log.info("sidecar marked expired", job=doc.get("job"), sidecar=str(path),
                     outputs=[o.get("name") for o in hits], job_state=doc["state"], reason=reason)
            return True
    log.warning("sidecar kept changing; it is marked expired by a later run", sidecar=str(path))
    return False

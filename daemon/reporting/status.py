"""Where every job stands, read from the sidecars (outbox/*.json) and the work area.

The sidecars are the record users see, so status reads nothing else for jobs that have
one. A job claimed into a work area whose first sidecar is not written yet shows as
queued. Nothing here writes; it is safe to run from any machine that mounts the share.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from daemon.config import Config
from daemon.intake import claims
from daemon.outbox import ACTIVE_STATES, Entry, Outbox, State, isotime, parse_time, utcnow

STATE_ORDER = tuple(State)
# the timing that marks entry into each state (falls back to updated_at)
_STATE_SINCE = {State.QUEUED: "queued_at", State.RENDERING: "started_at", State.UPLOADING: "rendered_at",
                State.DONE: "finished_at", State.FAILED: "finished_at"}


@dataclass
class JobStatus:
    job: str
    id: str | None
    state: str
    progress: float | None
    host: str | None
    created_at: str | None
    updated_at: str | None
    age_seconds: float | None  # since the job was queued
    state_seconds: float | None  # since it entered its current state
    outputs: int = 0
    links_expire_at: str | None = None  # earliest expiry among the live links
    error: str | None = None
    sidecar: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seconds_since(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        return max(0.0, (now - parse_time(stamp)).total_seconds())
    except ValueError:
        return None


def from_sidecar(doc: dict[str, Any], path: Path | None, now: datetime) -> JobStatus:
    state = State.of(doc) or State.QUEUED
    timings = doc.get("timings") or {}
    since = timings.get(_STATE_SINCE.get(state, ""), None) or doc.get("updated_at")
    expiries = [o["url_expires_at"] for o in doc.get("outputs", []) if o.get("url") and o.get("url_expires_at")]
    err = doc.get("error")
    return JobStatus(
        job=doc.get("job", path.stem if path else "?"),
        id=doc.get("id"),
        state=state,
        progress=doc.get("progress"),
        host=doc.get("host"),
        created_at=doc.get("created_at"),
        updated_at=doc.get("updated_at"),
        age_seconds=_seconds_since(doc.get("created_at"), now),
        state_seconds=_seconds_since(since, now),
        outputs=len(doc.get("outputs", [])),
        links_expire_at=min(expiries) if expiries else None,
        error=f"{err.get('code')}: {err.get('message')}" if isinstance(err, dict) else None,
        sidecar=str(path) if path else None,
    )


def collect(cfg: Config, *, names: Iterable[str] = (), now: datetime | None = None,
            entries: list[Entry] | None = None) -> list[JobStatus]:
    """Every job, ordered by state then age; ``names`` are job names or glob patterns.

    ``entries`` is a scan of the outbox already made in this pass (else one is made).
    """
    now = now or utcnow()
    patterns = list(names)
    if entries is None:
        entries = Outbox(cfg.paths.outbox).scan()
    jobs = [from_sidecar(e.doc, e.path, now) for e in entries]
    jobs += _claimed_without_sidecar(cfg, {j.id for j in jobs}, now)
    if patterns:
        jobs = [j for j in jobs if any(fnmatch.fnmatchcase(j.job, p) for p in patterns)]
    rank = {s: i for i, s in enumerate(STATE_ORDER)}
    jobs.sort(key=lambda j: (rank.get(j.state, len(rank)), -(j.age_seconds or 0), j.job))
    return jobs


def _claimed_without_sidecar(cfg: Config, known_ids: set[str | None], now: datetime) -> list[JobStatus]:
    # A claim is written before its first sidecar; for that moment the work area is the record.
    out = []
    for rec in _claim_records(cfg):
        if rec.get("id") in known_ids:
            continue
        claimed_at = rec.get("claimed_at")
        age = _seconds_since(claimed_at, now)
        out.append(JobStatus(job=rec.get("name", "?"), id=rec.get("id"), state=State.QUEUED, progress=0.0,
                             host=rec.get("host"), created_at=claimed_at, updated_at=claimed_at,
                             age_seconds=age, state_seconds=age, notes=["claimed, no sidecar yet"]))
    return out


def _claim_records(cfg: Config) -> list[dict[str, Any]]:
    return [{"name": c.name, "id": c.id, "host": c.host, "claimed_at": c.claimed_at}
            for c in claims.list_claimed(cfg)]


def counts(jobs: Iterable[JobStatus]) -> dict[str, int]:
    tally = {s: 0 for s in STATE_ORDER}
    for j in jobs:
        tally[j.state] = tally.get(j.state, 0) + 1
    return tally


# --------------------------------------------------------------------------- presentation


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def as_json(jobs: list[JobStatus], now: datetime | None = None) -> dict[str, Any]:
    return {"generated_at": isotime(now), "counts": counts(jobs), "jobs": [j.as_dict() for j in jobs]}


def _detail(j: JobStatus, now: datetime) -> str:
    if j.state == State.RENDERING and j.progress is not None:
        return f"{j.progress * 100:.0f}% rendered"
    if j.state == State.DONE and j.links_expire_at:
        left = (parse_time(j.links_expire_at) - now).total_seconds()
        if left <= 0:
            return f"link expired {j.links_expire_at}"
        return f"link valid {human_duration(left)} more, until {j.links_expire_at}"
    if j.state == State.FAILED and j.error:
        return j.error
    if j.state == State.EXPIRED:
        return "video deleted from storage"
    return "; ".join(j.notes)


def format_table(jobs: list[JobStatus], now: datetime | None = None) -> str:
    """Human-readable: a summary line, then one line per job grouped by state."""
    now = now or utcnow()
    tally = counts(jobs)
    lines = ["  ".join(f"{s} {n}" for s, n in tally.items() if n or s in ACTIVE_STATES + (State.DONE, State.FAILED))]
    if not jobs:
        lines.append("no jobs")
        return "\n".join(lines)
    rows = [("STATE", "JOB", "AGE", "IN STATE", "HOST", "DETAIL")]
    for j in jobs:
        rows.append((j.state, j.job, human_duration(j.age_seconds), human_duration(j.state_seconds),
                     j.host or "-", _detail(j, now)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines.append("")
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    return "\n".join(line.rstrip() for line in lines)

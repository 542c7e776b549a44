"""Where every job stands: the inbox backlog, the sidecars (outbox/*.json), the work area.

The sidecars are the record users see, so status reads nothing else for jobs that have
one. Drops in the inbox that no daemon has claimed yet show as ``waiting``: complete
(with their place in line), still being copied, or waiting for a partner (with the time
left before they fail). Jobs that will run get an estimated start and finish, from the
render times of recent jobs. Nothing here writes; it is safe to run from any machine that
mounts the share.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from daemon.config import Config
from daemon import workarea
from daemon.intake.inbox import Inbox
from daemon.jobstate import JOB_STATES, WAITING
from daemon.outbox import ACTIVE_STATES, Entry, Outbox, State, isotime, parse_time, utcnow

STATE_ORDER = JOB_STATES
RECENT_JOBS = 20  # finished jobs whose render times make the estimates
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
    position: int | None = None  # place in line among the jobs that will run (1 = next)
    starts_at: str | None = None  # estimated, from recent render times
    finishes_at: str | None = None
    files: list[str] = field(default_factory=list)  # inbox names, for waiting drops
    device: str | None = None  # where its host renders it (cpu, cuda:N)

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
        device=doc.get("device"),
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
    jobs += claimed_without_sidecar(cfg, {j.id for j in jobs}, now)
    jobs += inbox_backlog(cfg, now)
    _estimate(jobs, entries, now)
    if patterns:
        jobs = [j for j in jobs if any(fnmatch.fnmatchcase(j.job, p) for p in patterns)]
    rank = {s: i for i, s in enumerate(STATE_ORDER)}
    jobs.sort(key=lambda j: (rank.get(j.state, len(rank)), -(j.age_seconds or 0), j.job))
    return jobs


def claimed_without_sidecar(cfg: Config, known_ids: set[str | None], now: datetime) -> list[JobStatus]:
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


def inbox_backlog(cfg: Config, now: datetime) -> list[JobStatus]:
    """Drops no daemon has claimed yet, in the order the daemons will take them."""
    inbox = Inbox(cfg, settled_by_mtime=True)
    epoch = now.timestamp()
    try:
        specs = inbox.scan(epoch)
    except OSError:
        return []  # an unmounted share: the sidecars still tell most of the story
    out: list[JobStatus] = []
    for spec in specs:
        age = max(0.0, epoch - spec.ready_since) if spec.ready_since else None
        if spec.error is not None:
            note = f"fails when claimed: {spec.error.code}: {spec.error.message}"
        else:
            note = "complete, waiting to be claimed"
        out.append(JobStatus(job=spec.name, id=None, state=WAITING, progress=None, host=None, created_at=None,
                             updated_at=None, age_seconds=age, state_seconds=age, notes=[note],
                             files=sorted(_relative(p, cfg.paths.inbox) for p in spec.files)))
        if spec.error is not None:
            out[-1].position = -1  # not in line: it is failed as soon as a daemon sees it
    for w in inbox.waiting:
        left = max(0.0, w.until - epoch)
        note = (f"still being copied (settles in {human_duration(left)})" if w.reason == "settling" else
                f"waiting for its partner; fails in {human_duration(left)} if none comes")
        out.append(JobStatus(job=w.name, id=None, state=WAITING, progress=None, host=None, created_at=None,
                             updated_at=None, age_seconds=None, state_seconds=None, notes=[note],
                             files=list(w.files), position=-1))
    return out


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _estimate(jobs: list[JobStatus], entries: list[Entry], now: datetime) -> None:
    """Place in line, and estimated start and finish, from the render times of recent jobs.

    Every host that rendered recently is a slot; the jobs in line take the slot that frees
    first: the jobs rendering now finish after their share of the average time left, then
    queued (claimed) jobs oldest first, then complete drops in the inbox in claim order.
    """
    finished = sorted((e for e in entries if e.state is State.DONE and e.finished_at()),
                      key=lambda e: e.finished_at() or 0.0)[-RECENT_JOBS:]
    durations = [float((e.doc.get("timings") or {}).get("render_seconds") or 0)
                 + float((e.doc.get("timings") or {}).get("upload_seconds") or 0) for e in finished]
    durations = [d for d in durations if d > 0]
    average = sum(durations) / len(durations) if durations else None
    active = [j for j in jobs if j.state in (State.RENDERING, State.UPLOADING)]
    hosts = {e.doc.get("host") for e in finished} | {j.host for j in active}
    slots = [0.0] * max(1, len({h for h in hosts if h}))
    epoch = now.timestamp()
    for j in active:
        left = (average or 0.0) * (1.0 - (j.progress or 0.0)) if j.state == State.RENDERING else 0.0
        k = slots.index(min(slots))
        slots[k] = max(slots[k], left)
        if average is not None:
            j.finishes_at = isotime(epoch + slots[k])
    line = sorted((j for j in jobs if j.state == State.QUEUED), key=lambda j: -(j.age_seconds or 0))
    line += [j for j in jobs if j.state == WAITING and j.position is None]
    for n, j in enumerate(line, start=1):
        j.position = n
        if average is None:
            continue
        k = slots.index(min(slots))
        j.starts_at = isotime(epoch + slots[k])
        slots[k] += average
        j.finishes_at = isotime(epoch + slots[k])
    for j in jobs:
        if j.position == -1:
            j.position = None


def _claim_records(cfg: Config) -> list[dict[str, Any]]:
    return [{"name": c.name, "id": c.id, "host": c.host, "claimed_at": c.claimed_at}
            for c in workarea.list_claimed(cfg)]


def in_line(jobs: Iterable[JobStatus]) -> int:
    """Jobs that will run: claimed and queued, or complete in the inbox."""
    return sum(1 for j in jobs if j.position is not None)


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


def _clock(stamp: str | None, now: datetime) -> str:
    """An estimate as a person reads it: "~10:42:05Z" today, "~Nov 29 10:42Z" later (UTC)."""
    if not stamp:
        return "?"
    t = parse_time(stamp)
    return "~" + (t.strftime("%H:%M:%S") if t.date() == now.date() else t.strftime("%b %d %H:%M")) + "Z"


def _detail(j: JobStatus, now: datetime) -> str:
    line = ""
    if j.position is not None:
        line = f"#{j.position} in line" + (f", starts {_clock(j.starts_at, now)}, done {_clock(j.finishes_at, now)}"
                                           if j.starts_at else "")
        if j.state == WAITING:
            return f"{line}; complete in the inbox ({', '.join(j.files)})"
        return f"{line}; " + "; ".join(j.notes) if j.notes else line
    if j.state == WAITING:
        return "; ".join(j.notes) + (f" ({', '.join(j.files)})" if j.files else "")
    if j.state == State.RENDERING and j.progress is not None:
        return f"{j.progress * 100:.0f}% rendered" + (f", done {_clock(j.finishes_at, now)}" if j.finishes_at else "")
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
    shown = (WAITING, *ACTIVE_STATES, State.DONE, State.FAILED)
    lines = ["  ".join(f"{s} {n}" for s, n in tally.items() if n or s in shown)]
    if not jobs:
        lines.append("no jobs")
        return "\n".join(lines)
    rows = [("STATE", "JOB", "AGE", "IN STATE", "HOST", "DETAIL")]
    for j in jobs:
        where = f"{j.host} {j.device}" if j.host and j.device and j.state in ACTIVE_STATES else j.host
        rows.append((j.state, j.job, human_duration(j.age_seconds), human_duration(j.state_seconds),
                     where or "-", _detail(j, now)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines.append("")
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------- remote renderers


def remote_servers(cfg: Config, *, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Each HeyGem server: up or down (asked now), and the job it renders for any daemon.

    The job is found in the work areas: a heygem render keeps its task's server and code
    next to its output (``out/.*.heygem.json``) while the task runs.
    """
    if not cfg.render.heygem.servers:
        return []
    from lipsync.engines.heygem.protocol import Client, Server  # HTTP client: imported on use

    busy: dict[str, str] = {}
    for record in cfg.work_dir.glob("*/*/out/.*.heygem.json"):
        try:
            url = json.loads(record.read_text()).get("url")
            job = workarea.load_claimed(record.parent.parent, cfg).name
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(url, str):
            busy[url] = job
    seen: dict[str, dict] = {}  # server name -> what a daemon last published (tells since when it is down)
    for published in cfg.work_dir.glob(".servers-*.json"):
        try:
            for row in json.loads(published.read_text()).get("servers", []):
                if row.get("down_since") and (row["server"] not in seen or row["down_since"] <
                                              (seen[row["server"]].get("down_since") or float("inf"))):
                    seen[row["server"]] = row
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            continue
    rows = []
    for raw in cfg.render.heygem.servers:
        server = Server(url=str(raw["url"]), host_dir=str(raw["host_dir"]))
        up = Client(server, timeout=timeout).probe()
        state = "down" if not up else "busy" if server.url in busy else "idle"
        row = {"server": server.name, "url": server.url, "state": state, "job": busy.get(server.url),
               "down_since": None, "reason": None}
        known = seen.get(server.name)
        if state == "down" and known is not None:
            row["down_since"], row["reason"] = isotime(known["down_since"]), known.get("reason")
        rows.append(row)
    return rows


def format_servers(rows: list[dict[str, Any]]) -> str:
    lines = ["", "HEYGEM SERVER  STATE  JOB"]
    width = max(len(r["server"]) for r in rows)
    for r in rows:
        detail = r["job"] or (f"since {r['down_since']}: {r['reason']}" if r.get("down_since") else "")
        lines.append(f"{r['server'].ljust(width)}  {r['state']}" + (f"  {detail}" if detail else ""))
    return "\n".join(lines)


def daemons_on_share(cfg: Config, now: float | None = None) -> list[dict[str, Any]]:
    """Every daemon that published its presence on the share: host, engine, render slots
    (and their jobs), seconds since it was last seen, and whether that is within the lease
    timeout (alive) -- judged by the files' mtimes, the share's own clock."""
    rows = []
    for path in sorted(cfg.work_dir.glob(".daemon-*.json")):
        try:
            doc = json.loads(path.read_text())
            seen = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        age = max(0.0, (now or time.time()) - seen)
        rows.append({"host": doc.get("host"), "engine": doc.get("engine"), "slots": doc.get("slots", []),
                     "version": doc.get("version"), "stopping": bool(doc.get("stopping")),
                     "seen_seconds_ago": round(age, 1), "alive": age <= float(cfg.cluster.lease_timeout)})
    return rows

"""The job record: the sidecar ``outbox/NAME.json`` that users read, owned by this module alone.

Two kinds of writers touch a sidecar, and each goes through one door here:

* :class:`Sidecar` -- the record of one run of a job, written only by the daemon that owns
  the job. Its methods are the transitions (``queued``, ``rendering``, ``output_rendered``,
  ``upload_waiting``, ``done``, ``failed`` ...); each one checks the document against
  ``docs/sidecar.schema.json`` and writes it atomically.
* :class:`Outbox` -- the folder: one :meth:`Outbox.scan` per pass for status, metrics, link
  refresh and cleanup, and :meth:`Outbox.replace_if_unchanged` for their edits of finished
  records (a re-signed link, an expired video).

Nothing lost, nothing twice -- the rules every write obeys:

1. **Fenced writes.** The owner's new document is written to a temp file *inside the job's
   work folder* and renamed from there over the sidecar. A takeover renames that folder
   into the taker's work area, so a daemon that was frozen and wakes up after losing its
   job cannot write any more: ``rename(2)`` resolves the source path atomically, and the
   path no longer exists (ENOENT). There is no window between an ownership check and the
   write it guards, because the write *is* the check.
2. **Generations.** Each claim starts at generation 1 and each takeover adds one (kept in
   the lease, stamped into the sidecar). A write whose generation is older than the one
   on disk is refused: a second line of defence where a network filesystem's caches
   could let a stale rename through (see docs/multihost.md).
3. **Final is final.** A record in ``done``, ``failed`` or ``expired`` is never rewritten to
   an earlier state by anyone: ``done`` may only become ``expired`` (or stay ``done`` with a
   fresh link).

A refused write raises :class:`RecordFenced`; the caller drops the job without writing.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import write_atomic
from daemon.errors import JobError
from daemon.intake.names import fit_name
from daemon.logsetup import get_logger

if TYPE_CHECKING:
    from daemon.jobs import ClaimedJob

log = get_logger(__name__)

SCHEMA_ID = "lipsyncd.sidecar/1"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "sidecar.schema.json"
PROGRESS_WRITE_INTERVAL = 1.0  # seconds between progress-only rewrites: a share hates one per frame
FENCE_TEMP_PREFIX = ".sidecar."  # temp files of fenced writes, inside the job's work folder


class State(StrEnum):
    """The job's state, as the sidecar's ``state`` says it."""

    QUEUED = "queued"
    RENDERING = "rendering"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @classmethod
    def of(cls, doc: dict[str, Any]) -> State | None:
        try:
            return cls(doc.get("state"))
        except ValueError:
            return None


ACTIVE_STATES = (State.QUEUED, State.RENDERING, State.UPLOADING)
FINAL_STATES = frozenset({State.DONE, State.FAILED, State.EXPIRED})
# what a final record may still become (a fresh link keeps "done"; a deleted video expires it)
_FINAL_MAY_BECOME = {State.DONE: {State.DONE, State.EXPIRED}, State.FAILED: {State.FAILED, State.EXPIRED},
                     State.EXPIRED: {State.EXPIRED}}


class OutputState(StrEnum):
    """The state of one output video within a job."""

    PENDING = "pending"
    RENDERING = "rendering"
    RENDERED = "rendered"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"


class RecordFenced(Exception):
    """A write was refused: another daemon owns the job now, or its record is final."""


# --------------------------------------------------------------------------- times


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def isotime(t: datetime | float | None = None) -> str:
    """ISO-8601 UTC with a Z suffix, second precision (the schema's time format)."""
    if t is None:
        t = utcnow()
    elif isinstance(t, (int, float)):
        t = datetime.fromtimestamp(t, timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- documents


@lru_cache(maxsize=1)
def _validator():  # noqa: ANN202 - jsonschema's validator type
    import jsonschema  # only where documents are written or checked; status readers skip it

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of ``doc`` as readable strings (empty when valid)."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def read_document(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path``, or None when there is none (or it is not one of ours)."""
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        return None
    return doc


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode() + b"\n"


def _refusal(current: dict[str, Any] | None, doc: dict[str, Any], generation: int | None) -> str | None:
    """Why writing ``doc`` over ``current`` would break the rules above, else None."""
    if current is None or current.get("id") != doc.get("id"):
        return None
    if generation is not None:
        on_disk = current.get("generation")
        if isinstance(on_disk, int) and on_disk > generation:
            return f"the job was taken over (generation {on_disk} on disk, this writer has {generation})"
    was, will = State.of(current), State.of(doc)
    if was is not None and was.final and will not in _FINAL_MAY_BECOME[was]:
        return f"the record is final ({was}) and cannot become {will}"
    return None


@dataclass(frozen=True)
class Entry:
    """One sidecar as read by a scan: where it is and what it said."""

    path: Path
    doc: dict[str, Any]

    @property
    def job(self) -> str:
        return str(self.doc.get("job") or self.path.stem)

    @property
    def id(self) -> str | None:
        return self.doc.get("id")

    @property
    def state(self) -> State | None:
        return State.of(self.doc)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.doc.get("outputs") or [])

    def finished_at(self) -> float | None:
        try:
            return parse_time((self.doc.get("timings") or {})["finished_at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return None


def initial_document(*, job: str, job_id: str, host: str, engine: str | None, inputs: dict[str, Any],
                     options: dict[str, Any], queued_at: str, notes: list[str] = ()) -> dict[str, Any]:
    """The first version of a job's record: "queued", nothing rendered yet."""
    now = isotime()
    return {"schema": SCHEMA_ID, "job": job, "id": job_id, "state": State.QUEUED, "progress": 0.0,
            "created_at": now, "updated_at": now, "host": host, "engine": engine, "inputs": inputs,
            "options": options, "outputs": [], "timings": {"queued_at": queued_at}, "error": None,
            "notes": list(notes)}


@dataclass(frozen=True)
class Reservation:
    """The record name a new job got, and the failed record of an earlier run it replaced."""

    name: str
    replaced: Entry | None = None  # a failed run of the same name, dropped again
    taken: Entry | None = None  # the record that made this job take another name


class Outbox:
    """The folder of sidecars."""

    _lock = threading.Lock()  # one writer at a time per process: links refresh vs cleanup

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_for(self, job_name: str) -> Path:
        return self.folder / f"{job_name}.json"

    def read(self, job_name: str) -> Entry | None:
        path = self.path_for(job_name)
        doc = read_document(path)
        return Entry(path, doc) if doc is not None else None

    def scan(self) -> list[Entry]:
        """Every readable sidecar, by file name (temp files of atomic writes are skipped)."""
        return list(self._iter())

    def _iter(self) -> Iterator[Entry]:
        try:
            names = sorted(e.name for e in os.scandir(self.folder) if e.name.endswith(".json")
                           and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            path = self.folder / name
            doc = read_document(path)
            if doc is not None:
                yield Entry(path, doc)

    def reserve(self, name: str, first: dict[str, Any]) -> Reservation:
        """Give a newly claimed job a record name of its own and write its first record there.

        ``name`` when it is free (created exclusively: of two daemons claiming jobs of one
        name at once, one gets it); the same name when its record is a *failed* run (the
        user fixed the inputs and dropped them again: the new run replaces it); else
        ``NAME-2``, ``NAME-3``, ... A record already carrying this job's id is kept
        (a claim completed after a crash). Never overwrites another job's record.
        """
        taken: Entry | None = None
        for n in range(1, 10_000):
            candidate = name if n == 1 else f"{fit_name(name, 190)}-{n}"
            path = self.path_for(candidate)
            doc = dict(first, job=candidate, updated_at=isotime())
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                write_atomic(path, _encode(doc), mode=0o644, exclusive=True)
                return Reservation(candidate, taken=taken)
            except FileExistsError:
                pass
            current = read_document(path)
            if current is None:
                continue  # not ours to judge (unreadable, or not a sidecar): leave it, take another name
            entry = Entry(path, current)
            if entry.id == first["id"]:
                return Reservation(candidate, taken=taken)
            if entry.state is State.FAILED and n == 1 and self.replace_if_unchanged(entry, doc):
                return Reservation(candidate, replaced=entry)
            taken = taken or entry
        raise FileExistsError(f"{self.folder}: no free record name for {name!r}")

    def add_note(self, entry: Entry, text: str) -> bool:
        """Add a remark to another job's record (housekeeping door; retried if it changed)."""
        for _attempt in range(3):
            doc = json.loads(_encode(entry.doc))
            doc["notes"] = [*doc.get("notes", []), text]
            if self.replace_if_unchanged(entry, doc):
                return True
            fresh = read_document(entry.path)
            if fresh is None:
                return False
            entry = Entry(entry.path, fresh)
        return False

    def replace_if_unchanged(self, before: Entry, after: dict[str, Any]) -> bool:
        """Write ``after`` over ``before``'s sidecar unless it changed since it was read.

        For the edits of housekeeping (links, cleanup), which never own a job: a record the
        worker rewrote meanwhile is left for the next run rather than overwritten.
        """
        problems = validate({**after, "updated_at": isotime()})
        if problems:
            log.error("sidecar not rewritten: the change would make it invalid", sidecar=str(before.path),
                      problems=problems[:3])
            return False
        with self._lock:
            current = read_document(before.path)
            if current != before.doc:
                log.info("sidecar changed meanwhile; left for the next run", sidecar=str(before.path))
                return False
            reason = _refusal(current, after, None)
            if reason is not None:
                log.error("sidecar not rewritten", sidecar=str(before.path), reason=reason)
                return False
            doc = dict(after, updated_at=isotime())
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(before.path, _encode(doc), mode=0o644)  # readable by the team on the share
        return True


# --------------------------------------------------------------------------- edits of finished records

_REFRESH_NOTE = "links re-signed "
_EXPIRED_NOTE = "video deleted from storage "


def _set_note(doc: dict[str, Any], prefix: str, text: str) -> None:
    # one note per kind, replaced each time, so refreshes do not grow the file forever
    doc["notes"] = [n for n in doc.get("notes", []) if not n.startswith(prefix)] + [prefix + text]


def expire_output(doc: dict[str, Any], out: dict[str, Any], reason: str) -> None:
    """Mark one output of ``doc`` gone; the job too when it has no live video left."""
    out["state"] = OutputState.EXPIRED
    out["url"] = None
    out["url_expires_at"] = None
    _set_note(doc, _EXPIRED_NOTE, f"{isotime()}: {reason}")
    if doc.get("state") == State.DONE and not any(o.get("state") == OutputState.DONE for o in doc.get("outputs", [])):
        doc["state"] = State.EXPIRED


def orphaned(doc: dict[str, Any], message: str) -> dict[str, Any]:
    """``doc`` (an active record whose work folder is nowhere) as failed ``input_changed``."""
    new = json.loads(_encode(doc))
    new["state"] = State.FAILED
    new["error"] = {"code": "input_changed", "message": message, "retryable": False}
    new.pop("upload", None)
    for out in new.get("outputs", []):
        if out.get("state") != OutputState.DONE:
            out["state"], out["error"] = OutputState.FAILED, message
    new.setdefault("timings", {})["finished_at"] = isotime()
    return new


def relink_output(out: dict[str, Any], url: str, expires: datetime | float) -> None:
    out["url"] = url
    out["url_expires_at"] = isotime(expires)


def note_links_refreshed(doc: dict[str, Any], now: datetime) -> None:
    live = [o.get("url_expires_at") for o in doc.get("outputs", []) if o.get("state") == OutputState.DONE]
    if live:
        _set_note(doc, _REFRESH_NOTE, f"{isotime(now)}, valid until {min(live)}")


# --------------------------------------------------------------------------- the owner's record


def name_notes(job: ClaimedJob) -> list[str]:
    """What the record says about the job's name, when it is not the name as dropped."""
    if job.original_name:
        return [f"the job's name is {len(job.original_name.encode())} bytes, too long for file names; it is "
                f"shortened to {job.name!r} (dropped as {job.original_name!r})"]
    return []


class Sidecar:
    """The record of one run of a job, written only by the daemon that owns the job.

    ``fence`` is the job's work folder (writes are renamed out of it, see the module
    docstring); ``generation`` the ownership generation from the job's lease.
    """

    def __init__(self, outbox: Outbox, doc: dict[str, Any], *, fence: Path | None, generation: int,
                 queued_epoch: float | None = None) -> None:
        self.outbox = outbox
        self.doc = doc
        self.path = outbox.path_for(doc["job"])
        self.fence = fence
        self.generation = generation
        self._last_write = 0.0
        self._lock = threading.RLock()
        if queued_epoch is None:
            try:
                queued_epoch = parse_time(doc["timings"]["queued_at"]).timestamp()
            except (KeyError, ValueError):
                queued_epoch = time.time()
        self.queued_epoch = queued_epoch  # sub-second precision for total_seconds

    @classmethod
    def open(cls, outbox: Outbox, job: ClaimedJob, *, host: str, engine: str | None, generation: int,
             fence: Path | None) -> tuple[Sidecar, bool]:
        """The job's record: the one already written for this run (resumed), else a new one."""
        old = read_document(outbox.path_for(job.name))
        if old is not None and old.get("id") == job.id:
            old["host"] = host  # a job taken over from another host is ours now
            if engine is not None and old.get("engine") is None:
                old["engine"] = engine
            # the first record, written at the claim, is not a resumed run
            resumed = old.get("state") != State.QUEUED or "started_at" in (old.get("timings") or {})
            return cls(outbox, old, fence=fence, generation=generation), resumed
        doc = initial_document(job=job.name, job_id=job.id, host=host, engine=engine,
                               inputs=job.inputs_document(), options=job.options.as_dict(),
                               queued_at=job.claimed_at, notes=name_notes(job))
        claimed = parse_time(job.claimed_at).timestamp()
        # claimed a moment ago: now is more precise than the record's whole seconds
        epoch = time.time() if time.time() - claimed < 1.5 else claimed
        return cls(outbox, doc, fence=fence, generation=generation, queued_epoch=epoch), False

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> State:
        return State(self.doc["state"])

    @property
    def job(self) -> str:
        return self.doc["job"]

    def output(self, name: str) -> dict[str, Any]:
        for out in self.doc["outputs"]:
            if out["name"] == name:
                return out
        raise KeyError(name)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the document for hooks (webhooks, metrics) that must not see later edits."""
        with self._lock:
            return json.loads(_encode(self.doc))  # plain JSON types, detached from later edits

    def total_seconds(self) -> float:
        return round(max(0.0, time.time() - self.queued_epoch), 3)

    # ------------------------------------------------------------------ transitions

    def queued(self, *, inputs: dict[str, Any] | None = None) -> None:
        """Claimed (or back after a restart), waiting to render."""
        with self._lock:
            if inputs is not None:
                self.doc["inputs"] = inputs
            self.doc["error"] = None
            self._set(State.QUEUED)

    def rendering(self, *, engine: str, outputs: list[tuple[str, str]], notes: list[str] = (),
                  device: str | None = None) -> None:
        """Rendering starts: one output entry per (name, template), kept on a resume."""
        with self._lock:
            self.doc["engine"] = engine
            if device is not None:
                self.doc["device"] = device
            have = {o["name"] for o in self.doc["outputs"]}
            for name, template in outputs:
                if name not in have:
                    self.doc["outputs"].append({"name": name, "template": template,
                                                "state": OutputState.PENDING, "engine": engine})
            for note in notes:
                self.add_note(note)
            self.doc["timings"].setdefault("started_at", isotime())
            self._set(State.RENDERING)

    def output_rendering(self, name: str) -> None:
        with self._lock:
            self.output(name)["state"] = OutputState.RENDERING
            self._write()

    def progress(self, fraction: float) -> None:
        """Render progress of the whole job; rewritten at most once per interval."""
        with self._lock:
            self.doc["progress"] = round(min(1.0, max(0.0, fraction)), 4)
            if time.monotonic() - self._last_write >= PROGRESS_WRITE_INTERVAL:
                self._write(check=False)

    def output_rendered(self, name: str, fields: dict[str, Any], notes: list[str] = ()) -> None:
        """One output's MP4 is complete (or was, before a restart: ``fields`` from its record)."""
        with self._lock:
            out = self.output(name)
            if out.get("state") != OutputState.DONE:  # uploaded before a restart: keep its link
                out.update(fields, state=OutputState.RENDERED)
            for note in notes:
                self.add_note(note)

    def rendered(self) -> None:
        with self._lock:
            self.doc["progress"] = 1.0
            self.doc["timings"]["rendered_at"] = isotime()

    def uploading(self) -> None:
        with self._lock:
            self._set(State.UPLOADING)

    def output_uploading(self, name: str) -> None:
        with self._lock:
            self.output(name)["state"] = OutputState.UPLOADING

    def output_uploaded(self, name: str, *, url: str, expires: datetime | float, bucket: str, key: str,
                        local_path: str | None) -> None:
        with self._lock:
            out = self.output(name)
            out.update(state=OutputState.DONE, url=url, url_expires_at=isotime(expires), bucket=bucket, key=key,
                       content_type="video/mp4")
            if local_path is not None:
                out["local_path"] = local_path

    def upload_waiting(self, error: str | None, *, attempt: int, next_at: float) -> None:
        """The store cannot be reached: the job waits in "uploading" and says until when."""
        with self._lock:
            for out in self.doc["outputs"]:
                if out.get("state") == OutputState.UPLOADING:
                    out["state"] = OutputState.RENDERED
            self.doc["upload"] = {"attempts": attempt, "last_error": error, "next_retry_at": isotime(next_at)}
            self._set(State.UPLOADING)

    def done(self, *, render_seconds: float, upload_seconds: float) -> None:
        with self._lock:
            self.doc.pop("upload", None)
            now = isotime()
            timings = self.doc["timings"]
            timings["uploaded_at"] = now
            timings["finished_at"] = now
            timings["render_seconds"] = round(render_seconds, 3)
            timings["upload_seconds"] = round(upload_seconds, 3)
            timings["total_seconds"] = self.total_seconds()
            self.doc["error"] = None
            self.doc["progress"] = 1.0
            self._set(State.DONE)

    def failed(self, error: JobError, *, retryable: bool) -> None:
        """Failed for good; every output not uploaded says why."""
        with self._lock:
            self._set_error(error, retryable=retryable)
            for out in self.doc["outputs"]:
                if out.get("state") != OutputState.DONE:
                    out["state"] = OutputState.FAILED
                    out["error"] = error.message
            self.doc["timings"]["finished_at"] = isotime()
            self.doc["timings"]["total_seconds"] = self.total_seconds()
            self.doc.pop("upload", None)
            self._set(State.FAILED)

    def retry_later(self, error: JobError, *, attempt: int, attempts: int, when: float) -> None:
        """A transient failure: back to "queued" with the error, to render again at ``when``."""
        with self._lock:
            self._set_error(error, retryable=True)
            for out in self.doc["outputs"]:
                if out.get("state") == OutputState.RENDERING:
                    out["state"] = OutputState.PENDING
            self.add_note(f"attempt {attempt} of {attempts} failed ({error.code}); retrying at {isotime(when)}")
            self._set(State.QUEUED)

    def interrupted(self, phase: str) -> None:
        """A shutdown stopped the job: back to "queued"; the next start resumes it."""
        with self._lock:
            for out in self.doc["outputs"]:
                if out.get("state") == OutputState.RENDERING:
                    out["state"] = OutputState.PENDING
                elif out.get("state") == OutputState.UPLOADING:
                    out["state"] = OutputState.RENDERED
            self.add_note(f"interrupted by a shutdown while {phase} at {isotime()}; "
                          "it resumes when the daemon starts again")
            self._set(State.QUEUED)

    def vanished(self, error: JobError) -> None:
        """The job's work folder is gone -- removed by hand, not taken over by another daemon:
        the record says so (failed), written without the fence the folder no longer gives,
        but still refused to an older generation or over a final record."""
        with self._lock:
            self.fence = None
            self.failed(error, retryable=False)

    def resumed(self) -> None:
        self.add_note(f"resumed at {isotime()}")

    def add_note(self, text: str) -> None:
        with self._lock:
            if text not in self.doc["notes"]:
                self.doc["notes"].append(text)

    # ------------------------------------------------------------------ writing

    def _set_error(self, error: JobError, *, retryable: bool) -> None:
        data = error.as_dict()
        data["retryable"] = retryable
        if not data.get("file"):
            data.pop("file", None)
        self.doc["error"] = data

    def _set(self, state: State) -> None:
        self.doc["state"] = state
        self._write()

    def _write(self, *, check: bool = True) -> None:
        doc = self.doc
        doc["updated_at"] = isotime()
        doc["generation"] = self.generation
        if check:
            problems = validate(doc)
            if problems:  # a bug: say so loudly, but never lose the record over it
                log.error("sidecar does not match its schema", sidecar=str(self.path), problems=problems[:5])
        reason = _refusal(read_document(self.path), doc, self.generation)
        if reason is not None:
            raise RecordFenced(reason)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fence is None:
            write_atomic(self.path, _encode(doc), mode=0o644)
        else:
            fenced_replace(self.fence, self.path, _encode(doc))
        self._last_write = time.monotonic()


_cross_device_warned = False


def fenced_replace(fence: Path, target: Path, data: bytes) -> None:
    """Write ``data`` to a temp file inside ``fence`` and rename it over ``target``.

    :class:`RecordFenced` when ``fence`` is gone (moved away by a takeover, or finished):
    the caller no longer owns what ``target`` describes. When ``fence`` and ``target`` are
    on different filesystems the rename cannot cross them; the write then goes through a
    temp file beside ``target`` and only the generation rule guards it (logged once).
    """
    global _cross_device_warned
    try:
        fd, tmp = tempfile.mkstemp(prefix=FENCE_TEMP_PREFIX, suffix=".tmp", dir=fence)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise RecordFenced(f"the job's work folder {fence} is gone (taken over or finished)") from e
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; readers on the share need 0644
        os.rename(tmp, target)
    except (FileNotFoundError, NotADirectoryError) as e:
        _unlink_quietly(tmp)
        raise RecordFenced(f"the job's work folder {fence} is gone (taken over or finished)") from e
    except OSError as e:
        _unlink_quietly(tmp)
        if e.errno != errno.EXDEV:
            raise
        if not _cross_device_warned:
            _cross_device_warned = True
            log.warning("outbox and work area are on different filesystems: sidecar writes are guarded by "
                        "generation only (see docs/multihost.md)", outbox=str(target.parent))
        write_atomic(target, data, mode=0o644)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

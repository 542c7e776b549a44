"""The owner's record of one run of a job: transitions, and fenced writes.

See the package docstring for the rules every write obeys.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import write_atomic
from daemon.errors import JobError
from lipsync.errors import shorten
from daemon.logsetup import get_logger
from daemon.outbox.folder import Outbox
from daemon.outbox.record import (OutputState, RecordFenced, State, encode, initial_document, isotime, name_notes,
                                  parse_time, read_document, refusal, validate)

if TYPE_CHECKING:
    from daemon.jobs import ClaimedJob

log = get_logger(__name__)

PROGRESS_WRITE_INTERVAL = 1.0  # seconds between progress-only rewrites: a share hates one per frame
FENCE_TEMP_PREFIX = ".sidecar."  # temp files of fenced writes, inside the job's work folder


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
            return json.loads(encode(self.doc))  # plain JSON types, detached from later edits

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
                        local_path: str | None, link: str | None = None) -> None:
        with self._lock:
            out = self.output(name)
            out.update(state=OutputState.DONE, url=url, url_expires_at=isotime(expires), bucket=bucket, key=key,
                       content_type="video/mp4")
            if link is not None:
                out["link"] = link
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
            reason = shorten(error.message, 200)
            self.add_note(f"attempt {attempt} of {attempts} failed ({error.code}: {reason}); retrying at "
                          f"{isotime(when)}")
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
        reason = refusal(read_document(self.path), doc, self.generation)
        if reason is not None:
            raise RecordFenced(reason)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fence is None:
            write_atomic(self.path, encode(doc), mode=0o644)
        else:
            fenced_replace(self.fence, self.path, encode(doc))
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

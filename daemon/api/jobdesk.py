"""What the API can say and do about a job, read from the share (blocking calls).

The sidecars in the outbox are the record of every job the daemons claimed; drops no
daemon has claimed yet are read from the inbox (state ``waiting``). Nothing here renders
or queues: deleting a waiting job takes its files out of the inbox, cancelling a claimed
one leaves the daemon a request in the job's work folder (``lipsyncd cancel`` does the
same), deleting a finished one deletes its videos from the store and marks the sidecar
expired, and a retry drops a failed job's kept inputs into the inbox again.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.api.drops import Staging, api_dir
from daemon.api.errors import ApiError
from daemon.config import Config
from daemon.housekeeping.links import expire_objects
from daemon.intake import claims
from daemon import workarea
from daemon.intake.inbox import Inbox
from daemon.names import SUBTITLE_EXTENSIONS, fit_name, job_stem
from daemon.jobstate import JOB_STATES, WAITING
from daemon.logsetup import get_logger
from daemon.outbox import Outbox, OutputState, State, read_document, utcnow
from daemon.reporting import status
from daemon.storage import Store

log = get_logger(__name__)
LIST_STATES = JOB_STATES
CLAIM_RACE_WAIT = 5.0  # seconds to wait for the record of a job a daemon claimed as we withdrew it


@dataclass
class Deleted:
    name: str
    action: str  # withdrawn | cancel_requested | deleted | already_deleted
    videos_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "videos_deleted": self.videos_deleted}


class JobDesk:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.outbox = Outbox(cfg.paths.outbox)
        # sidecars as last read, by file name: (mtime_ns, size) -> document. A listing stats
        # every sidecar but reads only the ones that changed, so paging through 10,000 jobs
        # costs a directory scan, not 10,000 JSON parses.
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._cache_lock = threading.Lock()

    def records(self) -> list[dict[str, Any]]:
        """Every sidecar in the outbox (cached by mtime and size)."""
        fresh: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        try:
            entries = list(os.scandir(self.cfg.paths.outbox))
        except FileNotFoundError:
            return []
        with self._cache_lock:
            old = self._cache
        for e in entries:
            if not e.name.endswith(".json") or e.name.startswith("."):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            hit = old.get(e.name)
            if hit is not None and hit[0] == stamp:
                fresh[e.name] = hit
                continue
            doc = read_document(Path(e.path))
            if doc is not None:
                fresh[e.name] = (stamp, doc)
        with self._cache_lock:
            self._cache = fresh
        return [doc for _stamp, doc in fresh.values()]

    # -- reading -------------------------------------------------------------------------
    def find(self, name: str) -> dict[str, Any] | None:
        """The job's sidecar; for a drop not claimed yet a small document with state waiting.

        A failed job dropped again (a retry) reads as waiting, then queued, from the moment it
        is back in the inbox -- never as the old failure -- until its new run writes its
        record; the failed attempt is kept as ``previous``. A claimed job whose first record
        is not written yet reads as queued.
        """
        waiting = self._unclaimed(name)
        entry = self.outbox.read(name)
        earlier = _attempt(entry.doc) if entry is not None and entry.state is State.FAILED else None
        if waiting is not None:
            return {**waiting, "previous": earlier} if earlier else waiting
        if entry is not None and earlier is None:
            return entry.doc
        for j in status.claimed_without_sidecar(self.cfg, {entry.id} if entry is not None else set(), utcnow()):
            if j.job == name:  # claimed, its first record not written yet (or not over the failed one yet)
                doc = {"job": name, "state": j.state, "id": j.id, "host": j.host, "notes": j.notes}
                return {**doc, "previous": earlier} if earlier else doc
        return entry.doc if entry is not None else None

    def record_stamp(self, name: str) -> tuple[int, int] | None:
        """(mtime, size) of the job's sidecar, None while it has none: a cheap "changed?"."""
        try:
            st = os.stat(self.outbox.path_for(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_mtime_ns, st.st_size

    def _unclaimed(self, name: str) -> dict[str, Any] | None:
        if not self._in_inbox(name):
            return None  # the common case (a claimed job): no scan of the whole inbox
        for j in status.inbox_backlog(self.cfg, utcnow()):
            if j.job == name:
                return {"job": name, "state": WAITING, "files": j.files, "notes": j.notes,
                        "position": j.position}
        return None

    def _in_inbox(self, name: str) -> bool:
        """Whether a top-level inbox entry could belong to the job ``name`` (one listing)."""
        try:
            entries = os.scandir(self.cfg.paths.inbox)
        except FileNotFoundError:
            return False
        with entries:
            for e in entries:
                stem = job_stem(e.name)
                if stem == name or e.name == name or fit_name(stem) == name:
                    return True
        return False

    def page(self, *, state: str | None, limit: int, cursor: str | None,
             query: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Jobs newest first (waiting drops before them), ``limit`` at a time; ``query``
        keeps the jobs whose name contains it (case-insensitive)."""
        after = _decode_cursor(cursor) if cursor else None
        needle = (query or "").casefold()
        items: list[tuple[tuple, dict[str, Any]]] = []
        if state in (None, WAITING):
            for j in status.inbox_backlog(self.cfg, utcnow()):
                if needle in j.job.casefold():
                    items.append(((0, "", j.job), {"job": j.job, "state": WAITING, "files": j.files,
                                                   "notes": j.notes}))
        if state != WAITING:
            for doc in self.records():
                name = str(doc.get("job", ""))
                if (state is None or doc.get("state") == state) and needle in name.casefold():
                    created = str(doc.get("created_at") or "")
                    items.append(((1, _descending(created), name), doc))
        items.sort(key=lambda kv: kv[0])
        if after is not None:
            items = [kv for kv in items if kv[0] > after]
        page = items[:limit]
        more = len(items) > limit
        return [doc for _k, doc in page], (_encode_cursor(page[-1][0]) if more and page else None)

    # -- deleting ------------------------------------------------------------------------
    def delete(self, name: str, *, store: Store | None, by: str) -> Deleted:
        if self._withdraw(name):
            return Deleted(name, "withdrawn")
        entry = self.outbox.read(name)
        deadline = time.monotonic() + CLAIM_RACE_WAIT
        while entry is None and self.find(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # claimed this moment: its record is being written
            entry = self.outbox.read(name)
        if entry is None:
            raise ApiError(404, "not_found", f"no job {name!r}", field="name")
        if entry.active:
            folder = workarea.locate(self.cfg, entry.id or "")
            if folder is None:
                raise ApiError(409, "conflict", f"{name}: its work folder is gone; the daemons record it as failed")
            try:
                workarea.request_cancel(folder, by=by)
            except FileNotFoundError:
                raise ApiError(409, "conflict", f"{name}: finished while being cancelled; look again") from None
            log.info("job cancel requested", job=name, by=by)
            return Deleted(name, "cancel_requested")
        live = {(o.get("bucket") or self.cfg.storage.bucket, o["key"]) for o in entry.outputs
                if o.get("key") and o.get("state") == OutputState.DONE}
        if not live:
            return Deleted(name, "already_deleted")
        if store is None:
            raise ApiError(503, "storage_unavailable", "the store is not reachable from this server; try again",
                           headers={"Retry-After": "30"})
        for _bucket, key in sorted(live):
            store.delete(key)
        expire_objects(self.cfg, live, reason=f"deleted through the HTTP API by {by}")
        log.info("job videos deleted", job=name, by=by, videos=len(live))
        return Deleted(name, "deleted", len(live))

    def _withdraw(self, name: str) -> bool:
        """Take an unclaimed drop out of the inbox; False when there is none (or a daemon won)."""
        inbox = Inbox(self.cfg, settled_by_mtime=True)
        specs = [s for s in inbox.scan() if s.name == name]
        if specs:
            order = claims.claim_order(specs[0])
        else:
            drops = [w for w in inbox.waiting if w.name == name]
            if not drops:
                return False
            order = sorted((self.cfg.paths.inbox / f for f in drops[0].files),
                           key=lambda p: (not p.name.endswith((".job.json", ".job.toml")), p.name))
        trash = api_dir(self.cfg) / f".withdrawn-{os.getpid()}-{time.monotonic_ns()}"
        trash.mkdir(parents=True)
        try:
            for i, path in enumerate(order):
                target = trash / path.relative_to(self.cfg.paths.inbox)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(path, target)
                except FileNotFoundError:
                    if i == 0:
                        return False  # a daemon renamed it first: the job is claimed
            try:
                os.rmdir(self.cfg.paths.inbox / name)
            except OSError:
                pass
        finally:
            shutil.rmtree(trash, ignore_errors=True)
        log.info("job withdrawn from the inbox", job=name, files=len(order))
        return True

    # -- retrying ------------------------------------------------------------------------
    def retry(self, name: str) -> str:
        entry = self.outbox.read(name)
        if entry is None:
            raise ApiError(404, "not_found", f"no job {name!r}", field="name")
        if entry.state != State.FAILED:
            raise ApiError(409, "not_failed", f"{name} is {entry.state}; only a failed job can be retried")
        folder = self.cfg.paths.failed / fit_name(name)
        try:
            record = json.loads((folder / workarea.RECORD_NAME).read_text())
        except (FileNotFoundError, ValueError):
            raise ApiError(409, "inputs_gone", f"{name}: its inputs are no longer in failed/{fit_name(name)}/ "
                           "(cleaned up after cleanup.failed_retention?); submit it again") from None
        if record.get("id") != entry.id:
            raise ApiError(409, "inputs_gone", f"{name}: failed/{fit_name(name)}/ holds another run's inputs")
        code = (entry.doc.get("error") or {}).get("code")
        options = {k: v for k, v in (record.get("options") or {}).items() if v is not None}
        if not (record.get("audio") or options.get("text")) or not record.get("templates"):
            raise ApiError(409, "not_retryable", f"{name} failed as {code}: its drop was not a complete job; "
                           "fix it and submit again")
        # subtitles travel with the job: named by its manifest, or dropped beside it (NAME.srt)
        subtitle = options.pop("subtitle_file", None) or next(
            (f["name"] for f in record.get("files", []) if Path(f["name"]).suffix.lower() in SUBTITLE_EXTENSIONS), None)
        staging = Staging(self.cfg)
        moved: list[tuple[Path, Path]] = []
        try:
            audio = self._stage(folder / record["audio"]["name"], staging, moved) if record.get("audio") else None
            templates = [("library", t["name"]) if t.get("library") else
                         ("staged", self._stage(folder / t["name"], staging, moved)) for t in record["templates"]]
            subtitles = self._stage(folder / subtitle, staging, moved) if subtitle else None
            published = staging.publish(name, audio=audio, templates=templates, options=options, again=True,
                                        subtitles=subtitles)
        except BaseException:
            for src, dst in reversed(moved):  # put the inputs back where they were kept
                if dst.exists():
                    os.rename(dst, src)
            staging.discard()
            raise
        log.info("failed job dropped again", job=name, failed_code=code)
        return published

    @staticmethod
    def _stage(src: Path, staging: Staging, moved: list[tuple[Path, Path]]) -> str:
        if not src.is_file():
            raise ApiError(409, "inputs_gone", f"{src.name}: no longer among the failed job's inputs")
        target = staging.new_file(src.name)
        os.rename(src, target)
        moved.append((src, target))
        return target.name


def _attempt(doc: dict[str, Any]) -> dict[str, Any]:
    """A failed run, as a retried job's history shows it."""
    return {"id": doc.get("id"), "state": doc.get("state"), "error": doc.get("error"),
            "finished_at": (doc.get("timings") or {}).get("finished_at") or doc.get("updated_at")}


def _descending(text: str) -> str:
    # ISO times sort as text; this inverts the order so that newer sorts first
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def _encode_cursor(key: tuple) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != 3 or not all(isinstance(v, (int, str)) for v in raw):
            raise ValueError
        return int(raw[0]), str(raw[1]), str(raw[2])
    except (ValueError, TypeError, IndexError, RecursionError):
        raise ApiError(400, "bad_cursor", "cursor: not a cursor this server handed out", field="cursor") from None

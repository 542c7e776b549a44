"""The outbox folder: every record scanned once per pass, new records reserved, finished ones edited.

Housekeeping (links, cleanup, takeover duties) never owns a job: its edits of finished
records go through :meth:`Outbox.replace_if_unchanged`, which leaves a record that changed
meanwhile for the next pass and never breaks the rules of :mod:`daemon.outbox.record`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.atomic import write_atomic
from daemon.names import fit_name
from daemon.logsetup import get_logger
from daemon.outbox.record import (ACTIVE_STATES, State, encode, isotime, parse_time, read_document, refusal,
                                  validate)

log = get_logger(__name__)


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
                write_atomic(path, encode(doc), mode=0o644, exclusive=True)
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
            doc = json.loads(encode(entry.doc))
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
            reason = refusal(current, after, None)
            if reason is not None:
                log.error("sidecar not rewritten", sidecar=str(before.path), reason=reason)
                return False
            doc = dict(after, updated_at=isotime())
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(before.path, encode(doc), mode=0o644)  # readable by the team on the share
        return True

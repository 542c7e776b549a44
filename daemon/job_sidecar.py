"""The sidecar of one job as the worker moves it through its states.

Owns the document of ``outbox/NAME.json`` for one run of a job: state changes are written
at once, progress at most once a second (a share hates a rewrite per frame), and every
state change is checked against the published schema first, so a bug shows up as a log
line naming the violation rather than as a sidecar users' scripts cannot parse.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from daemon import sidecar
from daemon.config import Config
from daemon.errors import JobError
from daemon.jobs import ClaimedJob
from daemon.logsetup import get_logger

log = get_logger("lipsyncd.worker")

PROGRESS_WRITE_INTERVAL = 1.0  # seconds between progress-only rewrites


class JobSidecar:
    def __init__(self, cfg: Config, job: ClaimedJob, doc: dict[str, Any]) -> None:
        self.cfg = cfg
        self.job = job
        self.path = sidecar.sidecar_path(cfg.paths.outbox, job.name)
        self.doc = doc
        self._last_write = 0.0
        # set by the worker: False once another daemon has taken the job over, after which
        # this host must not touch the sidecar (the new owner writes it)
        self.still_ours: Callable[[], bool] | None = None
        # when the job was queued, to the sub-second (the sidecar's times are whole seconds)
        try:
            self.queued_epoch = sidecar.parse_time(doc["timings"]["queued_at"]).timestamp()
        except (KeyError, ValueError):
            self.queued_epoch = time.time()

    @classmethod
    def open(cls, cfg: Config, job: ClaimedJob, engine: str | None) -> tuple[JobSidecar, bool]:
        """The job's sidecar: the one already written for this run (a resumed job), else a
        new "queued" document. Returns it and whether it was resumed."""
        path = sidecar.sidecar_path(cfg.paths.outbox, job.name)
        old = sidecar.read(path)
        if old is not None and old.get("id") == job.id:
            old["host"] = cfg.host_id  # a job taken over from another host is ours now
            return cls(cfg, job, old), True
        doc = sidecar.new_document(job=job.name, job_id=job.id, host=cfg.host_id, inputs=job.inputs_document(),
                                   engine=engine, options=job.options.as_dict())
        doc["timings"]["queued_at"] = job.claimed_at
        rec = cls(cfg, job, doc)
        if time.time() - rec.queued_epoch < 1.5:
            rec.queued_epoch = time.time()  # claimed a moment ago: more precise than whole seconds
        return rec, False

    # ------------------------------------------------------------------ changes

    def set_state(self, state: str, **fields: Any) -> None:
        self.doc["state"] = state
        self.doc.update(fields)
        self.write()

    def mark(self, timing: str, when: datetime | float | None = None) -> None:
        self.doc["timings"][timing] = sidecar.isotime(when)

    def add_note(self, text: str) -> None:
        if text not in self.doc["notes"]:
            self.doc["notes"].append(text)

    def set_error(self, error: JobError | None, *, retryable: bool | None = None) -> None:
        if error is None:
            self.doc["error"] = None
            return
        data = error.as_dict()
        if retryable is not None:
            data["retryable"] = retryable
        if not data.get("file"):
            data.pop("file", None)
        self.doc["error"] = data

    def progress(self, fraction: float) -> None:
        """Record render progress; rewrites the file at most once per interval."""
        self.doc["progress"] = round(min(1.0, max(0.0, fraction)), 4)
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_WRITE_INTERVAL:
            self.write(check=False)

    def total_seconds(self) -> float:
        return round(max(0.0, time.time() - self.queued_epoch), 3)

    def write(self, *, check: bool = True) -> None:
        if self.still_ours is not None and not self.still_ours():
            log.warning("sidecar left alone: the job belongs to another daemon now", sidecar=str(self.path))
            return
        if check:
            problems = sidecar.validate({**self.doc, "updated_at": sidecar.isotime()})
            if problems:
                log.error("sidecar does not match its schema", sidecar=str(self.path), problems=problems[:5])
        sidecar.write(self.path, self.doc)
        self._last_write = time.monotonic()

    # ------------------------------------------------------------------ outputs

    def output(self, name: str) -> dict[str, Any]:
        for out in self.doc["outputs"]:
            if out["name"] == name:
                return out
        raise KeyError(name)

    def ensure_outputs(self, planned: list[tuple[str, str]], engine: str) -> None:
        """One entry per (output name, template name), kept when already there (resume)."""
        have = {o["name"] for o in self.doc["outputs"]}
        for name, template in planned:
            if name not in have:
                self.doc["outputs"].append({"name": name, "template": template, "state": "pending",
                                            "engine": engine})

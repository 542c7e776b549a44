"""Claiming jobs by atomic rename, and settling claims a crash interrupted.

A claim creates ``<work>/<host id>/<job id>/``, writes ``job.json`` listing every file it is
about to move (the claim record), then ``os.rename``s the job's inbox files into
``inputs/`` -- rename, never copy, so the work area must be on the inbox's filesystem
(:func:`prepare_work_area` checks that at start-up).

Ownership: files move in a canonical order (manifest, audio, inbox templates, the rest
by name). Whoever renames the *first* file owns the job; a daemon that loses that race
gets FileNotFoundError, removes its own empty work folder and backs off. A later file
that has vanished (deleted by a person meanwhile) does not stop the claim: it is recorded
as not moved and the job fails with MissingPartnerError, so nothing is ever lost.

Crash safety: ``job.json`` is written atomically before the first rename and rewritten
after the last one (:class:`ClaimStep` "claiming" -> "claimed"). :func:`recover` reads it at
start-up: a half-done claim is completed (or rolled back when the first rename never
happened), a half-done finish is completed (:func:`daemon.workarea.complete_finish`), and
every claimed job comes back to be processed again. What happens to the folder after the
claim is :mod:`daemon.workarea`'s.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemon import workarea
from daemon.config import Config
from daemon.errors import MissingPartnerError
from daemon.failpoints import failpoint
from daemon.outbox import Entry, Outbox, initial_document, name_notes
from daemon.timestamps import isotime, utcnow
from daemon.jobs import (
    ClaimedJob,
    JobSpec,
    job_error_to_dict,
)
from daemon.logsetup import get_logger
from daemon.names import new_job_id


class ClaimStep(StrEnum):
    """How far a claim got, in the work folder's job.json: the files are being moved in
    (a crash here is rolled back or completed at the next start), or all of them are there."""

    CLAIMING = "claiming"
    CLAIMED = "claimed"

log = get_logger(__name__)


# --------------------------------------------------------------------------- claim


def claim(spec: JobSpec, cfg: Config, *, now: datetime | None = None) -> ClaimedJob | None:
    """Move ``spec``'s inbox files into a new work folder; None when another daemon won."""
    inbox = cfg.paths.inbox
    order = claim_order(spec)
    if not order:
        return None
    plan: list[dict[str, Any]] = []
    for path in order:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not plan:
                return None  # the first file is gone: someone else has the job
            st = None
        plan.append({"name": _relative(path, inbox), "size": st.st_size if st else 0,
                     "mtime_ns": st.st_mtime_ns if st else 0, "moved": False})

    now = now or utcnow()
    job_id = new_job_id(spec.name, now)
    host_dir = workarea.host_dir(cfg)
    work_dir = host_dir / job_id
    work_dir.mkdir()
    (work_dir / workarea.INPUTS).mkdir()
    record = _new_record(spec, cfg, job_id, now, plan)
    workarea.write_record_file(work_dir / workarea.RECORD_NAME, record)
    failpoint("claim_record", job_id)

    first = plan[0]
    try:
        _rename_in(inbox, work_dir, first["name"])
    except FileNotFoundError:
        shutil.rmtree(work_dir, ignore_errors=True)
        return None
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    first["moved"] = True
    for entry in plan[1:]:
        try:
            _rename_in(inbox, work_dir, entry["name"])
            entry["moved"] = True
        except FileNotFoundError:
            pass
    _remove_emptied_job_folder(inbox, spec.name, plan)
    failpoint("claim_moved", job_id)
    _mark_claimed(record)
    workarea.write_record_file(work_dir / workarea.RECORD_NAME, record)
    _reserve_record(work_dir, record, cfg)
    log.info("job claimed", job=record["record_name"], job_id=job_id, files=len(plan),
             failed=record["error"]["code"] if record["error"] else None)
    return workarea.load_claimed(work_dir, cfg)


def _remove_emptied_job_folder(inbox: Path, name: str, plan: list[dict[str, Any]]) -> None:
    # A manifest NAME.job.* whose files sit in a folder NAME/ (how the HTTP API drops jobs)
    # leaves that folder empty once claimed; an emptied folder named like the job is the
    # job's own and goes with it. Anything still inside keeps it in place.
    if any(e["name"].startswith(f"{name}/") for e in plan):
        try:
            os.rmdir(inbox / name)
        except OSError:
            pass


def _reserve_record(work_dir: Path, record: dict[str, Any], cfg: Config) -> None:
    """Give the claimed job its own record in the outbox (its first sidecar) and its name.

    Another job's record is never replaced: a name in use gets ``NAME-2`` (said in both
    records and the log), except a *failed* record, which a re-drop of the same job
    replaces -- its old inputs move from failed/NAME/ to failed/NAME.<its id>/, so nothing
    there contradicts the new record.
    """
    if record.get("record_name"):
        return
    job = workarea.load_claimed(work_dir, cfg)
    outbox = Outbox(cfg.paths.outbox)
    first = initial_document(job=job.name, job_id=job.id, host=cfg.host_id, engine=None,
                             inputs=job.inputs_document(), options=job.options.as_dict(),
                             queued_at=record.get("ready_at") or record["claimed_at"], notes=name_notes(job))
    got = outbox.reserve(job.name, first)
    if got.replaced is not None:
        old_inputs = cfg.paths.failed / got.name
        moved = _move_aside_as(old_inputs, got.replaced.id)
        outbox.add_note(outbox.read(got.name) or Entry(outbox.path_for(got.name), first),
                        f"dropped again after the failed run {got.replaced.id}"
                        + (f"; that run's inputs are in failed/{moved.name}/" if moved else ""))
        log.info("failed job dropped again; its record is replaced", job=got.name, failed_job_id=got.replaced.id,
                 old_inputs=str(moved) if moved else None)
    if got.name != job.name:
        taken = got.taken
        outbox.add_note(outbox.read(got.name) or Entry(outbox.path_for(got.name), first),
                        f"the name {job.name!r} is in use by job {taken.id if taken else '?'} "
                        f"({taken.state if taken else '?'}); this job is recorded as {got.name!r}")
        if taken is not None:
            outbox.add_note(taken, f"a later job dropped as {job.name!r} ({job.id}) is recorded as {got.name!r}")
        log.warning("job name in use; recorded under another name", dropped_as=job.name, record=got.name,
                    job_id=job.id, name_taken_by=taken.id if taken else None)
    record["record_name"] = got.name
    workarea.write_record_file(work_dir / workarea.RECORD_NAME, record)


def _move_aside_as(folder: Path, suffix: str | None) -> Path | None:
    """Rename ``folder`` to ``folder.<suffix>`` (kept, never deleted); the new path, or None."""
    if not folder.is_dir() or not suffix:
        return None
    target = folder.with_name(f"{folder.name}.{suffix}")
    try:
        os.rename(folder, target)
    except OSError:
        return None
    return target


def claim_order(spec: JobSpec) -> list[Path]:
    """Manifest, audio, inbox templates, then the rest by name: the same on every host."""
    moving = set(spec.files)
    head = [p for p in [spec.manifest, spec.audio, *spec.templates] if p is not None and p in moving]
    rest = sorted(moving - set(head))
    return list(dict.fromkeys(head + rest))


def _new_record(spec: JobSpec, cfg: Config, job_id: str, now: datetime, plan: list[dict]) -> dict[str, Any]:
    inbox, library = cfg.paths.inbox, cfg.paths.templates
    sizes = {e["name"]: e["size"] for e in plan}
    templates = []
    for t in spec.templates:
        if t in spec.library_templates and library is not None:
            name = _relative(t, library)
            try:
                size = os.stat(t).st_size
            except OSError:
                size = 0  # the render step reports the missing template precisely
            templates.append({"name": name, "library": True, "size": size})
        else:
            name = _relative(t, inbox)
            templates.append({"name": name, "library": False, "size": sizes.get(name, 0)})
    audio = None
    if spec.audio is not None:
        name = _relative(spec.audio, inbox)
        audio = {"name": name, "size": sizes.get(name, 0)}
    manifest = None
    if spec.manifest is not None:
        name = _relative(spec.manifest, inbox)
        manifest = {"name": name, "size": sizes.get(name, 0)}
    return {
        "format": workarea.RECORD_FORMAT,
        "name": spec.name,
        "id": job_id,
        "host": cfg.host_id,
        "claimed_at": isotime(now),
        "state": ClaimStep.CLAIMING,
        "audio": audio,
        "templates": templates,
        "manifest": manifest,
        "options": spec.options.as_dict(),
        "original_name": spec.original_name,
        # when the drop was complete (settled), which is when the job was queued
        "ready_at": isotime(spec.ready_since) if spec.ready_since > 0 else None,
        "error": job_error_to_dict(spec.error),
        "files": plan,
    }


def _mark_claimed(record: dict[str, Any]) -> None:
    record["state"] = ClaimStep.CLAIMED
    gone = [e["name"] for e in record["files"] if not e["moved"]]
    if gone and record["error"] is None:
        err = MissingPartnerError(f"{', '.join(gone)} vanished from the inbox while the job "
                                  f"{record['name']!r} was being claimed", file=gone[0])
        record["error"] = job_error_to_dict(err)


# --------------------------------------------------------------------------- recover


def recover(cfg: Config) -> list[ClaimedJob]:
    """At start-up: settle every job left in this host's work area; the ones to process again.

    Half-done claims are completed (or rolled back when the first file was never moved),
    half-done finishes are completed, and folders without a record are left alone (and
    logged) unless empty. Partial outputs in ``out/`` stay for the worker to judge.
    """
    jobs = [job for d in workarea.job_dirs(cfg) if (job := recover_one(d, cfg)) is not None]
    jobs.sort(key=lambda j: (j.claimed_at, j.id))
    return jobs


def recover_one(work_dir: Path, cfg: Config) -> ClaimedJob | None:
    """Settle one work folder (ours, or one just taken over); the job when it needs processing."""
    workarea.remove_temp_records(work_dir)
    record = workarea.read_record(work_dir)
    if record is None:
        workarea.forget_unrecorded(work_dir, cfg)
        return None
    if "finish" in record:
        workarea.complete_finish(work_dir, record, cfg)
        return None
    if record.get("state") == ClaimStep.CLAIMING and not _complete_claim(work_dir, record, cfg):
        return None
    _reserve_record(work_dir, record, cfg)  # a claim cut short before its record was made
    job = workarea.load_claimed(work_dir, cfg)
    log.info("job recovered", job=job.name, job_id=job.id)
    return job


def _complete_claim(work_dir: Path, record: dict[str, Any], cfg: Config) -> bool:
    """Finish the renames of an interrupted claim; False when it was rolled back."""
    inbox, inputs = cfg.paths.inbox, work_dir / workarea.INPUTS
    files = record["files"]
    if not os.path.lexists(inputs / files[0]["name"]):
        # never owned: put back anything that did move (not expected) and forget the claim
        for entry in files[1:]:
            src = inputs / entry["name"]
            if os.path.lexists(src) and not os.path.lexists(inbox / entry["name"]):
                os.rename(src, inbox / entry["name"])
        if not any(p.is_file() for p in inputs.rglob("*")):
            shutil.rmtree(work_dir)
            log.info("interrupted claim rolled back", job=record["name"], job_id=record["id"])
            return False
    for entry in files:
        if os.path.lexists(inputs / entry["name"]):
            entry["moved"] = True
            continue
        entry["moved"] = False
        try:
            st = os.lstat(inbox / entry["name"])
        except FileNotFoundError:
            continue
        # only the file we planned to move, not a new drop that reused its name
        if (st.st_size, st.st_mtime_ns) == (entry["size"], entry["mtime_ns"]):
            try:
                _rename_in(inbox, work_dir, entry["name"])
                entry["moved"] = True
            except FileNotFoundError:
                pass
    _mark_claimed(record)
    workarea.write_record_file(work_dir / workarea.RECORD_NAME, record)
    log.info("interrupted claim completed", job=record["name"], job_id=record["id"])
    return True


# --------------------------------------------------------------------------- file helpers


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _rename_in(inbox: Path, work_dir: Path, name: str) -> None:
    dst = work_dir / workarea.INPUTS / name
    if "/" in name:
        dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(inbox / name, dst)



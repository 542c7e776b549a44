"""Claiming jobs by atomic rename, and finishing them to done/ or failed/.

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
after the last one (state "claiming" -> "claimed"), and before finishing ("finish" records
the outcome and destination). :func:`recover` reads it at start-up: a half-done claim is
completed (or rolled back when the first rename never happened), a half-done finish is
completed, and every claimed job comes back to be processed again.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from daemon.atomic import write_atomic
from daemon.config import Config
from daemon.errors import ConfigError, MissingPartnerError
from daemon.failpoints import failpoint
from daemon.outbox import Entry, Outbox, initial_document, name_notes
from daemon.timestamps import isotime, utcnow
from daemon.jobs import (
    ClaimedFile,
    ClaimedJob,
    JobOptions,
    JobSpec,
    job_error_from_dict,
    job_error_to_dict,
)
from daemon.logsetup import get_logger
from daemon.intake.names import new_job_id

RECORD_NAME = "job.json"
CANCEL_NAME = "cancel"  # a request to cancel the job, left in its work folder by `lipsyncd cancel`
RECORD_FORMAT = "lipsyncd.job/1"
INPUTS = "inputs"
OUT = "out"

Outcome = Literal["done", "failed"]


class ClaimStep(StrEnum):
    """How far a claim got, in the work folder's job.json: the files are being moved in
    (a crash here is rolled back or completed at the next start), or all of them are there."""

    CLAIMING = "claiming"
    CLAIMED = "claimed"

log = get_logger(__name__)


# --------------------------------------------------------------------------- start-up


def prepare_work_area(cfg: Config) -> Path:
    """Create this host's work folder; ConfigError when claims could not be renames."""
    inbox = cfg.paths.inbox
    if not inbox.is_dir():
        raise ConfigError([f"paths.inbox: {inbox} does not exist or is not a folder (is the share mounted?)"])
    host_dir = cfg.host_work_dir
    host_dir.mkdir(parents=True, exist_ok=True)
    if os.stat(host_dir).st_dev != os.stat(inbox).st_dev:
        raise ConfigError([f"paths.work: {cfg.work_dir} is on another filesystem than the inbox {inbox}; "
                           "jobs are claimed by renaming their files, which only works within one filesystem "
                           "(leave paths.work unset to use <inbox>/.lipsyncd/work)"])
    return host_dir


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
    host_dir = _host_dir(cfg)
    work_dir = host_dir / job_id
    work_dir.mkdir()
    (work_dir / INPUTS).mkdir()
    record = _new_record(spec, cfg, job_id, now, plan)
    _write_json(work_dir / RECORD_NAME, record)
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
    _write_json(work_dir / RECORD_NAME, record)
    _reserve_record(work_dir, record, cfg)
    log.info("job claimed", job=record["record_name"], job_id=job_id, files=len(plan),
             failed=record["error"]["code"] if record["error"] else None)
    return load_claimed(work_dir, cfg)


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
    job = load_claimed(work_dir, cfg)
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
    _write_json(work_dir / RECORD_NAME, record)


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
        "format": RECORD_FORMAT,
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


# --------------------------------------------------------------------------- loading


def load_claimed(work_dir: Path, cfg: Config) -> ClaimedJob:
    """The job recorded in ``work_dir/job.json`` (ValueError when there is no valid record)."""
    record = _read_record(work_dir)
    if record is None:
        raise ValueError(f"{work_dir}: no valid {RECORD_NAME}")
    inputs = work_dir / INPUTS
    library = cfg.paths.templates
    files = [ClaimedFile(name=e["name"], size=e["size"], moved=e["moved"], mtime_ns=e.get("mtime_ns", 0))
             for e in record["files"]]
    error = job_error_from_dict(record.get("error"))
    templates, names, library_paths = [], [], []
    for t in record["templates"]:
        if t["library"]:
            if library is None:  # the config changed since the claim: fail, never guess a folder
                error = error or MissingPartnerError(
                    f"{t['name']} is in the template library, but paths.templates is no longer set", file=t["name"])
            path = (library or work_dir / "missing-template-library") / t["name"]
            library_paths.append(path)
            files.append(ClaimedFile(name=t["name"], size=t["size"], library=True, moved=False))
        else:
            path = inputs / t["name"]
        templates.append(path)
        names.append(t["name"])
    audio = record["audio"]
    manifest = record["manifest"]
    return ClaimedJob(
        name=record.get("record_name") or record["name"], id=record["id"], host=work_dir.parent.name, claimed_at=record["claimed_at"],
        work_dir=work_dir,
        audio=inputs / audio["name"] if audio else None, audio_name=audio["name"] if audio else None,
        templates=templates, template_names=names, library_templates=library_paths,
        manifest=inputs / manifest["name"] if manifest else None,
        manifest_name=manifest["name"] if manifest else None,
        options=JobOptions.from_dict(record.get("options")),
        error=error,
        files=files,
        original_name=record.get("original_name"),
    )


def list_claimed(cfg: Config) -> list[ClaimedJob]:
    """This host's jobs in the work area, oldest claim first (read-only)."""
    jobs = []
    for work_dir in _job_dirs(cfg):
        try:
            jobs.append(load_claimed(work_dir, cfg))
        except (ValueError, KeyError, TypeError):
            continue
    jobs.sort(key=lambda j: (j.claimed_at, j.id))
    return jobs


def locate(cfg: Config, job_id: str) -> Path | None:
    """The work folder of job ``job_id`` on whichever host holds it, else None."""
    try:
        hosts = [e for e in os.scandir(cfg.work_dir) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return None
    for host in hosts:
        folder = Path(host.path) / job_id
        if folder.is_dir():
            return folder
    return None


def request_cancel(work_dir: Path, *, by: str) -> None:
    """Ask the daemon that owns the job in ``work_dir`` to cancel it (FileNotFoundError: gone)."""
    write_atomic(work_dir / CANCEL_NAME, (json.dumps({"by": by, "at": isotime()})
                                          + "\n").encode(), mode=0o644)


def cancel_requested(job: ClaimedJob) -> bool:
    return os.path.exists(job.work_dir / CANCEL_NAME)


# --------------------------------------------------------------------------- finish


def output_archive_dir(job: ClaimedJob, cfg: Config) -> Path | None:
    """Where :func:`finish` keeps the job's MP4s when ``paths.outputs`` is set, else None."""
    return cfg.paths.outputs / job.id if cfg.paths.outputs is not None else None


def finish(job: ClaimedJob, cfg: Config, outcome: Outcome) -> Path:
    """Move the job's inputs and job.json to ``done/NAME/`` or ``failed/NAME/``; that folder.

    An earlier ``NAME`` folder is first renamed to ``NAME.<its job id>``, so ``done/NAME`` is
    always the latest run. Rendered MP4s left in ``out/`` go to :func:`output_archive_dir`
    when ``paths.outputs`` is set and are deleted otherwise (they have been uploaded).
    The work folder is removed last.
    """
    if outcome not in ("done", "failed"):
        raise ValueError(f"outcome must be 'done' or 'failed', not {outcome!r}")
    record = _read_record(job.work_dir)
    if record is None:
        raise FileNotFoundError(f"{job.work_dir}: the job's {RECORD_NAME} is gone")
    root = cfg.paths.done if outcome == "done" else cfg.paths.failed
    record["finish"] = {"outcome": outcome, "dest": str(root / job.name)}
    _write_json(job.work_dir / RECORD_NAME, record)
    return _complete_finish(job.work_dir, record, cfg)


def _complete_finish(work_dir: Path, record: dict[str, Any], cfg: Config) -> Path:
    dest = Path(record["finish"]["dest"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    final = dict(record, state=record["finish"]["outcome"],
                 finished_at=isotime())
    final.pop("finish", None)
    for _attempt in range(10):
        try:
            dest.mkdir()
        except FileExistsError:
            if (_read_record(dest) or {}).get("id") == record["id"]:
                break  # ours, from a finish that was cut short
            _move_aside(dest)
            continue
        _write_json(dest / RECORD_NAME, final)  # marks the folder as ours before anything moves
        break
    else:
        raise FileExistsError(f"{dest}: kept reappearing while moving older runs aside")
    _remove_temp_records(dest)  # a finish killed while writing the record left one

    inputs = work_dir / INPUTS
    for src in sorted(p for p in inputs.rglob("*") if not p.is_dir()):
        _move(src, dest / src.relative_to(inputs))
    archive = cfg.paths.outputs / record["id"] if cfg.paths.outputs is not None else None
    out = work_dir / OUT
    if archive is not None and out.is_dir():
        for src in sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")):
            archive.mkdir(parents=True, exist_ok=True)
            _move(src, archive / src.name)
    _write_json(dest / RECORD_NAME, final)
    shutil.rmtree(work_dir)
    log.info("job inputs moved", job=record["name"], job_id=record["id"], outcome=final["state"], folder=str(dest))
    return dest


def _move_aside(dest: Path) -> None:
    old = _read_record(dest)
    suffix = old["id"] if old and isinstance(old.get("id"), str) else \
        "old-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = dest.name
    while len(f"{base}.{suffix}-99".encode()) > 255:  # keep within the filesystem's name limit
        base = base[:-1]
    target, n = dest.with_name(f"{base}.{suffix}"), 2
    while os.path.lexists(target):
        target, n = dest.with_name(f"{base}.{suffix}-{n}"), n + 1
    try:
        os.rename(dest, target)
    except FileNotFoundError:
        pass  # another daemon moved it first


# --------------------------------------------------------------------------- recover


def recover(cfg: Config) -> list[ClaimedJob]:
    """At start-up: settle every job left in this host's work area; the ones to process again.

    Half-done claims are completed (or rolled back when the first file was never moved),
    half-done finishes are completed, and folders without a record are left alone (and
    logged) unless empty. Partial outputs in ``out/`` stay for the worker to judge.
    """
    jobs = [job for d in _job_dirs(cfg) if (job := recover_one(d, cfg)) is not None]
    jobs.sort(key=lambda j: (j.claimed_at, j.id))
    return jobs


def recover_one(work_dir: Path, cfg: Config) -> ClaimedJob | None:
    """Settle one work folder (ours, or one just taken over); the job when it needs processing."""
    _remove_temp_records(work_dir)
    record = _read_record(work_dir)
    if record is None:
        _forget_unrecorded(work_dir, cfg)
        return None
    if "finish" in record:
        _complete_finish(work_dir, record, cfg)
        return None
    if record.get("state") == ClaimStep.CLAIMING and not _complete_claim(work_dir, record, cfg):
        return None
    _reserve_record(work_dir, record, cfg)  # a claim cut short before its record was made
    job = load_claimed(work_dir, cfg)
    log.info("job recovered", job=job.name, job_id=job.id)
    return job


def _complete_claim(work_dir: Path, record: dict[str, Any], cfg: Config) -> bool:
    """Finish the renames of an interrupted claim; False when it was rolled back."""
    inbox, inputs = cfg.paths.inbox, work_dir / INPUTS
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
    _write_json(work_dir / RECORD_NAME, record)
    log.info("interrupted claim completed", job=record["name"], job_id=record["id"])
    return True


ORPHANS = ".orphans"  # work/.orphans/: folders without a job record that hold files nobody wrote for a claim


def _daemon_made(path: Path) -> bool:
    """Files a daemon puts into a job folder besides the claim itself: the lease and temp files."""
    name = path.name
    return name == "lease" or (name.startswith((".lease.", ".sidecar.", f".{RECORD_NAME}.")) and name.endswith(".tmp"))


def _forget_unrecorded(work_dir: Path, cfg: Config) -> None:
    """A work folder without a claim record (its claim died before writing one).

    With nothing in it but what daemons add (a lease, temp files, empty folders) it is
    removed. Left where it was, it would be taken over again and again: each takeover writes
    a lease, which nobody renews, so the next daemon finds it stale. Anything else in it
    is not ours to judge: the folder moves to ``work/.orphans/`` (never deleted), out of
    every daemon's way, with one log line.
    """
    files = [p for p in work_dir.rglob("*") if p.is_file() or p.is_symlink()]
    if all(_daemon_made(p) for p in files):
        shutil.rmtree(work_dir, ignore_errors=True)
        log.info("work folder without a job record removed", folder=str(work_dir))
        return
    target = cfg.work_dir / ORPHANS / work_dir.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(work_dir, target)
    except OSError as e:
        log.warning("work folder without a job record left alone", folder=str(work_dir), error=str(e))
        return
    log.warning("work folder without a job record moved aside", folder=str(work_dir), to=str(target),
                files=len(files))


# --------------------------------------------------------------------------- file helpers


def _host_dir(cfg: Config) -> Path:
    host_dir = cfg.host_work_dir
    if not host_dir.is_dir():
        if not cfg.paths.inbox.is_dir():
            # never create the inbox: an unmounted share must not be replaced by a local folder
            raise FileNotFoundError(errno.ENOENT, "the inbox is missing (is the share mounted?)", str(cfg.paths.inbox))
        host_dir.mkdir(parents=True, exist_ok=True)
    return host_dir


def _job_dirs(cfg: Config) -> list[Path]:
    try:
        entries = list(os.scandir(cfg.host_work_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _rename_in(inbox: Path, work_dir: Path, name: str) -> None:
    dst = work_dir / INPUTS / name
    if "/" in name:
        dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(inbox / name, dst)


def _move(src: Path, dst: Path) -> None:
    """Rename, or copy and delete when ``dst`` is on another filesystem (done/ may be)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.partial")
        shutil.copy2(src, tmp, follow_symlinks=False)
        os.replace(tmp, dst)
        os.unlink(src)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace, durable before returning: recovery trusts what it reads."""
    payload = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
    write_atomic(path, payload, mode=0o644, sync_dir=True)


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        with open(folder / RECORD_NAME, "rb") as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return None
    return data


def _remove_temp_records(work_dir: Path) -> None:
    for p in work_dir.glob(f".{RECORD_NAME}.*.tmp"):
        try:
            p.unlink()
        except FileNotFoundError:
            pass

"""The work area: where a claimed job lives from its claim until it is finished.

``<work>/<host id>/<job id>/`` holds ``job.json`` (the job's record of what was claimed,
written atomically and durably: recovery trusts it), ``inputs/`` (the claimed files,
moved in by :mod:`daemon.intake.claims`), ``out/`` (the rendered MP4s), and, beside them,
the lease (:mod:`daemon.cluster.lease`) and a cancel request (``cancel``) when one was made.

This module owns that folder's life after the claim: reading the jobs in it, finding a job
on whichever host holds it, cancel requests, and finishing -- the inputs to
``done/NAME/`` or ``failed/NAME/``, the MP4s to ``paths.outputs`` or away, the folder
removed, each step recorded first so that a crash in the middle is completed at the next
start. Folders without a record are removed when empty of anything but what daemons add,
else moved aside to ``work/.orphans/``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from daemon.atomic import write_atomic
from daemon.config import Config
from daemon.errors import ConfigError, MissingPartnerError
from daemon.jobs import ClaimedFile, ClaimedJob, JobOptions, job_error_from_dict
from daemon.jobstate import State
from daemon.logsetup import get_logger
from daemon.timestamps import isotime, utcnow

log = get_logger(__name__)

RECORD_NAME = "job.json"
CANCEL_NAME = "cancel"  # a request to cancel the job, left in its work folder by `lipsyncd cancel`
RECORD_FORMAT = "lipsyncd.job/1"
INPUTS = "inputs"
OUT = "out"



# --------------------------------------------------------------------------- the area

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


def host_dir(cfg: Config) -> Path:
    host_dir = cfg.host_work_dir
    if not host_dir.is_dir():
        if not cfg.paths.inbox.is_dir():
            # never create the inbox: an unmounted share must not be replaced by a local folder
            raise FileNotFoundError(errno.ENOENT, "the inbox is missing (is the share mounted?)", str(cfg.paths.inbox))
        host_dir.mkdir(parents=True, exist_ok=True)
    return host_dir


def job_dirs(cfg: Config) -> list[Path]:
    try:
        entries = list(os.scandir(cfg.host_work_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))


# --------------------------------------------------------------------------- the job record (job.json)

def write_record_file(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace, durable before returning: recovery trusts what it reads."""
    payload = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
    write_atomic(path, payload, mode=0o644, sync_dir=True)


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        with open(folder / RECORD_NAME, "rb") as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return None
    return data


def remove_temp_records(work_dir: Path) -> None:
    for p in work_dir.glob(f".{RECORD_NAME}.*.tmp"):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- the jobs in it

def load_claimed(work_dir: Path, cfg: Config) -> ClaimedJob:
    """The job recorded in ``work_dir/job.json`` (ValueError when there is no valid record)."""
    record = read_record(work_dir)
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
    for work_dir in job_dirs(cfg):
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


# --------------------------------------------------------------------------- cancelling

def request_cancel(work_dir: Path, *, by: str) -> None:
    """Ask the daemon that owns the job in ``work_dir`` to cancel it (FileNotFoundError: gone)."""
    write_atomic(work_dir / CANCEL_NAME, (json.dumps({"by": by, "at": isotime()})
                                          + "\n").encode(), mode=0o644)


def cancel_requested(job: ClaimedJob) -> bool:
    return os.path.exists(job.work_dir / CANCEL_NAME)


# --------------------------------------------------------------------------- finishing: to done/ or failed/

def output_archive_dir(job: ClaimedJob, cfg: Config) -> Path | None:
    """Where :func:`finish` keeps the job's MP4s when ``paths.outputs`` is set, else None."""
    return cfg.paths.outputs / job.id if cfg.paths.outputs is not None else None


def finish(job: ClaimedJob, cfg: Config, outcome: State | str) -> Path:
    """Move the job's inputs and job.json to ``done/NAME/`` or ``failed/NAME/``; that folder.

    An earlier ``NAME`` folder is first renamed to ``NAME.<its job id>``, so ``done/NAME`` is
    always the latest run. Rendered MP4s left in ``out/`` go to :func:`output_archive_dir`
    when ``paths.outputs`` is set and are deleted otherwise (they have been uploaded).
    The work folder is removed last.
    """
    if outcome not in (State.DONE, State.FAILED):
        raise ValueError(f"outcome must be 'done' or 'failed', not {outcome!r}")
    outcome = State(outcome).value
    record = read_record(job.work_dir)
    if record is None:
        raise FileNotFoundError(f"{job.work_dir}: the job's {RECORD_NAME} is gone")
    root = cfg.paths.done if outcome == State.DONE else cfg.paths.failed
    record["finish"] = {"outcome": outcome, "dest": str(root / job.name)}
    write_record_file(job.work_dir / RECORD_NAME, record)
    return complete_finish(job.work_dir, record, cfg)


def complete_finish(work_dir: Path, record: dict[str, Any], cfg: Config) -> Path:
    dest = Path(record["finish"]["dest"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    final = dict(record, state=record["finish"]["outcome"],
                 finished_at=isotime())
    final.pop("finish", None)
    for _attempt in range(10):
        try:
            dest.mkdir()
        except FileExistsError:
            if (read_record(dest) or {}).get("id") == record["id"]:
                break  # ours, from a finish that was cut short
            _move_aside(dest)
            continue
        # marks the folder as ours before anything moves; finished_at comes with the last write,
        # so that a job.json that has it says every input is there
        write_record_file(dest / RECORD_NAME, {k: v for k, v in final.items() if k != "finished_at"})
        break
    else:
        raise FileExistsError(f"{dest}: kept reappearing while moving older runs aside")
    remove_temp_records(dest)  # a finish killed while writing the record left one

    inputs = work_dir / INPUTS
    for src in sorted(p for p in inputs.rglob("*") if not p.is_dir()):
        _move(src, dest / src.relative_to(inputs))
    archive = cfg.paths.outputs / record["id"] if cfg.paths.outputs is not None else None
    out = work_dir / OUT
    if archive is not None and out.is_dir():
        for src in sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")):
            archive.mkdir(parents=True, exist_ok=True)
            _move(src, archive / src.name)
    write_record_file(dest / RECORD_NAME, final)
    shutil.rmtree(work_dir)
    log.info("job inputs moved", job=record["name"], job_id=record["id"], outcome=final["state"], folder=str(dest))
    return dest


def _move_aside(dest: Path) -> None:
    old = read_record(dest)
    suffix = old["id"] if old and isinstance(old.get("id"), str) else \
        "old-" + utcnow().strftime("%Y%m%dT%H%M%SZ")
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


# --------------------------------------------------------------------------- folders without a record

ORPHANS = ".orphans"  # work/.orphans/: folders without a job record that hold files nobody wrote for a claim


def _daemon_made(path: Path) -> bool:
    """Files a daemon puts into a job folder besides the claim itself: the lease and temp files."""
    name = path.name
    return name == "lease" or (name.startswith((".lease.", ".sidecar.", f".{RECORD_NAME}.")) and name.endswith(".tmp"))


def forget_unrecorded(work_dir: Path, cfg: Config) -> None:
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

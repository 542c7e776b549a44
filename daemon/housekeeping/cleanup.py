"""Deleting what has outlived its retention, locally and in the bucket.

Areas and their retention (``[cleanup]``; 0 keeps an area forever):

* ``done/NAME/``, ``failed/NAME/`` -- inputs of finished jobs, one folder per job;
* ``paths.outputs`` -- local copies of the videos, file by file;
* the work area -- job folders nobody owns any more (``<work>/<host>/<job id>/``);
* the bucket -- uploaded videos under ``storage.prefix``; their sidecars then say
  "expired" instead of carrying a dead link;
* unfinished multipart uploads under ``storage.prefix`` started more than
  :data:`INCOMPLETE_UPLOAD_MAX_AGE` ago -- the parts an upload killed mid-way left
  behind, which no listing shows but the store keeps (and a cloud bills) until aborted.

A local entry's age is that of its newest file, so a folder something still writes to is
young. Nothing that belongs to a job in progress is touched: a job whose sidecar is
queued/rendering/uploading, or whose work folder has a live lease or an unfinished claim.
Every deletion is one log line naming what and why; ``dry_run`` logs "would delete" and
changes nothing.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

from daemon.cluster import lease
from daemon.config import Config
from daemon.errors import StorageError
from daemon.housekeeping import links
from daemon import workarea
from daemon.logsetup import get_logger
from daemon.outbox import Entry, Outbox, OutputState, State
from daemon.reporting.status import human_duration
from daemon.storage import Store, StoredObject, retention_days

log = get_logger(__name__)

# a job finished this close to the start of a listing may be missing from it
VANISHED_SLACK_SECONDS = 120.0
# An upload takes minutes; one unfinished after a day was interrupted, not slow, even on
# another host with a slow link. Younger ones are never aborted: they may be in progress.
INCOMPLETE_UPLOAD_MAX_AGE = 86400.0


@dataclass(frozen=True)
class Removal:
    area: str  # "done", "failed", "outputs", "work", "remote" or "unfinished-upload"
    target: str  # a path, or s3://bucket/key
    age: float  # seconds
    retention: float  # seconds
    size: int


@dataclass
class CleanupReport:
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)  # deleted, or would be in a dry run
    kept_in_progress: list[str] = field(default_factory=list)  # old enough, but a job is using it
    expired_sidecars: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def bytes_freed(self) -> int:
        return sum(r.size for r in self.removed)


@dataclass
class _Activity:
    """What belongs to jobs in progress: never deleted."""

    names: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    finished_ids: set[str] = field(default_factory=set)  # ids of jobs whose sidecar is final


def _activity(entries: list[Entry]) -> _Activity:
    act = _Activity()
    for entry in entries:
        if entry.active:
            act.names.add(entry.job)
            act.ids.add(entry.id or "")
        elif entry.id:
            act.finished_ids.add(entry.id)
    return act


def run_cleanup(cfg: Config, store: Store | None = None, *, dry_run: bool | None = None,
                now: float | None = None) -> CleanupReport:
    """One cleanup pass over every area; ``store`` None skips the bucket."""
    dry = cfg.cleanup.dry_run if dry_run is None else dry_run
    now = time.time() if now is None else now
    c = cfg.cleanup
    report = CleanupReport(dry_run=dry)
    entries = Outbox(cfg.paths.outbox).scan()  # one scan for the whole pass
    act = _activity(entries)
    _clean_job_folders(cfg.paths.done, "done", c.done_retention, act, now, report)
    _clean_job_folders(cfg.paths.failed, "failed", c.failed_retention, act, now, report)
    if cfg.paths.outputs is not None:
        _clean_outputs(cfg, entries, act, now, report)
    _clean_work_area(cfg, act, now, report)
    if store is not None and c.remote_retention > 0:
        _clean_remote(cfg, store, entries, act, now, report)
    if store is not None:
        _abort_incomplete_uploads(cfg, store, now, report)
    log.info("cleanup finished" if not dry else "cleanup dry run finished", removed=len(report.removed),
             bytes=report.bytes_freed(), kept_in_progress=len(report.kept_in_progress),
             sidecars_expired=len(report.expired_sidecars), errors=len(report.errors))
    return report


# --------------------------------------------------------------------------- local areas


def newest_mtime(path: Path) -> float:
    """The latest mtime of ``path`` and everything below it (links are not followed)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove(path: Path, area: str, age: float, retention: float, why: str, report: CleanupReport) -> bool:
    try:
        size = _size(path)
    except FileNotFoundError:
        return False
    removal = Removal(area, str(path), age, retention, size)
    fields = dict(area=area, path=str(path), age=human_duration(age), retention=human_duration(retention),
                  bytes=size, reason=why)
    if report.dry_run:
        log.info("would delete", **fields)
        report.removed.append(removal)
        return True
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        log.error("could not delete", area=area, path=str(path), error=f"{type(e).__name__}: {e.strerror}")
        report.errors.append(f"{path}: {e.strerror}")
        return False
    log.info("deleted", **fields)
    report.removed.append(removal)
    return True


def _clean_job_folders(folder: Path, area: str, retention: float, act: _Activity, now: float,
                       report: CleanupReport) -> None:
    if retention <= 0:
        return
    for entry in _entries(folder):
        try:
            age = now - newest_mtime(entry)
        except FileNotFoundError:
            continue
        if age <= retention:
            continue
        if entry.name in act.names:
            # a job of the same name is running again; its inputs will land here
            report.kept_in_progress.append(str(entry))
            log.info("kept: a job of this name is in progress", area=area, path=str(entry))
            continue
        _remove(entry, area, age, retention, f"{area} inputs older than {area}_retention", report)


def _clean_outputs(cfg: Config, entries: list[Entry], act: _Activity, now: float, report: CleanupReport) -> None:
    retention = cfg.cleanup.outputs_retention
    root = cfg.paths.outputs
    if retention <= 0 or root is None or not root.is_dir():
        return
    active_paths = {o["local_path"] for e in entries if e.active for o in e.outputs if o.get("local_path")}
    deleted: set[str] = set()
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            try:
                age = now - path.lstat().st_mtime
            except FileNotFoundError:
                continue
            if age <= retention:
                continue
            if str(path) in active_paths or any(part in act.ids for part in path.relative_to(root).parts):
                report.kept_in_progress.append(str(path))
                continue
            if _remove(path, "outputs", age, retention, "local copy older than outputs_retention", report):
                deleted.add(str(path))
        if not report.dry_run and Path(dirpath) != root:
            try:
                os.rmdir(dirpath)  # only succeeds once the folder is empty
            except OSError:
                pass
    if deleted and not report.dry_run:
        _forget_local_copies(cfg, entries, deleted)


def _forget_local_copies(cfg: Config, entries: list[Entry], deleted: set[str]) -> None:
    # a sidecar must not point at a file that is gone
    outbox = Outbox(cfg.paths.outbox)
    for entry in entries:
        if entry.active or not any(o.get("local_path") in deleted for o in entry.outputs):
            continue
        outputs = [{k: v for k, v in o.items() if not (k == "local_path" and v in deleted)} for o in entry.outputs]
        outbox.replace_if_unchanged(entry, {**entry.doc, "outputs": outputs})


def _clean_work_area(cfg: Config, act: _Activity, now: float, report: CleanupReport) -> None:
    retention = cfg.cleanup.work_retention
    if retention <= 0:
        return
    job_dirs = [(host_dir, job_dir) for host_dir in _entries(cfg.work_dir) if host_dir.is_dir()
                for job_dir in _entries(host_dir) if job_dir.is_dir() and not job_dir.is_symlink()]
    if not job_dirs:
        return
    share_now = lease.share_now(cfg) if not report.dry_run else now  # the share's clock judges leases
    for host_dir, job_dir in job_dirs:
        try:
            age = now - newest_mtime(job_dir)
        except FileNotFoundError:
            continue
        if age <= retention:
            continue
        held = lease.read_lease(job_dir)
        if held is not None and share_now - held.renewed_at <= cfg.cluster.lease_timeout:
            reason = "its lease is live"
        elif job_dir.name in act.ids:
            reason = "its sidecar says the job is in progress"
        elif _is_claim(job_dir, cfg) and job_dir.name not in act.finished_ids:
            reason = "an unfinished claim: its daemon resumes it at start-up"
        else:
            _remove(job_dir, "work", age, retention, f"abandoned work folder of host {host_dir.name}", report)
            continue
        report.kept_in_progress.append(str(job_dir))
        log.info("kept", area="work", path=str(job_dir), age=human_duration(age), reason=reason)


def _is_claim(job_dir: Path, cfg: Config) -> bool:
    """True when ``job_dir`` holds a valid claim record: a job its daemon will resume."""
    try:
        workarea.load_claimed(job_dir, cfg)
    except (ValueError, KeyError, TypeError):
        return False
    return True


# --------------------------------------------------------------------------- the bucket


def _clean_remote(cfg: Config, store: Store, entries: list[Entry], act: _Activity, now: float,
                  report: CleanupReport) -> None:
    retention = cfg.cleanup.remote_retention
    gone: set[tuple[str, str]] = set()
    listed: set[str] = set()
    listing_started = time.time()
    try:
        for obj in store.list_objects(cfg.storage.prefix):
            listed.add(obj.key)
            if obj.last_modified is None:
                continue
            age = now - obj.last_modified.astimezone(timezone.utc).timestamp()
            if age > retention and _delete_object(store, obj, age, retention, act, report):
                gone.add((obj.bucket, obj.key))
    except StorageError as e:
        log.error("remote cleanup stopped: storage unavailable", error=str(e))
        report.errors.append(str(e))
        listed = set()  # an incomplete listing proves nothing about what is missing
    if report.dry_run:
        return
    report.expired_sidecars += links.expire_objects(
        cfg, gone, reason=f"deleted by cleanup after remote_retention ({human_duration(retention)})", entries=entries)
    if listed:
        vanished = _vanished_outputs(cfg, entries, listed, listing_started - VANISHED_SLACK_SECONDS)
        report.expired_sidecars += links.expire_objects(
            cfg, vanished, reason="no longer in storage (a lifecycle rule or a person deleted it)", entries=entries)


def _delete_object(store: Store, obj: StoredObject, age: float, retention: float, act: _Activity,
                   report: CleanupReport) -> bool:
    """Delete one object past its retention (or say it would be); True once it is gone."""
    target = f"s3://{obj.bucket}/{obj.key}"
    if any(part in act.ids for part in obj.key.split("/")):
        report.kept_in_progress.append(target)
        log.info("kept: its job is in progress", area="remote", object=target)
        return False
    fields = dict(area="remote", object=target, age=human_duration(age), retention=human_duration(retention),
                  bytes=obj.size, reason="uploaded video older than remote_retention")
    if report.dry_run:
        log.info("would delete", **fields)
        report.removed.append(Removal("remote", target, age, retention, obj.size))
        return False
    try:
        store.delete(obj.key)
    except StorageError as e:
        log.error("could not delete", area="remote", object=target, error=str(e))
        report.errors.append(f"{target}: {e}")
        return False
    log.info("deleted", **fields)
    report.removed.append(Removal("remote", target, age, retention, obj.size))
    return True


def _vanished_outputs(cfg: Config, entries: list[Entry], listed: set[str],
                      finished_before: float) -> set[tuple[str, str]]:
    """Outputs of finished jobs under our prefix whose object the listing did not show.

    Objects also disappear without lipsyncd (a bucket lifecycle rule, a person); their
    sidecars must not keep a dead link until it comes close to expiry. Only jobs finished
    before the listing began count: a video uploaded during it may be missing from it.
    """
    bucket, prefix = cfg.storage.bucket, cfg.storage.prefix
    missing = set()
    for entry in entries:
        finished = entry.finished_at()
        if entry.state is not State.DONE or finished is None or finished >= finished_before:
            continue
        for out in entry.outputs:
            key = out.get("key") or ""
            if (out.get("state") == OutputState.DONE and out.get("bucket", bucket) == bucket
                    and key.startswith(prefix) and key not in listed):
                missing.add((bucket, key))
    return missing


def _abort_incomplete_uploads(cfg: Config, store: Store, now: float, report: CleanupReport) -> None:
    limit = INCOMPLETE_UPLOAD_MAX_AGE
    try:
        uploads = list(store.list_incomplete_uploads(cfg.storage.prefix))
    except StorageError as e:
        log.error("unfinished uploads not checked: storage unavailable", error=str(e))
        report.errors.append(str(e))
        return
    for upload in uploads:
        age = upload.age(now)
        if age is None or age <= limit:
            continue  # possibly in progress; a store that gives no start time gets the benefit of the doubt
        target = f"s3://{upload.bucket}/{upload.key}?uploadId={upload.upload_id}"
        try:
            size = store.incomplete_upload_bytes(upload)
            if not report.dry_run:
                store.abort_upload(upload)
        except StorageError as e:
            log.error("could not abort", area="unfinished-upload", object=target, error=str(e))
            report.errors.append(f"{target}: {e}")
            continue
        log.info("would abort" if report.dry_run else "aborted", area="unfinished-upload", object=target,
                 age=human_duration(age), retention=human_duration(limit), bytes=size,
                 reason="multipart upload left unfinished (an interrupted upload); its parts are invisible "
                        "but kept and billed until aborted")
        report.removed.append(Removal("unfinished-upload", target, age, limit, size))


def apply_lifecycle_rule(cfg: Config, store: Store) -> int | None:
    """Install the bucket expiration rule when ``cleanup.lifecycle_rule`` asks; its days.

    The rule also has the store abort uploads left unfinished for a day, as the cleanup
    pass does, so they go even when no lipsyncd runs.
    """
    if not cfg.cleanup.lifecycle_rule or cfg.cleanup.remote_retention <= 0:
        return None
    days = retention_days(cfg.cleanup.remote_retention)
    try:
        store.set_lifecycle_expiration(days, cfg.storage.prefix,
                                       abort_incomplete_days=retention_days(INCOMPLETE_UPLOAD_MAX_AGE))
    except StorageError as e:
        if e.code != "lifecycle_unsupported":
            raise
        log.warning("no bucket lifecycle rule: the store does not support them; cleanup alone deletes old videos",
                    bucket=store.bucket)
        return None
    log.info("bucket lifecycle rule set", bucket=store.bucket, prefix=cfg.storage.prefix, days=days)
    return days

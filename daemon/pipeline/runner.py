"""One job from claim to done/ or failed/: render every output, upload, sign, finish.

The worker runs :meth:`JobRunner.process` in its render thread and
:meth:`JobRunner.upload_and_finish` again for a job whose upload has to wait for the
store. Nothing here decides *when* to retry: the outcome says what happened and the worker
schedules.

Each finished render leaves ``out/<name>.mp4`` plus a small record
``out/.<name>.rendered.json`` (size, sha256, duration, ...). A job that comes back after a
restart -- an interrupted shutdown, a crash, a store that was down -- skips every output
whose record still matches its file, so nothing is rendered twice; an upload already in
the store is skipped by ``upload_file`` itself (same key, size and sha256).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lipsync.engine import RenderOptions

from daemon import sidecar
from daemon.intake import claims
from daemon.cluster import lease
from daemon.atomic import write_atomic
from daemon.config import Config
from daemon.errors import JobError, PermanentJobError, StorageError, job_error_from
from daemon.failpoints import failpoint
from daemon.job_sidecar import JobSidecar
from daemon.jobs import ClaimedJob, PlannedOutput
from daemon.logsetup import bind_job, get_logger
from daemon.pipeline.engines import EngineCache

log = get_logger("lipsyncd.worker")

OutcomeKind = Literal["done", "failed", "interrupted", "retry", "upload_pending", "lost"]
FinishedHook = Callable[[dict[str, Any]], None]


class JobInterrupted(BaseException):
    """Raised from the render's progress callback when the daemon is told to stop now.

    A BaseException, so that no ``except Exception`` between the callback and us can
    mistake a shutdown for a render error and fail the job.
    """


class JobLost(Exception):
    """Another daemon took the job over (our lease expired while we stalled)."""


@dataclass
class Outcome:
    kind: OutcomeKind
    job: ClaimedJob
    record: JobSidecar | None = None
    error: JobError | None = None


class JobRunner:
    def __init__(self, cfg: Config, *, engines: EngineCache, options: RenderOptions, store: Any,
                 on_finished: Iterable[FinishedHook] = (), abort: threading.Event | None = None,
                 heartbeat: lease.Heartbeat | None = None) -> None:
        self.cfg = cfg
        self.engines = engines
        self.options = options
        self.store = store
        self.on_finished = list(on_finished)
        self.abort = abort or threading.Event()
        self.heartbeat = heartbeat
        self.progress = 0.0  # of the job rendering now, for the daemon's status line
        self._bucket_ready = False

    # ------------------------------------------------------------------ render

    def process(self, job: ClaimedJob) -> Outcome:
        with bind_job(job=job.name, job_id=job.id):
            engine_name = job.options.engine or self.cfg.render.engine
            rec, resumed = JobSidecar.open(self.cfg, job, None if job.error else engine_name)
            rec.still_ours = lambda: self.owns(job)
            if resumed and rec.doc["state"] in ("done", "failed"):
                # stopped right after the final sidecar write: only filing the inputs is left
                log.info("job resumed", state=rec.doc["state"])
                claims.finish(job, self.cfg, rec.doc["state"])
                self._finished(rec)
                return Outcome(rec.doc["state"], job, rec, job.error)
            if resumed:
                rec.add_note(f"resumed at {sidecar.isotime()}")
                log.info("job resumed", state=rec.doc["state"])
            if job.error is not None:
                return self.fail(job, rec, job.error)
            try:
                self._check_owner(job)
                rec.set_error(None)
                rec.set_state("queued", inputs=job.inputs_document())
                self._render_all(job, rec, engine_name)
            except JobInterrupted:
                return self._interrupted(job, rec, "rendering")
            except JobLost:
                return Outcome("lost", job, rec)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a job outcome
                if not self.owns(job):
                    # taken over while we stalled: the failure is ours (the folder moved), not the job's
                    return self._lost(job, rec)
                err = _as_dropped(job_error_from(exc), job)
                if err.permanent:
                    if err.code == "internal_error":
                        log.exception("render crashed")
                    return self.fail(job, rec, err)
                log.warning("render failed, will retry", code=err.code, error=err.message)
                return Outcome("retry", job, rec, err)
            return self.upload_and_finish(job, rec)

    def _render_all(self, job: ClaimedJob, rec: JobSidecar, engine_name: str) -> None:
        from lipsync.render import render

        planned = job.planned_outputs()
        engine = self.engines.get(engine_name)
        for note in getattr(engine, "load_notes", []) or []:
            rec.add_note(note)
        rec.doc["engine"] = engine.name
        rec.ensure_outputs([(p.name, p.template_name) for p in planned], engine.name)
        if "started_at" not in rec.doc["timings"]:
            rec.mark("started_at")
        rec.set_state("rendering")
        job.out_dir.mkdir(parents=True, exist_ok=True)
        count = len(planned)
        self.progress = 0.0
        for i, plan in enumerate(planned):
            out = rec.output(plan.name)
            done = _read_rendered(plan)
            if done is not None:
                if out.get("state") != "done":  # uploaded before the restart: keep its link
                    out.update(done["output"])
                continue
            if self.abort.is_set():
                raise JobInterrupted()
            out["state"] = "rendering"
            self._check_owner(job)
            rec.write()
            failpoint("before_render")
            partial = job.out_dir / f".{plan.name}.partial.mp4"

            def progress(fraction: float, _i: int = i) -> None:
                if self.abort.is_set():
                    raise JobInterrupted()
                failpoint("render_progress")
                self.progress = (_i + fraction) / count
                rec.progress(self.progress)

            started = time.monotonic()
            result = render(job.audio, plan.template, partial, engine=engine, options=self.options,
                            progress=progress)
            seconds = time.monotonic() - started
            _check_inputs_unchanged(job)
            os.replace(partial, plan.path)
            from daemon.storage import sha256_file

            fields = {
                "state": "rendered", "size": plan.path.stat().st_size, "sha256": sha256_file(plan.path),
                "duration": round(float(result.duration), 3), "width": int(result.width),
                "height": int(result.height), "fps": float(result.fps), "engine": result.engine,
            }
            out.update(fields)
            notes = [n if count == 1 else f"{plan.name}: {n}" for n in result.notes]
            for note in notes:
                rec.add_note(note)
            _write_rendered(plan, {"output": fields, "render_seconds": round(seconds, 3), "notes": notes})
            log.info("output rendered", output=plan.name, template=plan.template_name, seconds=round(seconds, 2),
                     frames=result.frames, engine=result.engine)
            failpoint("after_render")
        rec.doc["progress"] = 1.0
        rec.mark("rendered_at")

    # ------------------------------------------------------------------ upload

    def upload_and_finish(self, job: ClaimedJob, rec: JobSidecar) -> Outcome:
        """Upload every rendered output, sign its link, mark the job done and finish it."""
        from daemon.housekeeping.links import link_lifetime
        from daemon.storage import object_key

        with bind_job(job=job.name, job_id=job.id):
            planned = job.planned_outputs()
            started = time.monotonic()
            try:
                self._check_owner(job)
                rec.set_state("uploading")
                self._ensure_bucket()
                lifetime = link_lifetime(self.cfg, self.store, rec.doc.get("options"))
                claimed = sidecar.parse_time(job.claimed_at)
                archive = claims.output_archive_dir(job, self.cfg)
                for plan in planned:
                    out = rec.output(plan.name)
                    if out.get("state") == "done" and out.get("url"):
                        continue
                    if self.abort.is_set():
                        raise JobInterrupted()
                    self._check_owner(job)
                    key = out.get("key") or object_key(self.cfg, job.id, plan.name, claimed)
                    out["state"] = "uploading"
                    failpoint("before_upload")
                    stored = self.store.upload_file(plan.path, key, sha256=out["sha256"], filename=plan.name)
                    failpoint("after_upload")
                    url, expires = self.store.presign_get(key, lifetime=lifetime, filename=plan.name)
                    out.update(state="done", url=url, url_expires_at=sidecar.isotime(expires),
                               bucket=stored.bucket, key=key, content_type="video/mp4")
                    if archive is not None:
                        out["local_path"] = str(archive / plan.name)
                    # the link itself is a bearer token: the log names the object instead
                    log.info("output uploaded", output=plan.name, bucket=stored.bucket, key=key, size=stored.size,
                             link_expires_at=out["url_expires_at"])
            except JobInterrupted:
                return self._interrupted(job, rec, "uploading")
            except JobLost:
                return Outcome("lost", job, rec)
            except StorageError as e:
                if not self.owns(job):
                    return self._lost(job, rec)
                for plan in planned:
                    out = rec.output(plan.name)
                    if out.get("state") == "uploading":
                        out["state"] = "rendered"
                log.warning("upload failed, will retry", code=e.code, error=e.message)
                return Outcome("upload_pending", job, rec, e)
            except Exception as exc:  # noqa: BLE001
                if not self.owns(job):
                    return self._lost(job, rec)  # e.g. our MP4 vanished with the taken-over folder
                err = job_error_from(exc)
                if not err.permanent:
                    return Outcome("upload_pending", job, rec, err)
                log.exception("upload crashed")
                return self.fail(job, rec, err)
            upload_seconds = time.monotonic() - started
            return self._finish_done(job, rec, upload_seconds)

    def _finish_done(self, job: ClaimedJob, rec: JobSidecar, upload_seconds: float) -> Outcome:
        doc = rec.doc
        doc.pop("upload", None)
        rec.mark("uploaded_at")
        rec.mark("finished_at")
        timings = doc["timings"]
        timings["render_seconds"] = round(sum(_render_seconds(p) for p in job.planned_outputs()), 3)
        timings["upload_seconds"] = round(upload_seconds, 3)
        timings["total_seconds"] = rec.total_seconds()
        rec.set_error(None)
        failpoint("before_sidecar_done")
        try:
            self._check_owner(job)
        except JobLost:
            return Outcome("lost", job, rec)
        rec.set_state("done", progress=1.0)
        failpoint("after_sidecar_done")
        claims.finish(job, self.cfg, "done")
        failpoint("after_finish")
        self._finished(rec)
        return Outcome("done", job, rec)

    def _ensure_bucket(self) -> None:
        # an external store is not contacted at start (the daemon must start while it is
        # down), so the bucket is checked -- and created when allowed -- before the first upload
        if not self._bucket_ready:
            self.store.ensure_bucket()
            self._bucket_ready = True

    # ------------------------------------------------------------------ endings

    def fail(self, job: ClaimedJob, rec: JobSidecar, error: JobError, *, retryable: bool | None = None) -> Outcome:
        """Mark the job failed (sidecar first), move its inputs to failed/NAME/ untouched."""
        with bind_job(job=job.name, job_id=job.id):
            rec.set_error(error, retryable=retryable if retryable is not None else not error.permanent)
            for out in rec.doc["outputs"]:
                if out.get("state") != "done":
                    out["state"] = "failed"
                    out["error"] = error.message
            rec.mark("finished_at")
            rec.doc["timings"]["total_seconds"] = rec.total_seconds()
            rec.doc.pop("upload", None)
            if not self.owns(job):
                return self._lost(job, rec)
            rec.set_state("failed")
            claims.finish(job, self.cfg, "failed")
            log.warning("job failed", code=error.code, error=error.message, file=error.file)
            self._finished(rec)
            return Outcome("failed", job, rec, error)

    def _interrupted(self, job: ClaimedJob, rec: JobSidecar, phase: str) -> Outcome:
        """Leave the job claimed, its sidecar back to "queued": the next start resumes it."""
        for out in rec.doc["outputs"]:
            if out.get("state") in ("rendering", "uploading"):
                out["state"] = "pending" if out.get("state") == "rendering" else "rendered"
        rec.add_note(f"interrupted by a shutdown while {phase} at {sidecar.isotime()}; "
                     "it resumes when the daemon starts again")
        if self.owns(job):
            rec.set_state("queued")
        log.warning("job interrupted by shutdown; left in the work area to resume", phase=phase)
        return Outcome("interrupted", job, rec)

    def _finished(self, rec: JobSidecar) -> None:
        doc = rec.doc
        timings = doc["timings"]
        log.info("job finished", job=doc["job"], job_id=doc["id"], state=doc["state"],
                 outputs=sum(1 for o in doc["outputs"] if o.get("state") == "done"),
                 render_seconds=timings.get("render_seconds"), upload_seconds=timings.get("upload_seconds"),
                 total_seconds=timings.get("total_seconds"), engine=doc.get("engine"),
                 error=(doc.get("error") or {}).get("code"))
        for hook in self.on_finished:
            try:
                hook(sidecar.snapshot(doc))
            except Exception:  # noqa: BLE001 - a notification must never fail the job
                log.exception("on_finished hook failed", hook=getattr(hook, "__name__", type(hook).__name__))

    # ------------------------------------------------------------------ ownership

    def owns(self, job: ClaimedJob) -> bool:
        if self.heartbeat is not None and self.heartbeat.lost(job.work_dir):
            return False
        return lease.still_owner(job.work_dir, self.cfg.host_id)

    def _check_owner(self, job: ClaimedJob) -> None:
        if not self.owns(job):
            log.warning("job taken over by another daemon; dropping it here")
            raise JobLost(job.id)

    def _lost(self, job: ClaimedJob, rec: JobSidecar | None) -> Outcome:
        log.warning("job taken over by another daemon; dropping it here")
        return Outcome("lost", job, rec)


def retry_later(rec: JobSidecar, error: JobError, attempt: int, attempts: int, when: float) -> None:
    """The sidecar of a job waiting to render again after a transient failure."""
    rec.set_error(error, retryable=True)
    for out in rec.doc["outputs"]:
        if out.get("state") == "rendering":
            out["state"] = "pending"
    rec.add_note(f"attempt {attempt} of {attempts} failed ({error.code}); retrying at {sidecar.isotime(when)}")
    rec.set_state("queued")


def _as_dropped(err: JobError, job: ClaimedJob) -> JobError:
    """``err`` naming files as the user dropped them, not by their place in the work area."""
    inside = f"{job.inputs_dir}/"
    if inside not in err.message and not (err.file or "").startswith(inside):
        return err
    err.message = err.message.replace(inside, "")
    err.args = (err.message,)
    if err.file and err.file.startswith(inside):
        err.file = err.file[len(inside):]
    return err


def _check_inputs_unchanged(job: ClaimedJob) -> None:
    """PermanentJobError when an input differs from what was claimed.

    A copy that paused longer than the settle window and then carried on, or a file
    replaced through a handle held open, changes under the renderer: the video would
    mix two versions of it. Size and mtime as recorded at the claim are the reference.
    """
    for f in job.files:
        if not f.moved or f.library:
            continue
        try:
            st = os.stat(job.inputs_dir / f.name)
        except FileNotFoundError:
            st = None
        if st is None or st.st_size != f.size or (f.mtime_ns and st.st_mtime_ns != f.mtime_ns):
            now = "it is gone" if st is None else f"now {st.st_size} bytes, modified after the claim"
            raise PermanentJobError(f"{f.name} changed while it was being read (claimed at {f.size} bytes; {now}): "
                                    "it was still being copied or was replaced. Drop the job again once the file "
                                    "is complete", code="input_changed", file=f.name)


# --------------------------------------------------------------------------- render records


def _record_path(plan: PlannedOutput) -> Path:
    return plan.path.with_name(f".{plan.name}.rendered.json")


def _write_rendered(plan: PlannedOutput, data: dict[str, Any]) -> None:
    write_atomic(_record_path(plan), json.dumps(data).encode())


def _read_rendered(plan: PlannedOutput) -> dict[str, Any] | None:
    """The record of an earlier complete render of ``plan``, if its MP4 is intact."""
    try:
        data = json.loads(_record_path(plan).read_text())
        if plan.path.stat().st_size == data["output"]["size"]:
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _render_seconds(plan: PlannedOutput) -> float:
    data = _read_rendered(plan)
    return float(data.get("render_seconds", 0.0)) if data else 0.0

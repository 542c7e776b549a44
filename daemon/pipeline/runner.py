"""One job from claim to done/ or failed/: render every output, upload, sign, finish.

The worker hands a :class:`JobRun` to :meth:`JobRunner.run`, which performs its next step
(render, or upload after the store was down) and answers with an :class:`Outcome`. The
runner decides what a failure means -- retry later (and when), or fail for good -- and
records it in the job's sidecar; the worker only schedules the run again at ``run.due``.

Rendering is :mod:`daemon.pipeline.rendering`'s: a job that comes back after a restart --
an interrupted shutdown, a crash, a store that was down -- skips every output whose render
record still matches its file, so nothing is rendered twice; an upload already in the
store is skipped by ``upload_file`` itself (same key, size and sha256).

Ownership: every sidecar write is fenced (:mod:`daemon.outbox`): once another daemon has
taken the job over, the write raises :class:`RecordFenced` and the run ends as ``LOST``
without touching anything others see. Uploads cannot be fenced that way, so the lease is
checked right before each one; a stale upload lands on the same key the new owner uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lipsync.engine import RenderOptions

from daemon.backoff import Backoff
from daemon.cluster import lease
from daemon.config import Config
from daemon.confine import PathScrubber
from daemon.errors import JobError, PermanentJobError, TransientJobError, job_error_from
from daemon.failpoints import failpoint
from daemon.housekeeping.links import link_lifetime
from daemon import workarea
from daemon.jobs import ClaimedJob
from daemon.logsetup import bind_job, get_logger
from daemon.outbox import Outbox, OutputState, RecordFenced, Sidecar, State, parse_time
from daemon.pipeline.engines import EngineCache
from daemon.pipeline.rendering import JobCancelled, JobInterrupted, OutputRenderer, check_cancel, render_seconds
from daemon.pipeline.slots import Slot
from daemon.storage.permalinks import load_signer
from daemon.storage import Store, object_key

log = get_logger(__name__)

FinishedHook = Callable[[dict[str, Any]], None]
UPLOAD_RETRY_FIRST = 2.0  # seconds before the first upload retry; doubling up to storage.retry_backoff_max


class Step(StrEnum):
    RENDER = "render"
    UPLOAD = "upload"


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"  # another daemon owns the job now
    INTERRUPTED = "interrupted"  # a shutdown stopped it; it resumes at the next start
    RENDER_LATER = "render_later"  # a transient render failure: run again at run.due
    UPLOAD_LATER = "upload_later"  # the store is unreachable: run the upload again at run.due

    @property
    def final(self) -> bool:
        return self in (Outcome.DONE, Outcome.FAILED, Outcome.LOST, Outcome.INTERRUPTED)


@dataclass
class JobRun:
    """A claimed job as the worker holds it between steps."""

    job: ClaimedJob
    step: Step = Step.RENDER
    due: float = 0.0  # time.monotonic() at which the next step may run
    render_attempts: int = 0  # transient render failures so far
    upload_attempts: int = 0  # failed upload rounds so far
    record: Sidecar | None = None
    slot: Slot | None = None  # where the worker renders it (device; progress for its status line)


class JobLost(Exception):
    """The lease says another daemon owns the job (checked before uploads)."""


class JobRunner:
    def __init__(self, cfg: Config, *, engines: EngineCache, options: RenderOptions, store: Store,
                 on_finished: Iterable[FinishedHook] = (), abort: threading.Event | None = None,
                 heartbeat: lease.Heartbeat | None = None, link_note: str | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.outbox = Outbox(cfg.paths.outbox)
        self.on_finished = list(on_finished)
        self.abort = abort or threading.Event()
        self.renderer = OutputRenderer(cfg, engines=engines, options=options, abort=self.abort)
        self.heartbeat = heartbeat
        # said in every finished job's notes, e.g. that its link dies with a burst run's store
        self.link_note = link_note
        # permanent links (/l/<token>) when an HTTP API serves this share
        self.links = load_signer(cfg.link_secret_file) if cfg.permanent_links else None
        self.render_backoff = Backoff(float(cfg.render.retry_delay), float(cfg.render.retry_delay_max))
        self.upload_backoff = Backoff(UPLOAD_RETRY_FIRST, float(cfg.storage.retry_backoff_max))
        self._bucket_ready = False
        self.scrub = PathScrubber.for_config(cfg)  # records never show server paths

    # ------------------------------------------------------------------ entry points

    def run(self, run: JobRun) -> Outcome:
        """Perform ``run``'s next step; the outcome says what the worker does next."""
        with bind_job(job=run.job.name, job_id=run.job.id):
            try:
                if run.record is None:
                    resumed = self._open(run)
                    if resumed is not None:
                        return resumed
                check_cancel(run.job)
                if run.step is Step.UPLOAD:
                    return self._upload(run)
                return self._render(run)
            except (RecordFenced, JobLost) as e:
                return self._lost(run, str(e))
            except JobInterrupted:
                return self._interrupted(run)
            except JobCancelled:
                return self._cancelled(run)

    def crashed(self, run: JobRun, exc: BaseException) -> Outcome:
        """A step died of something unexpected: a transient internal error, retried like any other."""
        with bind_job(job=run.job.name, job_id=run.job.id):
            log.error("job step crashed; it is retried", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            try:
                if run.record is None:
                    self._open(run)
                return self._render_later(run, TransientJobError(f"internal: {type(exc).__name__}: {exc}",
                                                                 code="internal_error"))
            except (RecordFenced, JobLost) as e:
                return self._lost(run, str(e))

    # ------------------------------------------------------------------ opening

    def _open(self, run: JobRun) -> Outcome | None:
        """Attach the job's record to ``run``; an outcome when nothing is left to do."""
        job = run.job
        current = lease.read_lease(job.work_dir)
        if current is None or current.host != self.cfg.host_id:
            raise JobLost("the job's lease names another daemon")
        engine = None if job.error else (job.options.engine or self.cfg.render.engine)
        rec, resumed = Sidecar.open(self.outbox, job, host=self.cfg.host_id, engine=engine,
                                    generation=current.generation, fence=job.work_dir)
        run.record = rec
        if resumed and rec.state in (State.DONE, State.FAILED):
            # stopped right after the final sidecar write: only filing the inputs is left
            log.info("job resumed", state=rec.state)
            self._file_inputs(job, rec.state)
            self._finished(rec)
            return Outcome.DONE if rec.state is State.DONE else Outcome.FAILED
        if resumed:
            rec.resumed()
            log.info("job resumed", state=rec.state)
        return None

    # ------------------------------------------------------------------ render

    def _render(self, run: JobRun) -> Outcome:
        job, rec = run.job, run.record
        assert rec is not None
        if job.error is not None:
            return self._fail(run, job.error)
        try:
            rec.queued(inputs=job.inputs_document())
            self.renderer.render_all(job, rec, run.slot)
        except (RecordFenced, JobLost, JobInterrupted, JobCancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a job outcome
            if not self.owns(job):
                # taken over while we stalled: the failure is ours (the folder moved), not the job's
                raise JobLost("taken over during the render") from exc
            err = job_error_from(exc)
            if err.permanent:
                if err.code == "internal_error":
                    log.exception("render crashed")
                return self._fail(run, err)
            return self._render_later(run, err)
        return self._upload(run)

    def _render_later(self, run: JobRun, err: JobError) -> Outcome:
        rec = run.record
        assert rec is not None
        err = self._as_shown(err, run.job)
        run.render_attempts += 1
        attempts = self.cfg.render.max_attempts
        if run.render_attempts >= attempts:
            log.warning("render failed on its last attempt", code=err.code, error=err.message,
                        attempt=run.render_attempts, of=attempts)
            return self._fail(run, err, retryable=True)
        delay = self.render_backoff.delay(run.render_attempts)
        rec.retry_later(err, attempt=run.render_attempts, attempts=attempts, when=time.time() + delay)
        log.warning("render failed, will retry", code=err.code, error=err.message, attempt=run.render_attempts,
                    of=attempts, in_seconds=round(delay, 1))
        run.step, run.due = Step.RENDER, time.monotonic() + delay
        return Outcome.RENDER_LATER

    # ------------------------------------------------------------------ upload

    def _upload(self, run: JobRun) -> Outcome:
        """Upload every rendered output, sign its link, mark the job done and file its inputs."""
        job, rec = run.job, run.record
        assert rec is not None
        planned = job.planned_outputs()
        started = time.monotonic()
        try:
            rec.uploading()
            self._ensure_bucket()
            lifetime = link_lifetime(self.cfg, self.store, rec.doc.get("options"))
            claimed = parse_time(job.claimed_at)
            archive = workarea.output_archive_dir(job, self.cfg)
            for plan in planned:
                out = rec.output(plan.name)
                if out.get("state") == OutputState.DONE and out.get("url"):
                    continue
                if self.abort.is_set():
                    raise JobInterrupted()
                check_cancel(job)
                self._check_owner(job)
                key = out.get("key") or object_key(self.cfg, job.id, plan.name, claimed)
                rec.output_uploading(plan.name)
                failpoint("before_upload", job.id)
                stored = self.store.upload_file(plan.path, key, sha256=out["sha256"], filename=plan.name)
                failpoint("after_upload", job.id)
                url, expires = self.store.presign_get(key, lifetime=lifetime, filename=plan.name)
                rec.output_uploaded(plan.name, url=url, expires=expires, bucket=stored.bucket, key=key,
                                    local_path=str(archive / plan.name) if archive is not None else None,
                                    link=self.links.link(self.cfg.api_base_url, key) if self.links else None)
                # the link itself is a bearer token: the log names the object instead
                log.info("output uploaded", output=plan.name, bucket=stored.bucket, key=key, size=stored.size,
                         link_expires_at=rec.output(plan.name)["url_expires_at"])
        except (RecordFenced, JobLost, JobInterrupted, JobCancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a job outcome
            if not self.owns(job):
                raise JobLost("taken over during the upload") from exc  # e.g. our MP4 moved with the folder
            err = job_error_from(exc)
            if err.permanent:
                log.exception("upload crashed")
                return self._fail(run, err)
            return self._upload_later(run, err)
        return self._done(run, time.monotonic() - started)

    def _upload_later(self, run: JobRun, err: JobError) -> Outcome:
        rec = run.record
        assert rec is not None
        err = self._as_shown(err, run.job)
        run.upload_attempts += 1
        delay = self.upload_backoff.delay(run.upload_attempts)
        log.warning("upload failed, will retry", code=err.code, error=err.message, attempt=run.upload_attempts,
                    in_seconds=round(delay, 1))
        rec.upload_waiting(err.message, attempt=run.upload_attempts, next_at=time.time() + delay)
        run.step, run.due = Step.UPLOAD, time.monotonic() + delay
        return Outcome.UPLOAD_LATER

    def _done(self, run: JobRun, upload_seconds: float) -> Outcome:
        job, rec = run.job, run.record
        assert rec is not None
        failpoint("before_sidecar_done", job.id)
        if self.link_note:
            rec.add_note(self.link_note)
        rec.done(render_seconds=sum(render_seconds(p) for p in job.planned_outputs()), upload_seconds=upload_seconds)
        failpoint("after_sidecar_done", job.id)
        self._file_inputs(job, State.DONE)
        failpoint("after_finish", job.id)
        self._finished(rec)
        return Outcome.DONE

    def _ensure_bucket(self) -> None:
        # an external store is not contacted at start (the daemon must start while it is
        # down), so the bucket is checked -- and created when allowed -- before the first upload
        if not self._bucket_ready:
            self.store.ensure_bucket()
            self._bucket_ready = True

    # ------------------------------------------------------------------ endings

    def _fail(self, run: JobRun, error: JobError, *, retryable: bool | None = None) -> Outcome:
        """Mark the job failed (sidecar first), move its inputs to failed/NAME/ untouched."""
        rec = run.record
        assert rec is not None
        error = self._as_shown(error, run.job)
        rec.failed(error, retryable=retryable if retryable is not None else not error.permanent)
        self._file_inputs(run.job, State.FAILED)
        log.warning("job failed", code=error.code, error=error.message, file=error.file)
        self._finished(rec)
        return Outcome.FAILED

    def _as_shown(self, err: JobError, job: ClaimedJob) -> JobError:
        """``err`` naming files as the user dropped them (not by their place in the work
        area) and folders as users know them: a record never shows a server path."""
        inside = f"{job.inputs_dir}/"
        message, file = err.message.replace(inside, ""), err.file
        if file and file.startswith(inside):
            file = file[len(inside):]
        message, file = self.scrub(message), self.scrub(file) if file else file
        if (message, file) != (err.message, err.file):
            err.message, err.file = message, file
            err.args = (message,)
        return err

    def _file_inputs(self, job: ClaimedJob, state: State) -> None:
        # the lease goes first: its folder is about to disappear, which the heartbeat must
        # not mistake for a takeover
        if self.heartbeat is not None:
            self.heartbeat.discard(job.work_dir)
        try:
            workarea.finish(job, self.cfg, state)
        except OSError as exc:
            # stalled past the lease after the final record: the daemon that took the job over
            # found the record final and filed the inputs itself -- the job is no longer ours
            if not self.owns(job):
                raise JobLost("its inputs were filed by the daemon that took the job over") from exc
            raise

    def _interrupted(self, run: JobRun) -> Outcome:
        """Leave the job claimed, its sidecar back to "queued": the next start resumes it."""
        phase = State.UPLOADING if run.step is Step.UPLOAD else State.RENDERING
        if run.record is not None:
            try:
                run.record.interrupted(phase)
            except RecordFenced:
                pass  # taken over meanwhile: the new owner's record stands
        log.warning("job interrupted by shutdown; left in the work area to resume", phase=phase)
        return Outcome.INTERRUPTED

    def _cancelled(self, run: JobRun) -> Outcome:
        log.info("job cancelled on request")
        phase = "uploading" if run.step is Step.UPLOAD else "queued or rendering"
        err = PermanentJobError(f"cancelled on request while {phase}; its inputs are kept: "
                                "drop them again to render it", code="cancelled")
        try:
            return self._fail(run, err)
        except (RecordFenced, JobLost) as e:
            return self._lost(run, str(e))

    def _lost(self, run: JobRun, why: str) -> Outcome:
        job = run.job
        if self.heartbeat is not None:
            self.heartbeat.discard(job.work_dir)
        entry = self.outbox.read(job.name)
        mine = run.record.generation if run.record is not None else _generation_on_record(self.outbox, job)
        still_ours = (entry is not None and entry.id == job.id and not (entry.state and entry.state.final)
                      and (entry.doc.get("generation") or 1) <= mine)
        if not still_ours or workarea.locate(self.cfg, job.id) is not None:
            log.warning("job taken over by another daemon; dropped here without writing", reason=why)
            return Outcome.LOST
        # nowhere on the share: removed by hand, not taken over; say so once, in the record
        err = PermanentJobError("the job's work folder was removed while the job was in progress "
                                f"({job.work_dir.name}); its inputs are gone: drop them again", code="input_changed")
        try:
            rec = run.record or Sidecar.open(self.outbox, job, host=self.cfg.host_id, engine=None,
                                             generation=_generation_on_record(self.outbox, job), fence=None)[0]
            rec.vanished(err)
        except (RecordFenced, OSError) as e:
            log.warning("the job's work folder vanished; its record could not be updated", reason=str(e))
            return Outcome.LOST
        log.warning("the job's work folder vanished; recorded as failed", code=err.code)
        self._finished(rec)
        return Outcome.FAILED

    def _finished(self, rec: Sidecar) -> None:
        doc = rec.snapshot()
        timings = doc["timings"]
        log.info("job finished", job=doc["job"], job_id=doc["id"], state=doc["state"],
                 outputs=sum(1 for o in doc["outputs"] if o.get("state") == OutputState.DONE),
                 render_seconds=timings.get("render_seconds"), upload_seconds=timings.get("upload_seconds"),
                 total_seconds=timings.get("total_seconds"), engine=doc.get("engine"),
                 error=(doc.get("error") or {}).get("code"))
        for hook in self.on_finished:
            try:
                hook(doc)
            except Exception:  # noqa: BLE001 - a notification must never fail the job
                log.exception("on_finished hook failed", hook=getattr(hook, "__name__", type(hook).__name__))

    # ------------------------------------------------------------------ ownership

    def owns(self, job: ClaimedJob) -> bool:
        if self.heartbeat is not None and self.heartbeat.lost(job.work_dir):
            return False
        return lease.still_owner(job.work_dir, self.cfg.host_id)

    def _check_owner(self, job: ClaimedJob) -> None:
        if not self.owns(job):
            raise JobLost("the lease names another daemon")



def _generation_on_record(outbox: Outbox, job: ClaimedJob) -> int:
    entry = outbox.read(job.name)
    generation = entry.doc.get("generation") if entry is not None and entry.id == job.id else None
    return generation if isinstance(generation, int) else 1



"""The daemon's main loop.

Signal handlers only count signals; the loop acts on the count (the huey/rq pattern), so
no job state is ever touched from inside a handler:

* first SIGTERM/SIGINT: take no new jobs, let the current one finish (render, upload,
  sidecar), then exit 0;
* second: interrupt the current render at its next progress report; the job stays in
  the work area with its sidecar back to "queued", and the next start resumes it.

Renders run in threads, one per render slot (one per GPU listed in ``render.devices``, or
``render.workers`` on one device: :mod:`daemon.pipeline.slots`), so the loop stays free to
ping the systemd watchdog, update STATUS=, scan the inbox and fail bad drops at once. The worker only
schedules: each claimed job is a :class:`JobRun`, the runner performs its next step and
says when to run it again (a transient render failure, an upload while the store is down);
uploads run in a second thread while the next job renders.

Nothing a vanished work folder, lease or job record does may end the daemon: a job taken
over by another daemon while this one stalled is dropped with one log line.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from lipsync.device import DeviceUnavailableError

from daemon.cluster import lease
from daemon.cluster.takeover import ClusterDuties
from daemon.config import Config
from daemon.errors import ConfigError, StorageError
from daemon.extensions import Extensions, default_extensions
from daemon.intake import claims
from daemon import workarea
from daemon.intake.inbox import Inbox
from daemon.intake.watch import InboxWatcher
from daemon.jobs import ClaimedJob, JobSpec
from daemon.logsetup import bind_job, get_logger
from daemon.pipeline.engines import EngineCache, render_options
from daemon.pipeline.ownership import Ownership
from daemon.pipeline.presence import Presence
from daemon.pipeline.runner import JobRun, JobRunner, Outcome, Step
from daemon.pipeline.slots import Slot, render_slots, slot_kind
from daemon.sdnotify import Notifier
from daemon.storage import open_storage

log = get_logger(__name__)

TICK = 0.25  # longest the loop sleeps: bounds how late it reacts to a signal or a finished job
BURST_UPLOAD_ATTEMPTS = 4  # --burst leaves a job whose upload failed this often in the work area
ABORT_GRACE = 30.0  # after a second signal, how long a render may take to notice before we exit anyway

EXIT_OK, EXIT_FAILURE = 0, 1


class _Task:
    """One job step running in a daemon thread; the loop polls ``done``."""

    def __init__(self, run: JobRun, fn: Callable[[JobRun], Outcome], wake: Callable[[], None]) -> None:
        self.run = run
        self.outcome: Outcome | None = None
        self.crash: BaseException | None = None
        self._fn = fn
        self._wake = wake
        self.thread = threading.Thread(target=self._main, name=f"{run.step}-{run.job.id}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.outcome = self._fn(self.run)
        except BaseException as e:  # noqa: BLE001 - reported by the loop; the job stays claimed
            self.crash = e
        finally:
            self._wake()  # the loop starts the next job now, not at its next tick

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


class Worker:
    def __init__(self, cfg: Config, *, extensions: Extensions | None = None, notifier: Notifier | None = None):
        self.cfg = cfg
        self.sd = notifier or Notifier()
        self.ext = extensions if extensions is not None else default_extensions(cfg)
        self.engines = EngineCache(cfg)
        self.abort = threading.Event()
        self._signals = 0
        self._stopping = False
        self._abort_deadline = 0.0
        self._queue: list[JobRun] = []  # claimed, waiting to render (recovered, taken over, retrying)
        self._uploads: list[JobRun] = []  # rendered, waiting for the store
        self._renders: dict[int, _Task] = {}  # slot index -> the render step running there
        self.slots: list[Slot] = []
        self._upload: _Task | None = None
        self._specs: list[JobSpec] = []
        self._scan_due = True
        self.cluster = ClusterDuties(cfg)  # takeovers of other hosts' stale jobs
        self._cancel_checked = 0.0
        self.heartbeat = lease.Heartbeat(float(cfg.cluster.heartbeat_interval))
        self.ownership = Ownership(cfg, self.heartbeat)  # claiming, and holding leases
        self.presence = Presence(cfg, self.sd, self.engines.remote_servers)
        # made once storage is open and the watcher started (in _run)
        self.runner: JobRunner | None = None
        self.inbox: Inbox | None = None
        self.watcher: InboxWatcher | None = None

    # ------------------------------------------------------------------ signals

    def request_stop(self, *_args: Any) -> None:
        """What SIGTERM/SIGINT do: count. Callable from a handler, a test or another thread."""
        self._signals += 1

    def _install_signals(self) -> dict[int, Any]:
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, self.request_stop)
            except ValueError:
                pass  # not the main thread (tests drive request_stop directly)
        return previous

    def _react_to_signals(self) -> None:
        if self._signals >= 1 and not self._stopping:
            self._stopping = True
            current = ", ".join(t.run.job.name for t in self._renders.values()) or None
            log.info("shutdown requested", finishing=current)
            self.sd.stopping(f"stopping: finishing {current}" if current else "stopping")
        if self._signals >= 2 and not self.abort.is_set():
            self.abort.set()
            self._abort_deadline = time.monotonic() + ABORT_GRACE
            log.warning("second stop signal: interrupting the current job; it resumes at the next start")

    # ------------------------------------------------------------------ run

    def run(self, *, burst: bool = False) -> int:
        previous = self._install_signals()
        try:
            return self._run(burst)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self, burst: bool) -> int:
        cfg = self.cfg
        try:
            workarea.prepare_work_area(cfg)
            cfg.paths.outbox.mkdir(parents=True, exist_ok=True)
            self.slots = render_slots(cfg)
        except (ConfigError, OSError, DeviceUnavailableError) as e:
            log.error("cannot start", problems=getattr(e, "problems", None) or [str(e)])
            return EXIT_FAILURE
        self.sd.status("starting: opening storage")
        try:
            handle = open_storage(cfg)
        except StorageError as e:
            log.error("storage did not start", code=e.code, error=e.message)
            return EXIT_FAILURE
        with handle:
            store = handle.store
            link_note = None
            if burst and cfg.storage.mode == "embedded":
                # never hand out a link that cannot work without saying so
                link_note = ("this link is served by the embedded store of a `lipsyncd run --burst`, which stops "
                             "when the run ends: the link works again only while lipsyncd runs with this state "
                             "folder (`lipsyncd run`), or use an external store (storage.mode = \"s3\")")
                log.warning("burst run with the embedded store: links stop working when this run exits",
                            endpoint=handle.endpoint)
            self.runner = JobRunner(cfg, engines=self.engines, options=render_options(cfg), store=store,
                                    on_finished=self.ext.on_finished, abort=self.abort, heartbeat=self.heartbeat,
                                    link_note=link_note)
            if self.ext.metrics is not None:
                self.ext.metrics.slots = lambda: [(s.label, s.job) for s in self.slots]
                self.ext.metrics.remote_servers = self.engines.remote_servers
            self.heartbeat.start()
            stops: list[Callable[[], None]] = []
            watcher = None
            try:
                for job in claims.recover(cfg):
                    self._adopt(job)
                self.inbox = Inbox(cfg)
                watcher = self.watcher = InboxWatcher(cfg).start()
                for service in self.ext.services:
                    stop = service(store)
                    if stop is not None:
                        stops.append(stop)
                log.info("daemon ready", inbox=str(cfg.paths.inbox), watch=watcher.mode, host=cfg.host_id,
                         engine=cfg.render.engine, slots=[s.label for s in self.slots], storage=cfg.storage.mode, bucket=cfg.storage.bucket,
                         resumed=len(self._queue), burst=burst)
                self.sd.ready(self._status_text())
                return self._loop(burst)
            finally:
                self.sd.stopping("stopping")
                if watcher is not None:
                    watcher.stop()
                self.heartbeat.stop()
                for stop in reversed(stops):
                    try:
                        stop()
                    except Exception:  # noqa: BLE001 - shutting down regardless
                        log.exception("stopping a service failed")
                log.info("daemon stopped", left_claimed=len(self._queue) + len(self._uploads)
                         + len(self._renders))

    def _loop(self, burst: bool) -> int:
        while True:
            self._react_to_signals()
            self._collect()
            if self._stopping:
                if not self._renders and self._upload is None:
                    return EXIT_OK
                if self.abort.is_set() and time.monotonic() > self._abort_deadline:
                    log.error("the interrupted job did not stop in time; exiting anyway (it resumes at the next start)")
                    return EXIT_OK
            else:
                self._take_over_stale()
                self._cancel_waiting()
                self._start_upload()
                if self._scan_due:
                    self._scan()
                self._start_next_job()
                if burst:
                    done = self._burst_result()
                    if done is not None:
                        return done
            self.presence.tick(self.slots, stopping=self._stopping, status=self._status_text())
            if self.watcher.wait(min(TICK, self.sd.watchdog_interval or TICK)):
                self._scan_due = True
            deadline = self.inbox.next_deadline()
            if deadline is not None and time.time() >= deadline:
                self._scan_due = True

    # ------------------------------------------------------------------ intake

    def _scan(self) -> None:
        self._scan_due = False
        try:
            specs = self.inbox.scan(time.time())
        except OSError as e:
            log.warning("inbox scan failed", error=f"{type(e).__name__}: {e}")
            return
        self._specs = [s for s in specs if not s.failed]
        for spec in (s for s in specs if s.failed):
            # bad drops fail at once, even while another job renders: nothing to wait for
            job = self.ownership.claim(spec)
            if job is None:
                continue
            run = JobRun(job)
            try:
                self._settle(run, self.runner.run(run))
            except Exception:  # noqa: BLE001 - e.g. the share hiccupped while filing it
                log.exception("failing a bad job did not complete; it stays claimed for the next start",
                              job=job.name, job_id=job.id)

    def _adopt(self, job: ClaimedJob) -> None:
        """A job already claimed by us (recovered at start) or taken over: render it next."""
        if self.ownership.own(job):
            self._queue.append(JobRun(job))

    def _take_over_stale(self) -> None:
        for job in self.cluster.poll():
            self._adopt(job)

    def _cancel_waiting(self) -> None:
        """A job waiting for a retry that someone cancelled runs now, to be failed as cancelled."""
        now = time.monotonic()
        if now - self._cancel_checked < 1.0:
            return
        self._cancel_checked = now
        for run in self._queue + self._uploads:
            if run.due > now and workarea.cancel_requested(run.job):
                run.due = 0.0

    # ------------------------------------------------------------------ job steps

    def _start_next_job(self) -> None:
        """Fill every free slot: due retries and recovered jobs first, then new claims in order;
        each slot takes the jobs of its kind (frame engines, or a remote renderer)."""
        for slot in self.slots:
            if slot.index in self._renders:
                continue
            fits = lambda engine, kind=slot.kind: slot_kind(engine or self.cfg.render.engine) == kind  # noqa: E731
            run = _pop_due(self._queue, lambda r: fits(r.job.options.engine))
            while run is None:
                spec = next((s for s in self._specs if fits(s.options.engine)), None)
                if spec is None:
                    break
                self._specs.remove(spec)
                job = self.ownership.claim(spec)
                run = JobRun(job) if job is not None else None
            if run is None:
                continue
            run.slot = slot
            slot.job, slot.progress = run.job.name, 0.0
            self._renders[slot.index] = _Task(run, self.runner.run, self.watcher.notify)

    def _start_upload(self) -> None:
        if self._upload is None:
            run = _pop_due(self._uploads)
            if run is not None:
                self._upload = _Task(run, self.runner.run, self.watcher.notify)

    def _collect(self) -> None:
        finished = [(i, t) for i, t in self._renders.items() if t.done]
        if self._upload is not None and self._upload.done:
            finished.append((None, self._upload))
        for index, task in finished:
            if index is None:
                self._upload = None
            else:
                del self._renders[index]
                self.slots[index].job = None
            self._scan_due = True
            with bind_job(job=task.run.job.name, job_id=task.run.job.id):
                try:
                    outcome = task.outcome
                    if task.crash is not None or outcome is None:
                        outcome = self.runner.crashed(task.run, task.crash or RuntimeError("step ended without outcome"))
                    self._settle(task.run, outcome)
                except Exception:  # noqa: BLE001 - a sidecar write on a flaky share must not stop the daemon
                    # the job stays claimed in the work area: the next start (or a takeover) resumes it
                    log.exception("recording the job's outcome failed; it is left for the next start")
                    self.ownership.release(task.run.job)

    def _settle(self, run: JobRun, outcome: Outcome) -> None:
        """Put ``run`` where its outcome says: nowhere (final), the render queue or the upload queue."""
        if outcome.final:
            self.ownership.release(run.job)
        elif run.step is Step.UPLOAD:
            self._uploads.append(run)
        else:
            self._queue.append(run)

    # ------------------------------------------------------------------ burst

    def _burst_result(self) -> int | None:
        """Exit status once --burst has nothing left to do now, else None (see actions/run.py)."""
        if self._renders or self._upload or self._queue or self._specs or self._scan_due:
            return None
        if any(r.upload_attempts < BURST_UPLOAD_ATTEMPTS for r in self._uploads):
            return None
        deadline = self.inbox.next_deadline()
        # a deadline within one settle window is a file still settling; further out it is
        # a lone file's partner grace, which a burst does not wait for
        if deadline is not None and deadline - time.time() <= float(self.cfg.watch.settle_seconds) + 1.0:
            return None
        if self._uploads:
            log.error("uploads still failing; those jobs stay in the work area for the next run",
                      jobs=[r.job.name for r in self._uploads])
            return EXIT_FAILURE
        return EXIT_OK

    # ------------------------------------------------------------------ status

    def _status_text(self) -> str:
        parts = []
        if self._stopping:
            parts.append("stopping")
        busy = [s for s in self.slots if s.job is not None]
        if busy:
            where = len(self.slots) > 1
            parts.append("rendering " + ", ".join(f"{s.job} ({s.progress:.0%}{', ' + s.label if where else ''})"
                                                  for s in busy))
        else:
            parts.append("idle")
        if self._queue or self._specs:
            parts.append(f"{len(self._queue) + len(self._specs)} waiting")
        if self._uploads or self._upload:
            parts.append(f"{len(self._uploads) + (1 if self._upload else 0)} upload(s) pending")
        return ", ".join(parts)


def _pop_due(runs: list[JobRun], wanted: Callable[[JobRun], bool] = lambda r: True) -> JobRun | None:
    """The wanted run in ``runs`` that has been due longest (removed from the list), else None."""
    now = time.monotonic()
    due = [r for r in runs if r.due <= now and wanted(r)]
    if not due:
        return None
    run = min(due, key=lambda r: r.due)
    runs.remove(run)
    return run

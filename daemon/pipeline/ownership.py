"""Which jobs this daemon holds: claiming a ready drop, and owning a claimed job.

Owning a job is holding its lease (written with this host's id and the job's generation)
and renewing it from the heartbeat thread. A job comes to be owned three ways -- claimed
from the inbox, recovered from this host's work area at start-up, or taken over from a host
whose lease went stale -- and every one of them goes through :meth:`Ownership.own`, which
says no when another daemon took the job in the meantime.
"""

from __future__ import annotations

from daemon.cluster import lease
from daemon.config import Config
from daemon.failpoints import failpoint
from daemon.intake import claims
from daemon.jobs import ClaimedJob, JobSpec
from daemon.logsetup import get_logger

log = get_logger(__name__)


class Ownership:
    def __init__(self, cfg: Config, heartbeat: lease.Heartbeat):
        self.cfg = cfg
        self.heartbeat = heartbeat

    def claim(self, spec: JobSpec) -> ClaimedJob | None:
        """Claim the drop ``spec`` and own it; None when another daemon was first."""
        try:
            job = claims.claim(spec, self.cfg)
        except Exception as e:  # noqa: BLE001 - a claim that went wrong must not end the daemon
            # e.g. the work folder was pulled away by another daemon's takeover while we stalled
            log.warning("claim failed", job=spec.name, error=f"{type(e).__name__}: {e}")
            return None
        if job is None:
            return None
        failpoint("before_lease", job.id)
        if not self.own(job):
            return None
        failpoint("claimed", job.id)
        return job

    def own(self, job: ClaimedJob) -> bool:
        """Write (or keep) our lease on ``job`` and renew it from now on; False when it is gone."""
        try:
            current = lease.read_lease(job.work_dir)
            generation = current.generation if current is not None and current.host == self.cfg.host_id else 1
            lease.write_lease(job.work_dir, host=self.cfg.host_id, job_id=job.id, generation=generation)
        except (FileNotFoundError, NotADirectoryError):
            log.warning("job taken over by another daemon right after its claim; dropped here",
                        job=job.name, job_id=job.id)
            return False
        self.heartbeat.add(job.work_dir)
        return True

    def release(self, job: ClaimedJob) -> None:
        """Stop renewing ``job``'s lease: it is finished, or its folder is about to go."""
        self.heartbeat.discard(job.work_dir)

"""Duties towards the other daemons sharing the inbox, run from the main loop.

Every ``watch.rescan_interval`` a daemon looks for jobs of hosts that died (their lease
expired: :mod:`daemon.cluster.lease`), takes them over and settles each one the way a restart
settles its own jobs (:func:`daemon.intake.claims.recover_one`: a half-done claim is completed, a
half-done finish is finished rather than rendered again). It also removes sidecar temp
files a killed daemon left in the shared outbox (:mod:`daemon.cluster.leftovers`). With a single
daemon both find nothing; they cost a directory listing each.
"""

from __future__ import annotations

import time

from daemon.cluster import lease, leftovers
from daemon.config import Config
from daemon.intake import claims
from daemon import workarea
from daemon.jobs import ClaimedJob
from daemon.logsetup import get_logger
from daemon.outbox import Outbox, orphaned, parse_time

log = get_logger(__name__)


class ClusterDuties:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._next = 0.0
        # a sidecar write lasts milliseconds; a temp file this old belongs to a dead writer
        self.temp_age = 2 * float(cfg.cluster.heartbeat_interval)

    def poll(self) -> list[ClaimedJob]:
        """When due: the jobs taken over from dead hosts, now ours to process (else [])."""
        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + float(self.cfg.watch.rescan_interval)
        try:
            share_now = lease.share_now(self.cfg)
            leftovers.sweep_outbox(self.cfg, older_than=self.temp_age, now=share_now)
            self._fail_orphans(share_now)
            stale = lease.find_stale_jobs(self.cfg, now=share_now)
        except OSError as e:
            log.warning("looking for stale jobs failed", error=f"{type(e).__name__}: {e}")
            return []
        adopted: list[ClaimedJob] = []
        for item in stale:
            try:
                work_dir = lease.take_over(item, self.cfg)
            except (FileNotFoundError, lease.LeaseHeldError):
                continue  # another daemon was quicker, or the owner came back
            except OSError as e:
                log.warning("taking over a stale job failed", job_id=item.job_id, error=f"{type(e).__name__}: {e}")
                continue
            try:
                job = claims.recover_one(work_dir, self.cfg)
            except (OSError, ValueError, KeyError) as e:
                # ours now, but unreadable: it stays in our work area for the next start to retry
                log.error("a job taken over could not be settled", job_id=item.job_id,
                          error=f"{type(e).__name__}: {e}")
                continue
            if job is not None:
                adopted.append(job)
        return adopted

    def _fail_orphans(self, share_now: float) -> None:
        """Records left "queued"/"rendering"/"uploading" whose work folder is nowhere on the share.

        A person deleted the folder while no daemon was watching (the owner was stopped):
        nobody will ever finish the job, so its record says so rather than "rendering 12%"
        forever. Only records unchanged for longer than the lease timeout count: a live
        owner writes far more often, and a folder always exists somewhere while a job moves
        between hosts.
        """
        outbox = Outbox(self.cfg.paths.outbox)
        for entry in outbox.scan():
            if not entry.active or entry.id is None:
                continue
            try:
                updated = parse_time(entry.doc.get("updated_at", "")).timestamp()
            except ValueError:
                continue
            if share_now - updated <= self.cfg.cluster.lease_timeout or workarea.locate(self.cfg, entry.id):
                continue
            message = (f"the job's work folder ({entry.id}) is gone from the share and no daemon holds it "
                       "(removed by hand?); its inputs are gone: drop them again")
            if outbox.replace_if_unchanged(entry, orphaned(entry.doc, message)):
                log.warning("job without a work folder recorded as failed", job=entry.job, job_id=entry.id)

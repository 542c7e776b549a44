"""The daemon's timed housekeeping: link refresh and cleanup on cron schedules.

APScheduler 3 runs both in background threads beside the worker. Cron expressions are
five-field (``links.refresh_cron``, ``cleanup.cron``; "" switches a schedule off) and
read in the machine's local time zone, as system cron does. A run is never started while
the previous run of the same job is still going, and runs missed while the machine slept
collapse into one.

At start the scheduler also refreshes links once (the daemon may have been down for
days while links ran out) and, when ``cleanup.lifecycle_rule`` is set, installs the
bucket's expiration rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from daemon.housekeeping import cleanup
from daemon.housekeeping import links
from daemon.config import Config
from daemon.storage import Store
from daemon.logsetup import get_logger

log = get_logger(__name__)

REFRESH_JOB = "links-refresh"
CLEANUP_JOB = "cleanup"
LIFECYCLE_JOB = "lifecycle-rule"
# a run delayed this long (suspended machine, long previous run) still happens
MISFIRE_GRACE_SECONDS = 3600
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's numbering: 0 (and 7) = Sunday


def _cron_day(token: str) -> int:
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token[:3] in _CRON_DAYS:
        return _CRON_DAYS.index(token[:3])
    raise ValueError(f"{token!r} is not a day of the week (0-7 or sun-sat)")


def _cron_weekdays(field: str) -> str:
    """cron's day-of-week field as APScheduler 3 reads it.

    APScheduler 3 counts weekdays from Monday = 0 while cron counts from Sunday = 0, so
    ``from_crontab("0 3 * * 1-5")`` would run Tuesday to Saturday. Spelling the days as
    names removes the ambiguity.
    """
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        span, _, step = item.partition("/")
        stride = int(step) if step else 1
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            first, last = span.split("-", 1)
            lo, hi = _cron_day(first), _cron_day(last)
        else:
            lo = _cron_day(span)
            hi = 7 if step else lo  # "1/2": from Monday every second day, as in cron
        if hi < lo or stride < 1:
            raise ValueError(f"{item!r} is not a valid day-of-week range")
        days.update(d % 7 for d in range(lo, hi + 1, stride))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, tz: Any = None) -> BaseTrigger:
    """A trigger that fires exactly when cron would for the five-field ``expr``.

    Two differences from ``CronTrigger.from_crontab`` are corrected: weekday numbers
    (see :func:`_cron_weekdays`), and cron's rule that when both day-of-month and
    day-of-week are restricted, a day matching *either* one counts (APScheduler would
    require both).
    """
    minute, hour, dom, month, dow = expr.split()
    weekdays = _cron_weekdays(dow)
    if not dom.startswith("*") and not dow.startswith("*"):
        return OrTrigger([CronTrigger(minute=minute, hour=hour, day=dom, month=month, timezone=tz),
                          CronTrigger(minute=minute, hour=hour, month=month, day_of_week=weekdays, timezone=tz)])
    return CronTrigger(minute=minute, hour=hour, day=dom, month=month, day_of_week=weekdays, timezone=tz)


def _guarded(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
    # A failed run is logged and the schedule goes on; the next run tries again.
    def run() -> None:
        try:
            fn()
        except Exception as e:
            log.error("scheduled task failed", task=name, error=f"{type(e).__name__}: {e}")

    run.__name__ = name.replace("-", "_")
    return run


def build_scheduler(cfg: Config, store: Store, *, refresh_at_start: bool = True) -> BackgroundScheduler:
    """A scheduler with the configured jobs, not started."""
    sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(max_workers=2)},
                                job_defaults={"coalesce": True, "max_instances": 1,
                                              "misfire_grace_time": MISFIRE_GRACE_SECONDS})
    if cfg.links.refresh_cron:
        extra = {"next_run_time": datetime.now(timezone.utc)} if refresh_at_start else {}
        sched.add_job(_guarded(REFRESH_JOB, lambda: links.refresh_links(cfg, store)),
                      cron_trigger(cfg.links.refresh_cron),
                      id=REFRESH_JOB, name="re-sign links that expire soon", **extra)
    if cfg.cleanup.cron:
        sched.add_job(_guarded(CLEANUP_JOB, lambda: cleanup.run_cleanup(cfg, store)),
                      cron_trigger(cfg.cleanup.cron), id=CLEANUP_JOB,
                      name="delete what outlived its retention")
    if cfg.cleanup.lifecycle_rule and cfg.cleanup.remote_retention > 0:
        # run once, in the background: a store that is down must not hold up the start
        sched.add_job(_guarded(LIFECYCLE_JOB, lambda: cleanup.apply_lifecycle_rule(cfg, store)),
                      id=LIFECYCLE_JOB, name="install the bucket lifecycle rule")
    return sched


def start_scheduler(cfg: Config, store: Store, *, refresh_at_start: bool = True) -> BackgroundScheduler:
    """Start link refresh and cleanup on their cron schedules; ``shutdown()`` stops them.

    ``store`` is the open object store (``daemon.storage``); it must stay open until the
    scheduler is shut down.
    """
    sched = build_scheduler(cfg, store, refresh_at_start=refresh_at_start)
    sched.start()
    for job in sched.get_jobs():
        log.info("scheduled", task=job.id, next_run=str(job.next_run_time))
    return sched

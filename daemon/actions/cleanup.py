"""``lipsyncd cleanup [--dry-run]``: one cleanup pass (for system cron or a systemd timer)."""

from __future__ import annotations

import argparse
import sys

from daemon.actions import EXIT_FAILURE, EXIT_OK, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cleanup",
        help="delete inputs, local copies, work leftovers and remote videos older than their retention",
        description="Runs the cleanup the daemon schedules with cleanup.cron, once: done/ and failed/ inputs, "
                    "local output copies, abandoned work folders, unfinished multipart uploads older than a day, and "
                    "(when cleanup.remote_retention is set) uploaded videos, whose sidecars then say \"expired\". Jobs in progress are never touched. "
                    "Every deletion is logged with what and why.",
    )
    p.add_argument("--dry-run", action="store_true", default=None,
                   help="only list what would be deleted (also: cleanup.dry_run in the config)")
    p.add_argument("--local-only", action="store_true", help="leave the bucket alone this time")
    return p


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from daemon import logsetup
    from daemon.housekeeping import cleanup
    from daemon.storage import open_for_command
    from daemon.errors import StorageError
    from daemon.reporting.status import human_duration

    cfg = load_config(args)
    logsetup.configure(args.log_level or cfg.logging.level, cfg.logging.format, stream=sys.stderr)
    dry = True if args.dry_run else None
    # the bucket is visited even with remote_retention = 0 (keep videos forever): unfinished
    # multipart uploads left by a killed daemon are aborted there
    remote = not args.local_only
    try:
        if remote:
            with open_for_command(cfg) as store:
                report = cleanup.run_cleanup(cfg, store, dry_run=dry)
        else:
            report = cleanup.run_cleanup(cfg, None, dry_run=dry)
    except StorageError as e:
        print(f"lipsyncd cleanup: {e}", file=sys.stderr)
        return EXIT_FAILURE
    verb = "would delete" if report.dry_run else "deleted"
    for r in report.removed:
        print(f"{verb} {r.area}: {r.target} (age {human_duration(r.age)}, retention {human_duration(r.retention)})")
    print(f"{verb} {len(report.removed)} item(s), {report.bytes_freed()} bytes; kept in progress "
          f"{len(report.kept_in_progress)}; sidecars marked expired {len(report.expired_sidecars)}; "
          f"errors {len(report.errors)}")
    return EXIT_OK if report.ok else EXIT_FAILURE

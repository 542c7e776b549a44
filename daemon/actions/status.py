"""``lipsyncd status``: every job by state, from the sidecars and the work area."""

from __future__ import annotations

import argparse
import json

from daemon.actions import EXIT_OK, load_config
from daemon.jobstate import JOB_STATES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status",
        help="list every job: waiting in the inbox, queued (with estimates), rendering, uploading, finished",
        description="Lists every job from the sidecars in the outbox and the claims in this host's work area: "
                    "state, age, time in the current state, host, progress while rendering, link expiry when "
                    "done, the reason when failed. Reads only; safe to run while the daemon works.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these jobs (names or glob patterns)")
    p.add_argument("--json", action="store_true", help="machine-readable output (counts and one object per job)")
    p.add_argument("--state", action="append", default=None, metavar="STATE",
                   choices=list(JOB_STATES),
                   help="only jobs in this state (repeatable)")
    return p


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from daemon.outbox import utcnow
    from daemon.reporting import status

    cfg = load_config(args)
    now = utcnow()
    jobs = status.collect(cfg, names=args.names, now=now)
    if args.state:
        jobs = [j for j in jobs if j.state in args.state]
    servers = status.remote_servers(cfg)
    if args.json:
        print(json.dumps({**status.as_json(jobs, now), "servers": servers}, indent=2, ensure_ascii=False))
    else:
        print(status.format_table(jobs, now) + (status.format_servers(servers) if servers else ""))
    return EXIT_OK

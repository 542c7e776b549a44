"""``lipsyncd cancel NAME...``: stop jobs; their inputs go to failed/NAME/ as ``cancelled``."""

from __future__ import annotations

import argparse
import socket
import sys
import time

from daemon.actions import EXIT_FAILURE, EXIT_OK, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cancel",
        help="cancel jobs: a render stops at its next chunk, the inputs go to failed/NAME/",
        description="Asks the daemon that owns each job to cancel it: a render stops at its next chunk, a job "
                    "waiting for its turn or for the store stops at once. The job's inputs go to failed/NAME/ "
                    "and its sidecar says failed with error.code \"cancelled\". Works from any machine that "
                    "mounts the share. A finished job cannot be cancelled.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="job names as in outbox/NAME.json")
    p.add_argument("--no-wait", action="store_true", help="ask, and do not wait for the daemon to confirm")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each confirmation (default 60)")
    return p


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from daemon import workarea
    from daemon.outbox import Outbox

    cfg = load_config(args)
    outbox = Outbox(cfg.paths.outbox)
    status = EXIT_OK
    asked = []
    for name in args.names:
        entry = outbox.read(name)
        if entry is None:
            print(f"{name}: no such job (no {outbox.path_for(name)})", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        if not entry.active:
            print(f"{name}: already {entry.state}; nothing to cancel", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        folder = workarea.locate(cfg, entry.id or "")
        if folder is None:
            print(f"{name}: its work folder is gone; the daemons record it as failed", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        try:
            workarea.request_cancel(folder, by=f"{socket.gethostname()} (lipsyncd cancel)")
        except FileNotFoundError:  # finished or taken over this very moment: look again
            folder = workarea.locate(cfg, entry.id or "")
            if folder is None:
                print(f"{name}: finished while being cancelled", file=sys.stderr)
                status = EXIT_FAILURE
                continue
            workarea.request_cancel(folder, by=f"{socket.gethostname()} (lipsyncd cancel)")
        asked.append((name, entry.id))
        print(f"{name}: cancel requested (owner {folder.parent.name})")
    if args.no_wait:
        return status
    for name, job_id in asked:
        deadline = time.monotonic() + args.timeout
        while True:
            entry = outbox.read(name)
            if entry is not None and entry.id == job_id and not entry.active:
                code = (entry.doc.get("error") or {}).get("code")
                print(f"{name}: {entry.state}" + (f" ({code})" if code else ""))
                if code != "cancelled":
                    status = EXIT_FAILURE  # it finished before the request was seen
                break
            if time.monotonic() > deadline:
                print(f"{name}: no confirmation after {args.timeout:.0f}s (is its daemon running?)", file=sys.stderr)
                status = EXIT_FAILURE
                break
            time.sleep(0.2)
    return status

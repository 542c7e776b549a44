"""``lipsyncd run``: the daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse

from daemon.actions import load_config

BURST_HELP = (
    "process what is in the inbox, then exit: every job that is ready now, or becomes ready "
    "while its files settle (settle_seconds), is rendered and uploaded; the command exits once "
    "no job is in progress, no upload is pending and the inbox holds nothing that is still "
    "settling. Lone files waiting for a partner do not keep it running. For cron and tests."
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="run the daemon: watch the inbox, render, upload, write sidecars",
        description="Runs the daemon in the foreground. The first SIGTERM/SIGINT finishes the current job and "
                    "exits; a second one interrupts it (it resumes at the next start).",
    )
    p.add_argument("--burst", action="store_true", help=BURST_HELP)
    return p


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from daemon import logsetup
    from daemon.pipeline.worker import Worker

    cfg = load_config(args)
    logsetup.configure(args.log_level or cfg.logging.level, cfg.logging.format)
    return Worker(cfg).run(burst=args.burst)

"""``lipsyncd links refresh [NAME...]``: re-sign the links in the sidecars now."""

from __future__ import annotations

import argparse
import sys

from daemon.actions import EXIT_FAILURE, EXIT_OK, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "links",
        help="re-sign presigned links in the sidecars (links refresh)",
        description="Manages the presigned links in the sidecars.",
    )
    sub = p.add_subparsers(dest="links_command", metavar="SUBCOMMAND", required=True)
    r = sub.add_parser(
        "refresh",
        help="re-sign links that expire soon; mark videos that are gone as expired",
        description="Does what the daemon's scheduled refresh does: every finished job whose link expires within "
                    "links.refresh_margin gets a new link if its video is still stored, else its sidecar says "
                    "\"expired\". Naming jobs re-signs their links whatever time they have left.",
    )
    r.add_argument("names", nargs="*", metavar="NAME", help="only these jobs (names or glob patterns); re-signed now")
    r.add_argument("--all", action="store_true", help="re-sign every link, not only those close to expiry")
    # the shared -c/--log-level options are added to "links" by the CLI; the nested
    # subcommand needs them too, since they may follow it
    r.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="configuration file (default: $LIPSYNCD_CONFIG or ./config.toml)")
    r.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load boto3
    from daemon import logsetup
    from daemon.errors import StorageError
    from daemon.housekeeping import links
    from daemon.storage import open_for_command

    cfg = load_config(args)
    logsetup.configure(args.log_level or cfg.logging.level, cfg.logging.format, stream=sys.stderr)
    try:
        with open_for_command(cfg) as store:
            report = links.refresh_links(cfg, store, names=args.names, force=args.all)
    except StorageError as e:
        print(f"lipsyncd links refresh: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"re-signed {len(report.refreshed)}, expired {len(report.expired)}, not due {report.not_due}, "
          f"skipped {len(report.skipped)}, errors {len(report.errors)}")
    for line in report.errors:
        print(f"  error: {line}", file=sys.stderr)
    if args.names and not (report.refreshed or report.expired or report.skipped or report.errors):
        print("no finished job matched " + " ".join(args.names), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if report.ok else EXIT_FAILURE

"""``lipsyncd links refresh [NAME...]``: re-sign the links in the sidecars now."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from collections.abc import Iterator
from typing import Any

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


@contextlib.contextmanager
def command_storage(cfg: Any) -> Iterator[Any]:
    """The object store for a one-shot command.

    With the embedded store, a running daemon already serves it on 127.0.0.1: the command
    joins that server with the generated credentials rather than starting (or stopping)
    a second one on the same data folder. Otherwise it opens the store as the daemon does.
    """
    from daemon.errors import StorageError
    from daemon.storage import ObjectStore, open_storage
    from daemon.storage.credentials import credentials_path, load_or_create

    port = cfg.storage.embedded.port
    if cfg.storage.mode == "embedded" and _listening(port):
        if not credentials_path(cfg.paths.state).exists():
            raise StorageError(f"127.0.0.1:{port} is in use, but {credentials_path(cfg.paths.state)} does not "
                               "exist: that is not this configuration's embedded store (check paths.state and "
                               "storage.embedded.port)", code="storage_setup")
        store = ObjectStore(cfg, credentials=load_or_create(cfg.paths.state), endpoint=f"http://127.0.0.1:{port}")
        store.ping()
        yield store
        return
    with open_storage(cfg) as handle:
        yield handle.store


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from daemon import logsetup
    from daemon.housekeeping import links
    from daemon.errors import StorageError

    cfg = load_config(args)
    logsetup.configure(args.log_level or cfg.logging.level, cfg.logging.format, stream=sys.stderr)
    try:
        with command_storage(cfg) as store:
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

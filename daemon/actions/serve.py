"""``lipsyncd serve``: the HTTP API on its own (any host that mounts the share)."""

from __future__ import annotations

import argparse
import sys

from daemon.actions import EXIT_FAILURE, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="serve the HTTP API: submit jobs, follow them, permanent links (no rendering)",
        description="Serves the HTTP API of [api] on api.bind:api.port (default 127.0.0.1:8480). Submitted jobs "
                    "are dropped into the inbox for the daemons (`lipsyncd run`, on this or other hosts) to "
                    "render; this process never renders, so it runs on hosts without a GPU. Keys: "
                    "`lipsyncd api-key create NAME`.",
    )
    p.add_argument("--port", type=int, default=None, help="override api.port")
    p.add_argument("--bind", default=None, help="override api.bind")
    return p


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from daemon import logsetup
    from daemon.api.server import serve
    from daemon.config import is_loopback_bind
    from daemon.errors import ConfigError
    from daemon.sdnotify import Notifier

    cfg = load_config(args)
    if args.port is not None:
        cfg.api.port = args.port
    if args.bind is not None:
        cfg.api.bind = args.bind
        if cfg.api.auth == "none" and not is_loopback_bind(cfg.api.bind):
            print(f"lipsyncd: api.auth = \"none\" is refused with --bind {cfg.api.bind}", file=sys.stderr)
            return EXIT_FAILURE
    logsetup.configure(args.log_level or cfg.logging.level, cfg.logging.format)
    sd = Notifier()
    try:
        return serve(cfg, ready=lambda: sd.ready(f"serving on {cfg.api.bind}:{cfg.api.port}"))
    except ConfigError as e:
        print(f"lipsyncd: {e}", file=sys.stderr)
        return EXIT_FAILURE

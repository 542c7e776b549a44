"""The ``lipsyncd`` subcommands, one module each.

Every module in :data:`ACTIONS` exposes ``add_parser(subparsers) -> ArgumentParser`` (it
adds and returns its own subparser) and ``run(args) -> int`` (the exit status). The CLI
adds the shared options (``-c/--config``, ``--log-level``) to every subparser, so a new
command is one module plus one line here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ACTIONS: tuple[str, ...] = (
    "daemon.actions.run",
    "daemon.actions.render",
    "daemon.actions.check_config",
    "daemon.actions.example_config",
    "daemon.actions.doctor",
    "daemon.actions.healthcheck",
    "daemon.actions.status",
    "daemon.actions.cancel",
    "daemon.actions.links",
    "daemon.actions.cleanup",
    "daemon.actions.serve",
    "daemon.actions.submit",
    "daemon.actions.api_key",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # also: invalid configuration


def load_config(args: argparse.Namespace):
    """The validated config named by ``-c`` (or $LIPSYNCD_CONFIG, or ./config.toml).

    Prints every problem and exits with status 2 when it is invalid: every command that
    needs a config would fail the same way, and one message is clearer than a traceback.
    """
    # imported here: `lipsyncd submit` (a pure HTTP client, `pip install lipsyncd[client]`)
    # must run without the daemon's dependencies
    from daemon import config
    from daemon.errors import ConfigError

    try:
        return config.load(args.config)
    except ConfigError as e:
        print(f"lipsyncd: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def config_path(args: argparse.Namespace) -> Path:
    from daemon import config

    return Path(args.config) if args.config else config.default_config_path()

"""The ``lipsyncd`` command: argparse built from the action registry (daemon.actions)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lipsync import __version__

from daemon.actions import ACTIONS, EXIT_USAGE


def _add_common(parser: argparse.ArgumentParser) -> None:
    known = {opt for action in parser._actions for opt in action.option_strings}
    if "--config" not in known:
        parser.add_argument("-c", "--config", metavar="FILE", default=None,
                            help="configuration file (default: $LIPSYNCD_CONFIG or ./config.toml)")
    if "--log-level" not in known:
        parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                            help="override logging.level of the config")


def command_name(module: str) -> str:
    """``daemon.actions.check_config`` -> ``check-config``."""
    return module.rsplit(".", 1)[-1].replace("_", "-")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` (so that a command loads nothing that
    another one needs: ``lipsyncd submit`` runs with the HTTP client alone)."""
    parser = argparse.ArgumentParser(
        prog="lipsyncd",
        description="Turns an audio file and a video or photo of a person into a lip-synced MP4; "
                    "as a daemon it watches an inbox, uploads results and writes JSON sidecars with links.",
    )
    parser.add_argument("--version", action="version", version=f"lipsyncd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ACTIONS:
        if only is not None and command_name(name) != only:
            continue
        module = importlib.import_module(name)
        sub = module.add_parser(subparsers)
        _add_common(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argv[0] if argv else None
    parser = build_parser(first if first in {command_name(a) for a in ACTIONS} else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C in a foreground command (render, doctor): no traceback, the usual status
        print("lipsyncd: interrupted", file=sys.stderr)
        return 130

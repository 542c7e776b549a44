"""``lipsyncd example-config``: print the commented example configuration that ships with
the package -- every option with its default and an example -- to start a config.toml from."""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from daemon.actions import EXIT_OK

EXAMPLE = "config.example.toml"  # package data of daemon.data (the project's config.toml)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        "example-config",
        help="print the commented example configuration (lipsyncd example-config > config.toml)",
        description="Prints the example configuration shipped with lipsyncd: every option, its default and "
                    "what it does. Relative paths in it are relative to the file you save it as.",
    )


def text() -> str:
    return resources.files("daemon.data").joinpath(EXAMPLE).read_text(encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(text())
    return EXIT_OK

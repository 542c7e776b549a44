"""``lipsyncd api-key create NAME | list | revoke NAME``: the keys of the HTTP API."""

from __future__ import annotations

import argparse
import json
import sys

from daemon.actions import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "api-key",
        help="create, list or revoke HTTP API keys",
        description="API keys are shown once, when created, and stored only as SHA-256 hashes in api.keys_file "
                    "(default <state>/api-keys.json, mode 0600). A running server sees changes at once.",
    )
    sub = p.add_subparsers(dest="key_command", metavar="ACTION")
    create = sub.add_parser("create", help="make a key and print it (once)")
    create.add_argument("name", help="who or what uses it, e.g. github-actions, dify, anna@example.com")
    create.add_argument("--read-only", action="store_true", help="may only read jobs (GET routes)")
    listing = sub.add_parser("list", help="list the keys (names, hints, scopes; never the keys)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name")
    for s in (create, listing, revoke):  # -c after the action too; SUPPRESS keeps one given before it
        s.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file")
    return p


def run(args: argparse.Namespace) -> int:
    from daemon.api.auth import KeyRing

    if not getattr(args, "key_command", None):
        print("lipsyncd api-key: say create NAME, list or revoke NAME", file=sys.stderr)
        return EXIT_USAGE
    cfg = load_config(args)
    ring = KeyRing(cfg.api_keys_file)
    try:
        if args.key_command == "create":
            key = ring.create(args.name, scope="read" if args.read_only else "full")
            print(key)
            print(f"lipsyncd: key {args.name!r} created; it is shown only now: store it as a secret "
                  "(e.g. LIPSYNCD_API_KEY)", file=sys.stderr)
            return EXIT_OK
        if args.key_command == "revoke":
            if not ring.revoke(args.name):
                print(f"lipsyncd: no key called {args.name!r}", file=sys.stderr)
                return EXIT_FAILURE
            print(f"key {args.name!r} revoked")
            return EXIT_OK
        keys = ring.list()
        if args.json:
            print(json.dumps(keys, indent=2))
        elif not keys:
            print(f"no API keys in {cfg.api_keys_file}; make one with `lipsyncd api-key create NAME`")
        else:
            for k in keys:
                print(f"{k['name']:<24} {k['scope']:<5} {k['hint']:<12} created {k['created_at']}")
        return EXIT_OK
    except ValueError as e:
        print(f"lipsyncd: {e}", file=sys.stderr)
        return EXIT_FAILURE

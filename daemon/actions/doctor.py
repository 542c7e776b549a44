"""``lipsyncd doctor``: is this machine ready to run lipsyncd?"""

from __future__ import annotations

import argparse
import sys

from daemon.actions import EXIT_FAILURE, EXIT_OK, config_path

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "doctor",
        help="check Python, torch/GPU, FFmpeg encoders, face model, engines, storage, disks",
        description="Checks everything lipsyncd needs and prints one line per finding. Exit status 1 when "
                    "something essential is missing.",
    )
    p.add_argument("--storage", action="store_true",
                   help="also contact the storage (starts the embedded SeaweedFS briefly) and ping the bucket")
    return p


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from daemon import config, doctor, logsetup
    from daemon.errors import ConfigError

    logsetup.configure(args.log_level or "warning", "auto", stream=sys.stderr)
    path = config_path(args)
    cfg = None
    failed = False
    try:
        cfg = config.load(path)
    except ConfigError as e:
        explicit = bool(args.config)
        missing = not path.exists()
        print(f"{_MARK['warn' if missing and not explicit else 'fail']} config: "
              + (f"{path}: not found; path and storage checks skipped" if missing else f"{path}: invalid"))
        if not missing or explicit:
            failed = True
            for problem in e.problems:
                print(f"       - {problem}")
    else:
        print(f"{_MARK['ok']} config: {cfg.source}")

    for check in doctor.run_checks(cfg, storage=args.storage):
        print(f"{_MARK[check.status]} {check.name}: {check.detail}")
        failed = failed or check.status == "fail"
    print("doctor: " + ("problems found" if failed else "ready"))
    return EXIT_FAILURE if failed else EXIT_OK

"""``lipsyncd check-config``: validate a configuration, list every problem at once."""

from __future__ import annotations

import argparse
import sys

from daemon.actions import EXIT_OK, EXIT_USAGE, config_path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        "check-config",
        help="validate the configuration (exit status 2 when invalid)",
        description="Loads the configuration with its environment overrides and reports every problem "
                    "(file or environment variable, key, reason). When it is valid, prints the resolved "
                    "settings that matter for operation.",
    )


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `lipsyncd --help` must not load what this command needs
    from daemon import config
    from daemon.errors import ConfigError

    path = config_path(args)
    try:
        cfg = config.load(path)
    except ConfigError as e:
        print(f"{path}: INVALID ({len(e.problems)} problem(s))", file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{cfg.source}: OK")
    for line in describe(cfg):
        print(f"  {line}")
    return EXIT_OK


def describe(cfg) -> list[str]:
    """The effective settings an operator checks first; the config holds no secrets to hide."""
    p = cfg.paths
    s = cfg.storage
    lines = [
        f"inbox:     {p.inbox}",
        f"outbox:    {p.outbox}",
        f"done:      {p.done}",
        f"failed:    {p.failed}",
        f"work:      {cfg.host_work_dir}",
        f"state:     {p.state}",
        f"templates: {p.templates or '-'}",
        f"outputs:   {p.outputs or '-'}",
        f"host id:   {cfg.host_id}",
        f"engine:    {cfg.render.engine} (device {cfg.render.device})",
        f"watch:     {cfg.watch.mode}, settle {human_seconds(cfg.watch.settle_seconds)}, "
        f"partner grace {human_seconds(cfg.watch.partner_grace)}",
    ]
    if cfg.render.wav2lip.checkpoint:
        lines.append(f"wav2lip:   {cfg.render.wav2lip.checkpoint}")
    if s.mode == "embedded":
        lines.append(f"storage:   embedded SeaweedFS on 127.0.0.1:{s.embedded.port}, data {cfg.embedded_data_dir}, "
                     f"bucket {s.bucket}")
    else:
        lines.append(f"storage:   s3 {s.endpoint or '(AWS default for ' + s.region + ')'}, bucket {s.bucket}, "
                     f"prefix {s.prefix!r}")
    lines.append(f"links:     lifetime {human_seconds(cfg.links.lifetime)}")
    lines.append(f"logging:   {cfg.logging.level}, format {cfg.logging.format}")
    return lines


def human_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

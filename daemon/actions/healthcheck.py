"""``lipsyncd healthcheck``: is this host's lipsyncd healthy? For a container's HEALTHCHECK,
a Kubernetes exec probe or a monitoring script; exit status 0 healthy, 1 not, with one line
saying why.

* the daemon (unless ``--api-only``): it published its presence on the share
  (``<work>/.daemon-HOST.json``) within ``cluster.lease_timeout`` -- the same judgement the
  other daemons make before they take its jobs over;
* the HTTP API (when ``[api] enabled``, or with ``--api-only`` for ``lipsyncd serve``):
  ``/healthz`` answers on ``api.bind``:``api.port``.
"""

from __future__ import annotations

import argparse
import sys
import time

from daemon.actions import EXIT_FAILURE, EXIT_OK, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "healthcheck",
        help="exit 0 when this host's daemon (and its HTTP API, when enabled) is alive, else 1",
        description="For container HEALTHCHECKs and probes: the daemon published its presence on the share "
                    "within cluster.lease_timeout, and the HTTP API answers /healthz when [api] enabled.",
    )
    p.add_argument("--api-only", action="store_true", help="check only the HTTP API (a `lipsyncd serve` process)")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    problems = []
    if not args.api_only:
        problems += _daemon(cfg)
    if args.api_only or cfg.api.enabled:
        problems += _api(cfg)
    if problems:
        print("unhealthy: " + "; ".join(problems), file=sys.stderr)
        return EXIT_FAILURE
    print("healthy")
    return EXIT_OK


def _daemon(cfg) -> list[str]:
    presence = cfg.work_dir / f".daemon-{cfg.host_id}.json"
    try:
        age = time.time() - presence.stat().st_mtime
    except OSError:
        return [f"the daemon {cfg.host_id} has not published its presence on the share (yet)"]
    if age > float(cfg.cluster.lease_timeout):
        return [f"the daemon {cfg.host_id} was last seen {age:.0f} s ago (cluster.lease_timeout "
                f"{float(cfg.cluster.lease_timeout):.0f} s)"]
    return []


def _api(cfg) -> list[str]:
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if cfg.api.bind in ("0.0.0.0", "", "::") else cfg.api.bind
    host = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{host}:{cfg.api.port}/healthz", timeout=5) as answer:  # noqa: S310
            if answer.status == 200:
                return []
            return [f"the HTTP API answered {answer.status}"]
    except (urllib.error.URLError, OSError) as e:
        return [f"the HTTP API does not answer on {host}:{cfg.api.port} ({getattr(e, 'reason', e)})"]

"""``lipsyncd submit AUDIO TEMPLATE...``: send a job to a lipsyncd HTTP API and follow it.

Needs no config file: the server comes from ``--server`` or ``$LIPSYNCD_SERVER`` (default
http://127.0.0.1:8480), the key from ``--api-key`` or ``$LIPSYNCD_API_KEY``.
Exit status: 0 done (or accepted, without --wait), 1 failed or refused, 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from daemon.actions import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from daemon.joboptions import add_flags, flag_fields  # these two need the standard library only:
from daemon.jobstate import State  # submit stays light (a client-only install has httpx and nothing else)

DEFAULT_SERVER = "http://127.0.0.1:8480"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "submit",
        help="submit a job to a lipsyncd HTTP API (from anywhere) and print the video links",
        description="Uploads AUDIO and each TEMPLATE (local files, resumably when large; or http(s) URLs the "
                    "server fetches) to a lipsyncd HTTP API. With --wait it follows the job and prints one "
                    "permanent link per video. Exit status: 0 done, 1 failed or refused, 2 usage error.",
    )
    p.add_argument("audio", metavar="AUDIO", help="audio file or http(s) URL (with --text: the first template)")
    p.add_argument("templates", nargs="*", metavar="TEMPLATE", help="template video/photo files or URLs")
    p.add_argument("--template-name", action="append", default=[], metavar="NAME",
                   help="a template from the server's template library (repeatable)")
    p.add_argument("--server", default=None, help=f"API base URL (default $LIPSYNCD_SERVER or {DEFAULT_SERVER})")
    p.add_argument("--api-key", default=None, help="API key (default $LIPSYNCD_API_KEY)")
    p.add_argument("--name", default=None, help="job name (default: the audio's name)")
    add_flags(p)  # one flag per job option, from the definition the server judges them by
    p.add_argument("--wait", action="store_true", help="follow the job until it is done or failed")
    p.add_argument("--json", action="store_true", help="print the final JSON (the sidecar with --wait)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--resumable-over", type=int, default=32 * 1024 * 1024, metavar="BYTES",
                   help="files larger than this go up as resumable (tus) uploads first (default 32 MiB)")
    return p


def run(args: argparse.Namespace) -> int:
    from daemon.api.client import ApiClient, ClientError, links_of

    server = args.server or os.environ.get("LIPSYNCD_SERVER") or DEFAULT_SERVER
    key = args.api_key or os.environ.get("LIPSYNCD_API_KEY") or None
    if not server.startswith(("http://", "https://")):
        print(f"lipsyncd submit: --server {server!r} is not an http(s) URL", file=sys.stderr)
        return EXIT_USAGE
    audio, templates = (None, [args.audio, *args.templates]) if args.text else (args.audio, args.templates)
    missing = [s for s in [args.audio, *args.templates, *([args.subtitle_file] if args.subtitle_file else [])]
               if not s.startswith(("http://", "https://")) and not Path(s).is_file()]
    if missing:
        print(f"lipsyncd submit: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if not templates and not args.template_name:
        print("lipsyncd submit: give at least one TEMPLATE (or --template-name)", file=sys.stderr)
        return EXIT_USAGE

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    fields = {"name": args.name, **flag_fields(args)}
    shown: dict[str, int] = {}

    def upload_progress(name: str, done: int, total: int) -> None:
        step = int(done * 10 / max(total, 1))
        if shown.get(name) != step:
            shown[name] = step
            say(f"uploading {name}: {done * 100 // max(total, 1)}%")

    try:
        with ApiClient(server, key, resumable_over=args.resumable_over) as client:
            accepted = client.submit(audio, templates, template_names=args.template_name, fields=fields,
                                     subtitle_file=args.subtitle_file,
                                     progress=upload_progress)
            name = accepted["name"]
            say(f"{name}: submitted ({accepted.get('status_url')})")
            if not args.wait:
                print(json.dumps(accepted, ensure_ascii=False) if args.json else name)
                return EXIT_OK
            doc, last = accepted, None
            for doc in client.events(name):
                line = f"{name}: {doc.get('state')}"
                if doc.get("state") == State.RENDERING and doc.get("progress") is not None:
                    line += f" {int(float(doc['progress']) * 100)}%"
                if line != last:
                    say(line)
                    last = line
    except ClientError as e:
        print(f"lipsyncd submit: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as e:
        print(f"lipsyncd submit: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    if doc.get("state") == State.DONE:
        if not args.json:
            for link in links_of(doc):
                print(link)
        return EXIT_OK
    err = doc.get("error") or {}
    print(f"lipsyncd submit: {name} {doc.get('state')}: {err.get('code')}: {err.get('message')}", file=sys.stderr)
    return EXIT_FAILURE

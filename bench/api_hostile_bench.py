"""The HTTP API under a stream of hostile requests: no 5xx, and memory that does not grow.

    python bench/api_hostile_bench.py [--requests 1000]

Runs ``lipsyncd serve`` as its own process on a fresh share (with a template library
holding a file that is not a picture) and a SeaweedFS store of its own, then sends REQUESTS requests drawn in turn from the
hostile tables of tests/hostile_requests.py -- names with NUL, ``..``, 300 bytes and invalid
UTF-8 in every path and query parameter, 10,000-deep JSON, 1 MB multipart names, 1,200
form fields, tus uploads that overrun their length, no key, bad keys and read-only keys --
against every route of the OpenAPI document and the console. Memory is the server's
resident set (VmRSS) after 100 warm-up requests and after all of them.

Prints the figures and writes bench/results/api_hostile.json. Targets: 0 answers >= 500,
RSS growth < 50 MB.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import itertools
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api_bench import rss_mb  # noqa: E402
from bench.figures import report  # noqa: E402
from tests.api_harness import ApiProcess, new_key  # noqa: E402
from tests.daemon_harness import Share, Store, config_text, free_port  # noqa: E402
from tests.hostile_requests import BODIES, NAMES, QUERIES, RAW  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "api_hostile.json"
CONSOLE = [("/", {"GET"}), ("/jobs/{name}", {"GET"}), ("/jobs/{name}/outputs", {"GET"}), ("/new", {"GET"}),
           ("/templates", {"GET"}), ("/signin", {"GET", "POST"}), ("/signout", {"POST"})]


TIMEOUT = 20.0  # seconds; an answer that takes longer (a stream that never ends) counts as none


def send(port: int, method: str, target: str, headers: dict[str, str], body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except TimeoutError:
        return -1  # no (complete) answer in time
    except (ConnectionError, http.client.HTTPException):
        return 0  # the server closed on us (a refusal before the body was read): not a 5xx
    finally:
        conn.close()


def requests(routes: list[tuple[str, set[str]]], callers: list[dict[str, str]]):
    """An endless round of hostile requests: (method, target, headers, body)."""
    names = [quote(n, safe="") if n not in (".", "..") else n for n in NAMES] + RAW
    queries = [quote(q, safe="") for q in QUERIES] + RAW
    for i in itertools.count():
        path, methods = routes[i % len(routes)]
        who = callers[i % len(callers)]
        name = names[i % len(names)]
        target = re.sub(r"\{[^}]+\}", lambda _m: name, path)
        kind = i % 3
        if kind == 0:
            yield sorted(methods)[i % len(methods)], target, who, None
        elif kind == 1:
            q = queries[i % len(queries)]
            yield "GET", f"{target}?name={q}&cursor={q}&state={q}&q={q}&next={q}", who, None
        else:
            ctype, body = BODIES[i % len(BODIES)]
            method = "PATCH" if "uploads/" in path else "POST"
            yield method, target, {**who, "Content-Type": ctype, "Upload-Offset": "0", "Upload-Length": "16",
                                   "Tus-Resumable": "1.0.0"}, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds one answer may take")
    args = parser.parse_args()
    globals()["TIMEOUT"] = args.timeout
    root = Path(tempfile.mkdtemp(prefix="lipsyncd-hostile-"))
    share = Share(root / "share")
    library = root / "library"
    library.mkdir()
    (library / "nap.jpg").write_bytes(b"not a picture")
    store = Store(root / "store").start()  # a real SeaweedFS: links, posters and readiness answer for real
    port = free_port()
    config = root / "api.toml"
    config.write_text(config_text(share, store, "api", extra={
        "paths": {"templates": str(library)}, "limits": {"max_file_size": 1024 * 1024},
        "api": {"port": port, "public_url": f"http://127.0.0.1:{port}", "rate_limit": ""}}))
    api = ApiProcess(config, root / "api.log", env=store.env()).start()
    try:
        full = new_key(api.cfg, "bench")
        reader = new_key(api.cfg, "bench-read", read_only=True)
        doc = json.loads(__import__("httpx").get(f"{api.url}/api/v1/openapi.json").text)
        routes = [(p, {m.upper() for m in ops}) for p, ops in doc["paths"].items()] + CONSOLE
        callers = [{"Authorization": f"Bearer {full}"}, {}, {"Authorization": f"Bearer {reader}"},
                   {"Authorization": "Bearer lsk_forged"}, {"Authorization": "Basic x"}]
        stream = requests(routes, callers)
        for _ in range(100):  # warm-up: imports, caches, the first thread pool
            send(port, *next(stream))
        before = rss_mb(api.proc.pid)
        statuses: collections.Counter = collections.Counter()
        started = time.perf_counter()
        for _ in range(args.requests):
            statuses[send(port, *next(stream))] += 1
        wall = time.perf_counter() - started
        after = rss_mb(api.proc.pid)
        alive = api.proc.poll() is None
    finally:
        api.stop()
        store.stop()
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    report({
        "requests": args.requests,
        "answers_5xx": server_errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "no_answer_in_time": statuses.get(-1, 0),
        "server_alive_after": alive,
        "rss_after_warmup_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "requests_per_second": round(args.requests / wall, 1),
        "targets": "answers_5xx == 0, no_answer_in_time == 0, rss_growth_mb < 50",
        "target_met": server_errors == 0 and not statuses.get(-1) and after - before < 50 and alive,
    }, RESULTS)


if __name__ == "__main__":
    main()

"""A stand-in for the model hub's two routes scripts/fetch-models uses (paths-info, resolve),
serving a local folder on a free port, and the script's file tables."""

from __future__ import annotations

import hashlib
import http.server
import importlib.machinery
import importlib.util
import json
import threading

from tests.daemon_harness import REPO, free_port


def fetch_module():
    """scripts/fetch-models, imported (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("fetch_models", str(REPO / "scripts" / "fetch-models"))
    spec = importlib.util.spec_from_loader("fetch_models", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class FakeHub:
    """Serves ``files`` ((repo, rev, path, dest) rows) from ``folder``; ``tamper`` flips a bit
    of the file whose path ends so, after its record was made."""

    def __init__(self, folder, files, tamper: str | None = None):
        served = {(repo, path): (folder / dest).read_bytes() for repo, _rev, path, dest in files}
        records = dict(served)
        if tamper:
            key = next(k for k in served if k[1].endswith(tamper))
            served[key] = served[key][:-1] + bytes([served[key][-1] ^ 1])

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                repo = self.path.split("/api/models/", 1)[1].split("/paths-info/")[0]
                asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["paths"]
                rows = []
                for path in asked:
                    data = records[(repo, path)]
                    row = {"type": "file", "path": path, "size": len(data),
                           "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
                    if not path.endswith(".json"):
                        row["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}
                    rows.append(row)
                body = json.dumps(rows).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                repo, path = self.path.lstrip("/").split("/resolve/main/")
                data = served[(repo, path)]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def run_fetch(*args):
    """scripts/fetch-models in a process of its own."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(REPO / "scripts" / "fetch-models"), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LIPSYNCD_FETCH_NO_REEXEC": "1", "PYTHONPATH": str(REPO)})

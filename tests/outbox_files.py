"""Sidecar files as tests need them: read what the daemon wrote, or lay down what an
earlier run (or another host) would have left on the share.

Reading and checking go through :mod:`daemon.outbox` itself; writing a made-up record
goes straight to the file, as a test of the readers (status, links, cleanup) must be able
to start from any record a daemon could have written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon.atomic import write_atomic
from daemon.outbox import SCHEMA_ID, isotime, parse_time, utcnow, validate
from daemon.outbox import read_document as read

__all__ = ["isotime", "new_document", "parse_time", "read", "sidecar_path", "utcnow", "validate", "write"]


def sidecar_path(outbox: Path, job_name: str) -> Path:
    return outbox / f"{job_name}.json"


def new_document(*, job: str, job_id: str, host: str, inputs: dict, engine: str | None,
                 options: dict | None = None, state: str = "queued") -> dict[str, Any]:
    now = isotime()
    return {"schema": SCHEMA_ID, "job": job, "id": job_id, "state": state, "progress": 0.0, "created_at": now,
            "updated_at": now, "host": host, "engine": engine, "inputs": inputs, "options": options or {},
            "outputs": [], "timings": {"queued_at": now}, "error": None, "notes": []}


def write(path: Path, doc: dict[str, Any]) -> None:
    doc["updated_at"] = isotime()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False).encode() + b"\n")

"""Job sidecars: the JSON file per job that users read from the share (outbox/NAME.json).

Writes are atomic (temp file in the same folder, fsync, rename), so a reader on the share
sees either the previous or the new version, never half a file. The document's shape is
published in docs/sidecar.schema.json; :func:`validate` checks a document against it.
"""

from __future__ import annotations

import copy
import json
import threading
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from daemon.atomic import write_atomic

SCHEMA_ID = "lipsyncd.sidecar/1"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "sidecar.schema.json"
STATES = ("queued", "rendering", "uploading", "done", "failed", "expired")
FINAL_STATES = ("done", "failed", "expired")

_write_lock = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def isotime(t: datetime | float | None = None) -> str:
    """ISO-8601 UTC with a Z suffix, second precision (the schema's time format)."""
    if t is None:
        t = utcnow()
    elif isinstance(t, (int, float)):
        t = datetime.fromtimestamp(t, timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def sidecar_path(outbox: Path, job_name: str) -> Path:
    return outbox / f"{job_name}.json"


def new_document(*, job: str, job_id: str, host: str, inputs: dict, engine: str | None,
                 options: dict | None = None, state: str = "queued") -> dict:
    now = isotime()
    return {
        "schema": SCHEMA_ID,
        "job": job,
        "id": job_id,
        "state": state,
        "progress": 0.0,
        "created_at": now,
        "updated_at": now,
        "host": host,
        "engine": engine,
        "inputs": inputs,
        "options": options or {},
        "outputs": [],
        "timings": {"queued_at": now},
        "error": None,
        "notes": [],
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``doc`` (updated_at is stamped here)."""
    doc["updated_at"] = isotime()
    data = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock:
        write_atomic(path, data, mode=0o644)  # readable by the team on the share


def read(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path``, or None when there is none (or it is not ours)."""
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        return None
    return doc


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of ``doc`` as readable strings (empty when valid)."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def snapshot(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)

"""The job record's document: the published schema and the rules of change (its states are
:mod:`daemon.jobstate`'s, its times :mod:`daemon.timestamps`', re-exported here).

Everything here works on plain documents (dicts as in ``outbox/NAME.json``); the folder is
:mod:`daemon.outbox.folder`, the owner's writes :mod:`daemon.outbox.sidecar`.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.jobstate import ACTIVE_STATES, FINAL_STATES, OutputState, State  # noqa: F401 - re-exported
from daemon.timestamps import isotime, parse_time, utcnow  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from daemon.jobs import ClaimedJob

SCHEMA_ID = "lipsyncd.sidecar/1"
SCHEMA_FILE = "sidecar.schema.json"  # package data of daemon.outbox: the JSON Schema users validate against


def schema_text() -> str:
    """The sidecar's JSON Schema, as shipped in the package."""
    return resources.files("daemon.outbox").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


# what a final record may still become (a fresh link keeps "done"; a deleted video expires it)
_FINAL_MAY_BECOME = {State.DONE: {State.DONE, State.EXPIRED}, State.FAILED: {State.FAILED, State.EXPIRED},
                     State.EXPIRED: {State.EXPIRED}}


class RecordFenced(Exception):
    """A write was refused: another daemon owns the job now, or its record is final."""


# --------------------------------------------------------------------------- documents


@lru_cache(maxsize=1)
def _validator():  # noqa: ANN202 - jsonschema's validator type
    import jsonschema  # only where documents are written or checked; status readers skip it

    schema = json.loads(schema_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of ``doc`` as readable strings (empty when valid)."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def read_document(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path``, or None when there is none (or it is not one of ours)."""
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        return None
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode() + b"\n"


def refusal(current: dict[str, Any] | None, doc: dict[str, Any], generation: int | None) -> str | None:
    """Why writing ``doc`` over ``current`` would break the rules above, else None."""
    if current is None or current.get("id") != doc.get("id"):
        return None
    if generation is not None:
        on_disk = current.get("generation")
        if isinstance(on_disk, int) and on_disk > generation:
            return f"the job was taken over (generation {on_disk} on disk, this writer has {generation})"
    was, will = State.of(current), State.of(doc)
    if was is not None and was.final and will not in _FINAL_MAY_BECOME[was]:
        return f"the record is final ({was}) and cannot become {will}"
    return None


def initial_document(*, job: str, job_id: str, host: str, engine: str | None, inputs: dict[str, Any],
                     options: dict[str, Any], queued_at: str, notes: list[str] = ()) -> dict[str, Any]:
    """The first version of a job's record: "queued", nothing rendered yet."""
    now = isotime()
    return {"schema": SCHEMA_ID, "job": job, "id": job_id, "state": State.QUEUED, "progress": 0.0,
            "created_at": now, "updated_at": now, "host": host, "engine": engine, "inputs": inputs,
            "options": options, "outputs": [], "timings": {"queued_at": queued_at}, "error": None,
            "notes": list(notes)}


def name_notes(job: ClaimedJob) -> list[str]:
    """What the record says about the job's name, when it is not the name as dropped."""
    if job.original_name:
        return [f"the job's name is {len(job.original_name.encode())} bytes, too long for file names; it is "
                f"shortened to {job.name!r} (dropped as {job.original_name!r})"]
    return []


# --------------------------------------------------------------------------- edits of finished records

_REFRESH_NOTE = "links re-signed "
_EXPIRED_NOTE = "video deleted from storage "


def _set_note(doc: dict[str, Any], prefix: str, text: str) -> None:
    # one note per kind, replaced each time, so refreshes do not grow the file forever
    doc["notes"] = [n for n in doc.get("notes", []) if not n.startswith(prefix)] + [prefix + text]


def expire_output(doc: dict[str, Any], out: dict[str, Any], reason: str) -> None:
    """Mark one output of ``doc`` gone; the job too when it has no live video left."""
    out["state"] = OutputState.EXPIRED
    out["url"] = None
    out["url_expires_at"] = None
    if "link" in out:
        out["link"] = None  # it would answer 410 now; say so in the record too
    _set_note(doc, _EXPIRED_NOTE, f"{isotime()}: {reason}")
    if doc.get("state") == State.DONE and not any(o.get("state") == OutputState.DONE for o in doc.get("outputs", [])):
        doc["state"] = State.EXPIRED


def orphaned(doc: dict[str, Any], message: str) -> dict[str, Any]:
    """``doc`` (an active record whose work folder is nowhere) as failed ``input_changed``."""
    new = json.loads(encode(doc))
    new["state"] = State.FAILED
    new["error"] = {"code": "input_changed", "message": message, "retryable": False}
    new.pop("upload", None)
    for out in new.get("outputs", []):
        if out.get("state") != OutputState.DONE:
            out["state"], out["error"] = OutputState.FAILED, message
    new.setdefault("timings", {})["finished_at"] = isotime()
    return new


def relink_output(out: dict[str, Any], url: str, expires: datetime | float) -> None:
    out["url"] = url
    out["url_expires_at"] = isotime(expires)


def note_links_refreshed(doc: dict[str, Any], now: datetime) -> None:
    live = [o.get("url_expires_at") for o in doc.get("outputs", []) if o.get("state") == OutputState.DONE]
    if live:
        _set_note(doc, _REFRESH_NOTE, f"{isotime(now)}, valid until {min(live)}")

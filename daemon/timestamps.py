"""Times in records and files: ISO-8601 UTC with a Z suffix, to the second -- the sidecar
schema's format -- written and read here only. Standard library only."""

from __future__ import annotations

from datetime import datetime, timezone

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def isotime(t: datetime | float | None = None) -> str:
    """``t`` (a datetime, a Unix time, or now) as ``2026-11-21T10:15:00Z``."""
    if t is None:
        t = utcnow()
    elif isinstance(t, (int, float)):
        t = datetime.fromtimestamp(t, timezone.utc)
    return t.astimezone(timezone.utc).strftime(ISO_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, ISO_FORMAT).replace(tzinfo=timezone.utc)

"""The value types of options and how their text is read and written back.

A duration is seconds or "90s", "15m", "7d"; a size is bytes or "64MB"; a rate is
"60/min". ``format_*`` writes a value the way config.toml would, so that a limit in an
error reads like the file ("7d", not 604800).
"""

from __future__ import annotations

import re
from typing import Any


class Duration(float):
    """Seconds. Accepts a number or a string like "90s", "15m", "12h", "7d", "1d12h"."""


class ByteSize(int):
    """Bytes. Accepts a number or a string like "512KB", "64MB", "2GB" (binary units)."""


class Cron(str):
    """A five-field cron expression ("17 3 * * *") or "" to disable the schedule."""


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.I)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, \"90s\", \"15m\", \"7d\"")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a duration (use seconds or e.g. \"90s\", \"15m\", \"12h\", \"7d\")")


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576 or \"64MB\"")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = m.group(2).upper().replace("I", "").rstrip("B") if m.group(2) else ""
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"{value!r} is not a size (use bytes or e.g. \"64MB\", \"2GB\")")


def parse_cron(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a cron expression string such as \"17 3 * * *\"")
    value = value.strip()
    if value == "":
        return value
    from apscheduler.triggers.cron import CronTrigger  # only where a schedule is read: clients stay light

    try:
        CronTrigger.from_crontab(value)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a valid five-field cron expression: {e}") from None
    return value


def format_duration(seconds: float) -> str:
    """604800 -> "7d", 90 -> "1m30s", 0.5 -> "500ms": the way config.toml writes durations."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    total, parts = int(round(seconds)), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


def format_size(size: float) -> str:
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{int(size // factor)}{unit}"
    return f"{int(size)}"


_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> tuple[int, float] | None:
    """ "60/min" -> (60, 60.0): that many requests per that many seconds; "" -> None (unlimited)."""
    if not text.strip():
        return None
    m = _RATE_RE.match(text)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"{text!r} is not a rate such as \"60/min\", \"5/s\" or \"1000/hour\"")
    return int(m.group(1)), float(_RATE_UNITS[m.group(2)])


def is_loopback_bind(bind: str) -> bool:
    return bind in ("localhost", "::1") or bind.startswith("127.")

"""Numbers people read, in their language: durations, relative times and sizes (Babel's CLDR data)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from babel.dates import format_timedelta
from babel.numbers import format_decimal
from babel.units import format_unit

from daemon.i18n import posix_name

# CLDR's narrow units read "1h 5m" in English and "1小时5分钟" in Chinese: no space between
_PART_GLUE = {"zh-CN": ""}
_UNITS = (("duration-day", 86400), ("duration-hour", 3600), ("duration-minute", 60), ("duration-second", 1))


def duration(seconds: float | None, tag: str) -> str:
    """A length of time to the two largest units: 47s, 3m 20s, 1h 5m, 2d (a zero second unit is left out)."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    first = next(i for i, (_, size) in enumerate(_UNITS) if s >= size or size == 1)
    parts = []
    for unit, size in _UNITS[first:first + 2]:
        if s // size or not parts:
            parts.append(format_unit(s // size, unit, length="narrow", locale=posix_name(tag)))
        s %= size
    return _PART_GLUE.get(tag, " ").join(parts)


def age(stamp: datetime | None, tag: str, now: datetime | None = None) -> str:
    """How long ago: "3 minutes ago", "3分钟前"."""
    if stamp is None:
        return ""
    seconds = max(0.0, ((now or datetime.now(timezone.utc)) - stamp).total_seconds())
    return format_timedelta(timedelta(seconds=-max(seconds, 1.0)), add_direction=True, locale=posix_name(tag))


def size(n: float | None, tag: str) -> str:
    """Bytes in B, KB, MB or GB (binary steps; the symbols are international)."""
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            number = format_decimal(n, format="#,##0" if unit == "B" else "#,##0.0", locale=posix_name(tag))
            return f"{number} {unit}"
        n /= 1024
    return ""


def number(value: float, tag: str) -> str:
    return format_decimal(value, locale=posix_name(tag))

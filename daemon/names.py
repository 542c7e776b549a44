"""File-name rules of the inbox: which names are media, which are ignored, and how a job
name becomes an id that is safe in paths and S3 keys.

The extension tables are shared with the rest of the daemon (the worker decides between
audio and template by them, the CLI lists them in its help), so they live here once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone
from typing import Literal

AUDIO_EXTENSIONS: frozenset[str] = frozenset({".wav", ".mp3", ".m4a", ".flac", ".ogg", ".aac"})
VIDEO_TEMPLATE_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mov", ".mkv", ".webm"})
STILL_TEMPLATE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
TEMPLATE_EXTENSIONS: frozenset[str] = VIDEO_TEMPLATE_EXTENSIONS | STILL_TEMPLATE_EXTENSIONS
# Text stands in for audio: NAME.txt + NAME.mp4 is a job whose speech is made from the text.
TEXT_EXTENSIONS: frozenset[str] = frozenset({".txt"})
SUBTITLE_EXTENSIONS: frozenset[str] = frozenset({".srt", ".vtt"})
MANIFEST_SUFFIXES: tuple[str, ...] = (".job.toml", ".job.json")

# Order used in messages ("talk.mp4/.mov/..."): videos first, the way people drop them.
TEMPLATE_EXTENSIONS_ORDERED: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".png", ".jpg", ".jpeg")
AUDIO_EXTENSIONS_ORDERED: tuple[str, ...] = (".wav", ".mp3", ".m4a", ".flac", ".ogg", ".aac")

# Names copy tools and editors give files that are still being written (rsync, browsers,
# Office lock files, vim swap files). They are renamed to the final name when complete.
_TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".swp")
_TEMP_PREFIXES = (".", "~$")

FileKind = Literal["audio", "template", "manifest", "subtitles"]


# Longest job or output name lipsyncd derives a file name from, in bytes. Linux allows 255
# per name; the longest name made from it (".NAME.mp4.rendered.json", a sidecar's temp
# file) adds 24, so a 250-byte drop would otherwise be refused by the filesystem.
NAME_BYTES_MAX = 200


def fit_name(name: str, limit: int = NAME_BYTES_MAX) -> str:
    """``name`` itself when it fits in ``limit`` UTF-8 bytes, else a stable shortened form.

    The shortened form is the name's beginning (cut at a character boundary) plus ``~`` and
    8 hex digits of its sha256, so two long names that differ only at the end stay apart,
    and the same name always shortens the same way (a restart finds its files again).
    """
    data = name.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return name
    digest = hashlib.sha256(data).hexdigest()[:8]
    head = data[: limit - len(digest) - 1].decode("utf-8", "ignore").rstrip()
    return f"{head}~{digest}"


def is_temporary_name(name: str) -> bool:
    """True for dot-files and the in-progress names of copy tools (never taken as input)."""
    lower = name.lower()
    return lower.startswith(_TEMP_PREFIXES) or lower.endswith(_TEMP_SUFFIXES)


def is_readme(name: str) -> bool:
    return name.lower().startswith("readme")


def file_kind(name: str) -> FileKind | None:
    """"audio" (text included: it becomes speech), "template", "manifest" or "subtitles" by
    extension (case-insensitive), else None."""
    lower = name.lower()
    if lower.endswith(MANIFEST_SUFFIXES):
        return "manifest"
    dot = lower.rfind(".")
    if dot <= 0:
        return None
    ext = lower[dot:]
    if ext in AUDIO_EXTENSIONS or ext in TEXT_EXTENSIONS:
        return "audio"
    if ext in TEMPLATE_EXTENSIONS:
        return "template"
    if ext in SUBTITLE_EXTENSIONS:
        return "subtitles"
    return None


def is_text(name: str) -> bool:
    """Whether an "audio" input is text to be spoken."""
    return name.lower().endswith(tuple(TEXT_EXTENSIONS))


def job_stem(name: str) -> str:
    """The job name a file belongs to: ``talk.WAV`` -> ``talk``, ``w.job.toml`` -> ``w``."""
    lower = name.lower()
    for suffix in MANIFEST_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_name(name: str, *, max_length: int = 64, fallback: str = "job") -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``: safe as a folder name, in ids and S3 keys.

    Runs of other characters become one ``-``; leading dots and dashes go (no hidden
    files, no option-like names); an empty result becomes ``fallback``.
    """
    text = _UNSAFE.sub("-", name).strip("-")
    text = text.lstrip(".-")
    text = text[:max_length].rstrip(".-")
    return text or fallback


_ID_RE = re.compile(r"^[A-Za-z0-9._-]+-\d{8}T\d{6}Z-[0-9a-f]{6}$")


def new_job_id(name: str, now: datetime | None = None) -> str:
    """``<sanitized name>-<UTC yyyymmddThhmmssZ>-<6 random hex>``, unique per claim."""
    now = now or datetime.now(timezone.utc)
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{sanitize_name(name, max_length=48)}-{stamp}-{secrets.token_hex(3)}"


def is_job_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def template_names_hint(stem: str) -> str:
    """``talk.mp4/.mov/.mkv/.webm/.png/.jpg`` for messages about a missing template."""
    shown = [e for e in TEMPLATE_EXTENSIONS_ORDERED if e != ".jpeg"]
    return f"{stem}{shown[0]}/" + "/".join(shown[1:])


def audio_names_hint(stem: str) -> str:
    return f"{stem}{AUDIO_EXTENSIONS_ORDERED[0]}/" + "/".join(AUDIO_EXTENSIONS_ORDERED[1:]) + f", or text: {stem}.txt"

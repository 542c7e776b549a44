"""The one helper that every name from outside goes through before it touches a folder.

Names arrive from request paths, queries, forms, JSON bodies, tus metadata and manifests.
:func:`confine` turns such a name into a path inside a given folder, or refuses it with
:class:`NameRefused` saying why. Callers map the refusal to their own error: the HTTP API
answers 400 naming the field, a manifest fails as ``path_outside_inbox``.

A name is refused when it

* is empty, or holds a control character (NUL, newline, DEL, C1) or a lone surrogate,
* is absolute (``/x``, ``C:\\x``) or has a ``..``, ``.`` or empty component,
* has a component that starts with a dot (dot-files and dot-folders belong to lipsyncd),
* has more than one component where a plain name is expected (``nested=False``),
* has a component longer than 255 bytes in UTF-8 (the limit of Linux filesystems), or
* leads out of the folder through a symbolic link (checked on the resolved path).

The other direction -- a server path in a text users will read (an answer, a sidecar) --
is :class:`PathScrubber`'s: it names the configured folders as users know them.

The returned path is the lexical one (``folder/name``), not the resolved one: a rename
must move the entry itself, and a symbolic link inside the folder is for the caller to
judge (the inbox refuses them, the template library reads through them).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.config import Config

MAX_COMPONENT_BYTES = 255


class NameRefused(ValueError):
    """A name that may not be used in a folder; ``reason`` completes "NAME ..."."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def name_parts(name: object, *, nested: bool = False, suffix: str = "", where: str = "its folder") -> list[str]:
    """The checked components of ``name`` (everything but the symbolic-link check)."""
    if not isinstance(name, str):
        raise NameRefused(f"is not a name (got {type(name).__name__})")
    if not name.strip():
        raise NameRefused("is empty")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise NameRefused(f"contains the control character U+{ord(bad):04X}")
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        raise NameRefused(f"is an absolute path; name files relative to the {where}")
    parts = text.split("/")
    if not nested and len(parts) > 1:
        raise NameRefused("contains '/' or '\\'; give a plain name")
    if ".." in parts:
        raise NameRefused(f"uses '..'; files must be inside the {where}")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise NameRefused("is empty")
    if any(p.startswith(".") for p in parts):
        raise NameRefused("is inside a hidden (dot) folder or is a hidden file; those belong to the daemon")
    parts[-1] += suffix
    for p in parts:
        size = len(p.encode("utf-8"))
        if size > MAX_COMPONENT_BYTES:
            raise NameRefused(f"is {size} bytes long; a name has at most {MAX_COMPONENT_BYTES - len(suffix)}")
    return parts


def confine(folder: Path, name: object, *, nested: bool = False, suffix: str = "",
            where: str = "its folder") -> Path:
    """``folder/name`` (+ ``suffix``) when ``name`` stays inside ``folder``; else NameRefused.

    ``nested``: sub-folders are allowed (``sub/file.mp4``, a manifest's references);
    otherwise ``name`` must be one plain component (a job name, an upload id, a template).
    ``where`` names the folder in messages ("inbox", "template library").
    """
    parts = name_parts(name, nested=nested, suffix=suffix, where=where)
    candidate = folder.joinpath(*parts)
    real_root = os.path.realpath(folder)
    real = os.path.realpath(candidate)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise NameRefused(f"leads out of the {where} through a symbolic link; links are never followed out")
    return candidate


class PathScrubber:
    """Replaces server folders in a text by the names users know them by ("inbox/talk.wav")."""

    def __init__(self, folders: Iterable[tuple[Path | None, str]]):
        pairs: list[tuple[str, str]] = []
        for folder, label in folders:
            if folder is None:
                continue
            for form in {str(folder), os.path.realpath(folder)}:
                if form.rstrip("/"):
                    pairs.append((form.rstrip("/"), label))
        # longest first: the work area inside the inbox is named as the work area
        self._pairs = sorted(pairs, key=lambda p: len(p[0]), reverse=True)

    @classmethod
    def for_config(cls, cfg: Config) -> PathScrubber:
        p = cfg.paths
        return cls([(cfg.work_dir, "work area"), (p.inbox, "inbox"), (p.outbox, "outbox"), (p.done, "done"),
                    (p.failed, "failed"), (p.templates, "template library"), (p.state, "state folder")])

    def __call__(self, text: str) -> str:
        for path, label in self._pairs:
            if path in text:
                text = text.replace(path + "/", label + "/").replace(path, label)
        return text

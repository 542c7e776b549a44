"""Writing a job into the inbox the way a careful person would: completely, then at once.

The API never queues anything itself; it drops files. Each request gets a private
staging folder ``<inbox>/.lipsyncd/api/<random>/`` (a dot-folder: the scanner never
looks inside) into which uploads and fetched files stream. Publishing then

1. reserves a job name by creating the folder ``<inbox>/NAME/`` (``mkdir`` is atomic
   on every filesystem, NFS and SMB included, so two API servers cannot take one name),
2. renames the files into it (same filesystem: renames, never copies), and
3. writes ``<inbox>/NAME.job.json`` last, by hard link from a temp file so it can never
   replace a manifest someone else dropped. The daemon sees nothing of the job until
   that manifest appears, and then sees all of it.

A name that is in use (a record in the outbox, any inbox entry of that stem) gets the
next free suffix: ``talk``, ``talk-2``, ``talk-3``... never an overwrite. The claim
removes the emptied ``NAME/`` folder along with the job.

Every name that comes from a client is cleaned here: Unicode is NFKC-normalised (a
full-width solidus becomes '/'), control and format characters (NUL, bidi overrides,
zero-width joiners) are dropped, only the last path component survives, and leading
dots go. Whatever a client sends, files land inside the staging folder or nowhere.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import unicodedata
from pathlib import Path
from typing import Any

from daemon.api.errors import ApiError
from daemon.config import Config
from daemon.names import (
    AUDIO_EXTENSIONS_ORDERED,
    TEMPLATE_EXTENSIONS_ORDERED,
    file_kind,
    is_text,
    fit_name,
    is_temporary_name,
    job_stem,
)

API_DIR = "api"  # <inbox>/.lipsyncd/api/: staging folders of requests in progress
NAME_BYTES = 120  # job names from the API; leaves room for "-NN" and the daemon's own suffixes
FILE_BYTES = 150
STALE_STAGING = 6 * 3600.0  # a staging folder this old belongs to a request that died


def api_dir(cfg: Config) -> Path:
    return cfg.paths.inbox / ".lipsyncd" / API_DIR


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    # Cc: NUL and other controls; Cf: bidi overrides (U+202E), zero-width (U+200B-U+200D),
    # BOMs; Zl/Zp: line separators. None of them belongs in a file name people read.
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cs"))
    return " ".join(text.split())  # tabs, runs of spaces and odd space characters -> one space


def clean_job_name(raw: str | None) -> str | None:
    """A client's job name made safe as a file name; None when nothing usable is left."""
    if raw is None:
        return None
    text = _clean(raw).replace("/", "-").replace("\\", "-")
    text = text.lstrip(". -").rstrip(". ")
    for suffix in (".job.json", ".job.toml"):
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)]
    if not text:
        return None
    return fit_name(text, NAME_BYTES)


def clean_filename(raw: str | None, *, field: str, kind: str) -> str:
    """The last component of a client's file name, cleaned; ApiError unless it is ``kind``."""
    text = _clean(raw or "").replace("\\", "/")
    text = text.rsplit("/", 1)[-1].lstrip(". ").rstrip(". ")
    allowed = {"audio": AUDIO_EXTENSIONS_ORDERED, "subtitles": (".srt", ".vtt")}.get(kind, TEMPLATE_EXTENSIONS_ORDERED)
    what = {"audio": "an audio file", "subtitles": "a subtitle file"}.get(kind, "a template (video or photo)")
    shown = raw if raw is not None else "(no file name)"
    if not text or file_kind(text) != kind or (kind == "audio" and is_text(text)):
        raise ApiError(400, "unsupported_file", f"{shown!r}: not {what}; the name must end in {' '.join(allowed)}",
                       field=field)
    stem, dot, ext = text.rpartition(".")
    stem = fit_name(stem, FILE_BYTES)
    return f"{stem}.{ext.lower()}"


class Staging:
    """The private folder one request writes its files into before publishing them."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        root = api_dir(cfg)
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / secrets.token_hex(12)
        self.path.mkdir()
        self.files: list[str] = []

    def new_file(self, filename: str) -> Path:
        """A path for ``filename`` (already clean) in the staging folder, unique within it."""
        stem, _, ext = filename.rpartition(".")
        name, n = filename, 2
        while name in self.files:
            name, n = f"{stem}-{n}.{ext}", n + 1
        self.files.append(name)
        return self.path / name

    def forget(self, name: str) -> None:
        self.files.remove(name)
        try:
            (self.path / name).unlink()
        except FileNotFoundError:
            pass

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def publish(self, name: str, *, audio: str | None, templates: list[tuple[str, str]], options: dict[str, Any],
                again: bool = False, subtitles: str | None = None) -> str:
        """Drop the job into the inbox under ``name`` or the next free suffix; the name used.

        ``audio`` is a staged file name; ``templates`` are ("staged", file) or ("library",
        name) pairs in order; ``options`` are manifest keys (engine, link_lifetime, ...).
        ``again``: a failed job's retry -- exactly ``name``, whose failed record the new
        run takes over (the inbox must not hold anything of that name).
        """
        inbox = self.cfg.paths.inbox
        taken = _stems_in(inbox)
        for n in range(1, 2 if again else 10000):
            candidate = name if n == 1 else fit_name(f"{name}-{n}", NAME_BYTES + 6)
            if candidate in taken or (self._recorded(candidate) and not again):
                continue
            folder = inbox / candidate
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            if (self._recorded(candidate) and not again) or _manifest_exists(inbox, candidate):
                folder.rmdir()  # a drop or a record appeared meanwhile: leave the name to it
                continue
            for f in self.files:
                os.rename(self.path / f, folder / f)
            manifest = {**({"audio": f"{candidate}/{audio}"} if audio is not None else {}),
                        "templates": [f"{candidate}/{t}" if where == "staged" else t for where, t in templates],
                        **{k: v for k, v in options.items() if v is not None}}
            if subtitles is not None:
                manifest["subtitle_file"] = f"{candidate}/{subtitles}"
            if self._link_manifest(candidate, manifest):
                self.discard()
                return candidate
            # someone dropped NAME.job.* in the split second since the check: give the
            # files back to staging and try the next name
            for f in self.files:
                os.rename(folder / f, self.path / f)
            folder.rmdir()
        if again:
            raise ApiError(409, "conflict", f"the inbox holds files of the job {name!r} already; withdraw them "
                           "(DELETE) or wait until they are claimed", field="name")
        raise ApiError(409, "name_exhausted", f"no free job name of the form {name}-N", field="name")

    def _recorded(self, candidate: str) -> bool:
        return (self.cfg.paths.outbox / f"{candidate}.json").exists()

    def _link_manifest(self, candidate: str, manifest: dict[str, Any]) -> bool:
        tmp = self.path / ".manifest.tmp"
        with open(tmp, "wb") as fh:
            fh.write((json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, self.cfg.paths.inbox / f"{candidate}.job.json")
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True


def _stems_in(inbox: Path) -> set[str]:
    """Every job name the inbox's top level uses already (files by stem, folders by name)."""
    try:
        return {job_stem(e.name) if not e.is_dir(follow_symlinks=False) else e.name
                for e in os.scandir(inbox) if not is_temporary_name(e.name)}
    except FileNotFoundError:
        raise ApiError(503, "inbox_unavailable", f"the inbox {inbox} is not there (is the share mounted?)") from None


def _manifest_exists(inbox: Path, name: str) -> bool:
    return any((inbox / f"{name}{s}").exists() for s in (".job.json", ".job.toml"))


def sweep_stale_staging(cfg: Config, *, older_than: float = STALE_STAGING) -> int:
    """Remove staging folders of requests that died (a server killed mid-upload)."""
    root, removed, now = api_dir(cfg), 0, time.time()
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False) and now - e.stat(follow_symlinks=False).st_mtime > older_than:
                shutil.rmtree(e.path, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed

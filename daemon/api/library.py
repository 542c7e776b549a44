"""The template library (``paths.templates``) over HTTP: list, add, remove.

Templates named here are what a submission's ``template_name`` refers to. Files are
listed from the library's top level; an upload lands under a dot-name first and is then
renamed into place (people and daemons never read half a file), and never replaces a
template of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from daemon.api.drops import clean_filename
from daemon.api.errors import ApiError
from daemon.config import Config
from daemon.intake.names import file_kind, is_temporary_name


def root(cfg: Config) -> Path:
    if cfg.paths.templates is None:
        raise ApiError(404, "no_template_library", "this server has no template library (paths.templates is not set)")
    return cfg.paths.templates


def listing(cfg: Config) -> list[dict[str, Any]]:
    folder = root(cfg)
    out = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name.casefold())
    except FileNotFoundError:
        return []
    for e in entries:
        if is_temporary_name(e.name) or file_kind(e.name) != "template" or not e.is_file(follow_symlinks=False):
            continue
        st = e.stat(follow_symlinks=False)
        still = e.name.lower().endswith((".png", ".jpg", ".jpeg"))
        out.append({"name": e.name, "size": st.st_size, "kind": "photo" if still else "video",
                    "modified": int(st.st_mtime)})
    return out


def path_of(cfg: Config, name: str) -> Path:
    folder = root(cfg)
    if "/" in name or "\\" in name or name.startswith(".") or file_kind(name) != "template":
        raise ApiError(404, "unknown_template", f"{name!r} is not a template of the library", field="name")
    path = folder / name
    if not path.is_file() or path.is_symlink():
        raise ApiError(404, "unknown_template", f"{name!r} is not in the template library", field="name")
    return path


def add(cfg: Config, filename: str | None, data: BinaryIO, *, max_bytes: int) -> str:
    folder = root(cfg)
    name = clean_filename(filename, field="file", kind="template")
    target = folder / name
    if target.exists():
        raise ApiError(409, "exists", f"{name} is in the library already; delete it first", field="file")
    tmp = folder / f".{name}.upload"
    size = 0
    try:
        with open(tmp, "wb") as fh:
            while chunk := data.read(1024 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, "too_large", f"{name} is larger than limits.max_file_size", field="file")
                fh.write(chunk)
        if size == 0:
            raise ApiError(400, "bad_media", f"{name} is empty (0 bytes)", field="file")
        os.link(tmp, target)  # never replaces one that appeared meanwhile
    except FileExistsError:
        raise ApiError(409, "exists", f"{name} is in the library already", field="file") from None
    finally:
        tmp.unlink(missing_ok=True)
    return name


def remove(cfg: Config, name: str) -> None:
    path_of(cfg, name).unlink()

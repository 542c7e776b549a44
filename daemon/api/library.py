"""The template library (``paths.templates``) over HTTP: list, add, remove.

Templates named here are what a submission's ``template_name`` refers to. Files are
listed from the library's top level; an upload streams to a hidden name first, is checked
to be a picture or video lipsyncd can read, and is then linked into place (people and
daemons never read half a file); it never replaces a template of the same name.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from daemon.api.errors import ApiError, bad_name
from daemon.config import Config
from daemon.confine import NameRefused, confine
from daemon.names import file_kind, is_temporary_name


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


def path_of(cfg: Config, name: str, *, field: str = "name") -> Path:
    """The library file ``name`` (confined to the library); 400 for a name that is not one, 404 if absent."""
    folder = root(cfg)
    try:
        path = confine(folder, name, where="template library")
    except NameRefused as e:
        raise bad_name(field, name, e) from None
    if file_kind(name) != "template":
        raise ApiError(404, "unknown_template", f"{name!r} is not a template of the library", field=field)
    if not path.is_file() or path.is_symlink():
        raise ApiError(404, "unknown_template", f"{name!r} is not in the template library", field=field)
    return path


class Incoming:
    """Where a template being uploaded is written: a hidden name in the library (listings
    and jobs never see it), renamed into place only when it is complete and readable."""

    def __init__(self, cfg: Config):
        self.folder = root(cfg)
        self.names: dict[str, str] = {}  # hidden file name -> the template's name

    def new_file(self, filename: str) -> Path:
        hidden = f".{secrets.token_hex(8)}.upload"
        self.names[hidden] = filename
        return self.folder / hidden

    def discard(self) -> None:
        for hidden in self.names:
            (self.folder / hidden).unlink(missing_ok=True)


def add(cfg: Config, incoming: Incoming, hidden: str) -> str:
    """Put the uploaded file ``hidden`` into the library under its own name; that name."""
    name = incoming.names[hidden]
    try:
        target = confine(incoming.folder, name, where="template library")
    except NameRefused as e:
        raise bad_name("file", name, e) from None
    tmp = incoming.folder / hidden
    _check_picture(cfg, tmp, name)
    try:
        os.link(tmp, target)  # never replaces one that appeared meanwhile
    except FileExistsError:
        raise ApiError(409, "exists", f"{name} is in the library already; delete it first", field="file") from None
    return name


def _check_picture(cfg: Config, path: Path, name: str) -> None:
    """A template must be a picture or video lipsyncd can read (checked from its headers)."""
    from lipsync.engine import RenderOptions
    from lipsync.errors import LipsyncError
    from lipsync.media.template import probe_template

    from daemon.pipeline.engines import media_limits

    try:
        probe_template(path, RenderOptions(device="cpu", still_fps=cfg.render.still_fps, limits=media_limits(cfg)))
    except LipsyncError as e:
        raise ApiError(422, e.code, f"{name}: {e.message}", field="file") from None


def remove(cfg: Config, name: str) -> None:
    path_of(cfg, name).unlink()

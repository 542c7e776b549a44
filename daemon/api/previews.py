"""Still pictures for the web console: a poster frame of each finished video and a
thumbnail of each template, made once and kept in ``<state>/cache/previews/``.

A poster is read from the store through a short-lived presigned URL: the MP4s are written
with their index at the front, so FFmpeg reads a few hundred KiB for the first frame,
never the whole video. Previews are keyed by content (the output's sha256; a template's
path, size and mtime), so a re-used name never shows an old picture.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import av
from PIL import Image

from daemon.atomic import write_atomic
from daemon.config import Config

WIDTH = 480
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _cache(cfg: Config) -> Path:
    folder = cfg.paths.state / "cache" / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _first_picture(source: str) -> Image.Image:
    lower = source.lower().split("?", 1)[0]
    if lower.endswith((".png", ".jpg", ".jpeg")):
        with Image.open(source) as img:
            return img.convert("RGB")
    with av.open(source, options={"rw_timeout": "15000000"}) as container:
        for frame in container.decode(video=0):
            return frame.to_image()
    raise ValueError(f"{source}: no picture")


def _made(target: Path, source: str) -> Path:
    with _lock(target.name):
        if not target.exists():
            img = _first_picture(source)
            img.thumbnail((WIDTH, WIDTH * 2))
            jpeg = io.BytesIO()
            img.save(jpeg, "JPEG", quality=82)
            write_atomic(target, jpeg.getvalue())
    return target


def poster(cfg: Config, url: str, sha256: str) -> Path:
    """The poster of a stored video (``url``: a presigned URL of it)."""
    return _made(_cache(cfg) / f"out-{sha256}.jpg", url)


def template_thumbnail(cfg: Config, path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32]
    return _made(_cache(cfg) / f"tpl-{key}.jpg", str(path))

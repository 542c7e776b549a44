"""Atomic, durable file replacement.

Every file that someone else reads while we write it — sidecars on the share, claim
records, leases, credentials — goes through :func:`write_atomic`: the bytes go to a hidden
temp file in the same folder, are fsynced, and the temp file is renamed over the target.
A reader (or a daemon restarted after kill -9) sees the old file or the new one, never
half of one. Temp names start with ``.`` and end in ``.tmp`` so scanners ignore them and
:mod:`daemon.cluster.leftovers` can remove those a crash left behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False,
                 sync_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically.

    ``exclusive``: create only if ``path`` does not exist yet (FileExistsError otherwise);
    a hard link, unlike rename, refuses to replace. ``sync_dir``: also fsync the folder so
    the rename itself survives a power cut (for records that recovery trusts).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{_within_limit(path.name)}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; widen or keep as asked
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)


def _within_limit(name: str, limit: int = 200) -> str:
    """``name`` cut (at a character boundary) so that the temp name fits in 255 bytes."""
    data = name.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return name
    return data[:limit].decode("utf-8", "ignore")


def fsync_dir(folder: Path) -> None:
    """fsync a folder (makes renames in it durable); silently skipped where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

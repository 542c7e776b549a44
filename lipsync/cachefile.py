"""Cache files: per-template results (face analysis, mouth samples) as numpy archives
written whole or not at all, so a reader never sees half of one; and the user's cache
folder, for what depends only on the installation (the landmark models' copies, compiled
code)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def user_cache_folder() -> Path | None:
    """This user's cache folder for lipsyncd, for every process: systemd's ``CacheDirectory=``
    (``$CACHE_DIRECTORY``), else ``$XDG_CACHE_HOME/lipsyncd``, else ``~/.cache/lipsyncd``;
    None for a user without a home. What is kept there depends only on the installed
    packages, never on a job."""
    systemd = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "lipsyncd"
    try:
        return Path.home() / ".cache" / "lipsyncd"
    except RuntimeError:  # no $HOME and no home in the user database
        return None


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (a temporary file in the same folder, renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

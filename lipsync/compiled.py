"""Loops compiled by numba, one way for the whole package: the warp engine's per-pixel work
(:mod:`lipsync.engines.warp_kernels`) and the face landmark model (:mod:`lipsync.face.shape_model`).

Compiled code is cached on disk, in a folder named after a digest of the package's sources
(:func:`compiled_code_folder`): numba checks a cached function against its own file only,
not against the files of the functions it calls, so an installation updated in place (an
editable install after ``git pull``) would otherwise go on running a caller with the old
code of a callee. A change anywhere in the package compiles everything again, once (about
6 s of the next warm render on 2 cores). Where no such folder can be written, numba's own
places serve (beside the module, or its user-wide cache); where none is writable the loops
are compiled once per process instead.

Importing this module (and so any module with compiled loops) first loads numba's numpy
support without its probe for scipy's BLAS (below).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import numba.core.config as numba_config
from numba import njit

from lipsync.cachefile import user_cache_folder

_UNUSED_FOR_S = 7 * 24 * 3600  # another digest's folder, unused this long, is removed


def sources_digest(package: Path = Path(__file__).resolve().parent) -> str:
    """A digest of the package's Python sources (names and contents): 2-3 ms."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def compiled_code_folder() -> Path | None:
    """Where this package's compiled code is kept: ``compiled-<sources_digest>`` in
    ``NUMBA_CACHE_DIR`` where that is set, else in the user's cache folder
    (:func:`lipsync.cachefile.user_cache_folder`); None where it cannot be made. Folders of
    other digests unused for a week are removed (each holds a few MB)."""
    base = os.environ.get("NUMBA_CACHE_DIR") or user_cache_folder()
    if not base:
        return None
    base = Path(base)
    folder = base / f"compiled-{sources_digest()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)  # in use: not removed by another installation's processes
    except OSError:
        return None
    for other in base.glob("compiled-*"):
        try:
            if other != folder and time.time() - other.stat().st_mtime > _UNUSED_FOR_S:
                shutil.rmtree(other, ignore_errors=True)
        except OSError:
            pass
    return folder


_FOLDER = compiled_code_folder()


def _load_numpy_support_without_blas_probe() -> None:
    """Load numba's numpy support the way its first compile would, but without the probe
    for scipy's BLAS it makes on the way (``numba.np.arraymath`` imports ``scipy.linalg``
    only to learn whether ``np.correlate`` and ``np.convolve`` may call BLAS): 0.25-0.45 s
    and 16 MB of every render's start, for loops that call neither. Those two then use
    numba's own loop; ``np.dot`` and ``np.linalg`` still probe, and load scipy, on first use.
    Where numba was loaded before, or names things differently, this does nothing."""
    import sys

    if "numba.np.arraymath" in sys.modules:
        return
    import numba.np.linalg as numba_linalg

    probe = getattr(numba_linalg, "ensure_blas", None)
    if probe is None:
        return

    def no_blas_wanted() -> None:
        raise ImportError("not probed: lipsyncd's compiled loops use no BLAS")

    numba_linalg.ensure_blas = no_blas_wanted
    try:
        import numba.np.arraymath  # noqa: F401 - the probe runs once, at this import
    finally:
        numba_linalg.ensure_blas = probe


_load_numpy_support_without_blas_probe()


def compiled(function=None, *, inline: bool = False):
    """``function`` compiled by numba, cached on disk where a folder is writable. Division by
    zero gives inf or nan as in numpy (numba's default raises). ``inline=True`` (as
    ``@compiled(inline=True)``): compiled into each compiled caller instead of called, for
    small readers called millions of times (a call and its returned tuple cost more than
    their work)."""
    if function is None:
        return lambda f: compiled(f, inline=inline)
    options = {"nogil": True, "error_model": "numpy", **({"inline": "always"} if inline else {})}
    # numba reads its cache folder when the function is decorated: ours, for this function only
    default = numba_config.CACHE_DIR
    numba_config.CACHE_DIR = str(_FOLDER) if _FOLDER is not None else default
    try:
        return njit(cache=True, **options)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available" (read-only everywhere)
        return njit(**options)(function)
    finally:
        numba_config.CACHE_DIR = default

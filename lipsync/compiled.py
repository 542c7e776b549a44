"""Loops compiled by numba, one way for the whole package: the warp engine's per-pixel work
(:mod:`lipsync.engines.warp_kernels`) and the face landmark model (:mod:`lipsync.face.shape_model`).

Compiled code is cached on disk (numba's ``cache=True``: beside the module when that is
writable, else in the user's cache folder, or in ``NUMBA_CACHE_DIR`` when set); where no
folder is writable the loops are compiled once per process instead (a few seconds).
Importing this module (and so any module with compiled loops) first loads numba's numpy
support without its probe for scipy's BLAS (below).
"""

from __future__ import annotations

from numba import njit


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
    try:
        return njit(cache=True, **options)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available" (read-only everywhere)
        return njit(**options)(function)

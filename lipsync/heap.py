"""Handing freed memory back to the system.

glibc's allocator keeps what a thread frees in that thread's arena for its next
allocations, and returns it to the system only from the top of the main heap. A burst of
large temporary arrays on other threads -- a new template's face analysis decodes every
frame on a read-ahead thread -- therefore stays in the process's resident memory for the
rest of the render, though nothing uses it. ``malloc_trim(0)`` releases the free pages of
every arena; it is cheap (a few milliseconds) and does nothing where the C library is not
glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None


def release_free_memory() -> None:
    """Return the C heap's free pages to the system, where the C library can."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

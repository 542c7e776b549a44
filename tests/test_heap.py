"""Freed memory handed back to the system (glibc's ``malloc_trim``)."""

from __future__ import annotations

import platform
import threading

import numpy as np
import pytest

from lipsync.heap import release_free_memory


def _resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_freed_on_another_thread_leaves_the_process_when_released():
    """What a read-ahead thread allocates and frees stays resident in its arena -- here
    pinned by one small block kept at the arena's top -- until it is released."""
    kept = []

    def burst() -> None:
        # 100 kB blocks (below glibc's mmap threshold, so from the thread's arena),
        # each touched, then all freed but a few kept after them
        blocks = [np.ones(100_000 // 8) for _ in range(1500)]
        kept.extend(np.ones(64) for _ in range(4))
        del blocks

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()
    before = _resident_mb()
    release_free_memory()
    after = _resident_mb()
    assert before - after > 60, (before, after)
    assert kept  # still alive: only free memory went

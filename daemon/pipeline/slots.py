"""Render slots: how many jobs a daemon renders at once, and on which device each one runs.

* ``render.devices = ["cuda:0", "cuda:1"]`` (or ``["all"]``): one slot per GPU; each job is
  pinned to the slot's device for its whole render, so a long job on one GPU never blocks
  the next job while another GPU is free.
* one more slot per HeyGem server (``render.heygem.servers``), for jobs of the ``heygem``
  engine only: N servers render N such jobs at once, whatever the frame engines do;
* otherwise ``render.workers`` slots on ``render.device``; ``0`` means what the hardware
  allows without oversubscribing it: on the CPU one per four cores (a frame engine keeps several cores busy: decode, the engine's
  own threads, encode); one on a GPU (list the GPUs in ``render.devices`` to use several).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lipsync.device import DeviceUnavailableError, cuda_device_count, resolve_device
from lipsync.engines import HEYGEM

from daemon.config import Config

CORES_PER_CPU_RENDER = 4


FRAMES, REMOTE = "frames", "remote"  # which engines a slot serves: frame engines here, or remote renderers


@dataclass
class Slot:
    """One render at a time on ``device``; ``job`` while it is busy."""

    index: int
    device: str  # what the render options get: "cpu", "cuda:1", or the configured "auto"
    job: str | None = None
    progress: float = 0.0
    kind: str = FRAMES  # REMOTE: a HeyGem server's turn (the engine picks the server)

    @property
    def label(self) -> str:
        if self.kind == REMOTE:
            return f"heygem#{self.index}"
        return f"{self.device}#{self.index}" if self.device in ("cpu", "auto", "cuda") else self.device


def slot_kind(engine: str) -> str:
    """The kind of slot a job for ``engine`` renders in."""
    return REMOTE if engine == HEYGEM else FRAMES


def render_slots(cfg: Config, *, cuda_count: int | None = None, cpu_count: int | None = None) -> list[Slot]:
    """The slots this daemon renders with (DeviceUnavailableError: a listed GPU is missing)."""
    r = cfg.render
    if cuda_count is None:
        cuda_count = cuda_device_count()
    cores = cpu_count or os.cpu_count() or 1
    if r.devices == ["all"]:
        devices = [f"cuda:{i}" for i in range(cuda_count)]
    else:
        devices = list(r.devices)
    for d in devices:
        if d.startswith("cuda:") and int(d.split(":")[1]) >= cuda_count:
            raise DeviceUnavailableError(f"render.devices lists {d}, but this host has "
                                         f"{cuda_count} CUDA device(s)" + (f" (cuda:0..cuda:{cuda_count - 1})"
                                                                           if cuda_count else ""))
    remote = len(r.heygem.servers)  # one render per HeyGem server: each renders one task at a time
    if devices:
        slots = [Slot(i, d) for i, d in enumerate(devices)]
        return slots + [Slot(len(slots) + k, r.device, kind=REMOTE) for k in range(remote)]
    workers = r.workers
    if workers == 0:
        on_gpu = r.device != "cpu" and cuda_count > 0
        workers = 1 if on_gpu else max(1, cores // CORES_PER_CPU_RENDER)
    if r.device not in ("auto", "cpu", "cuda"):
        resolve_device(r.device)  # a named GPU that does not exist fails here, at start
    slots = [Slot(i, r.device) for i in range(workers)]
    return slots + [Slot(workers + k, r.device, kind=REMOTE) for k in range(remote)]

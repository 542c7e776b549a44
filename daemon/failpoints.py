"""Fault injection at named phases of a job, for tests that prove crash safety for real.

The worker calls ``failpoint("after_upload", job_id)`` and friends at the points where a
crash would leave the most awkward state behind. Normally that call does nothing: when the
environment variable ``LIPSYNCD_FAILPOINTS`` is unset at import time, ``failpoint`` is a
function that returns at once. A test that starts the daemon with, for example::

    LIPSYNCD_FAILPOINTS="after_upload=kill"
    LIPSYNCD_FAILPOINTS="before_sidecar_done=sleep:5,render_progress=kill"
    LIPSYNCD_FAILPOINTS="before_render=transient*2"      # the first two renders fail transiently
    LIPSYNCD_FAILPOINTS="claimed=stop@job"               # freeze once per job, right after its claim

makes the daemon act at that phase:

    kill          SIGKILL to the daemon itself (a power cut, an OOM kill, kill -9)
    stop          SIGSTOP to the daemon itself: every thread freezes until SIGCONT (a paused
                  VM, a host stalled longer than its lease)
    sleep:SEC     stall this thread for SEC seconds (a hung share)
    raise         raise :class:`FailpointError` (an unexpected bug at that point)
    transient     raise a transient render error (GPU busy or out of memory: retried)
    exit:CODE     leave at once with os._exit(CODE), skipping every cleanup

An action acts every time its phase is reached, unless it ends in ``*N`` (only the first N
times) or ``@job`` (the first time per job). Phases are listed in :data:`PHASES`; naming
another one is an error at start-up, so a typo cannot turn a crash test into a test of
nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping

from lipsync.errors import TransientRenderError

ENV_VAR = "LIPSYNCD_FAILPOINTS"

PHASES = (
    "claim_record",         # work folder and job.json written, no file moved yet
    "claim_moved",          # the job's files renamed into the work folder, record not yet final
    "before_lease",         # the claim is complete, the lease not yet written
    "claimed",              # the lease is written, the job waits for its turn
    "before_render",
    "render_progress",      # every progress report while frames are being encoded
    "after_render",         # the MP4 is complete in the work area, nothing uploaded
    "before_upload",
    "after_upload",         # the object is in the store, the sidecar does not know yet
    "before_sidecar_done",
    "after_sidecar_done",   # sidecar says done, inputs not yet moved to done/
    "after_finish",         # inputs in done/, work folder removed, "job finished" (webhooks) not yet sent
    "heartbeat",            # each lease renewal round of the heartbeat thread
)


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


Action = Callable[[str], None]


def _kill(_phase: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # the signal is asynchronous; never run on past the failpoint


def _stop(_phase: str) -> None:
    # Sent to this thread, not the process: a process-directed SIGSTOP wakes one thread
    # (usually the main one) to start the group stop, and until that thread gets a CPU the
    # caller runs on -- on a busy machine far enough to write the very record the stop is
    # meant to come before. A thread-directed one stops the caller as the call returns;
    # the other threads follow. Returns after SIGCONT.
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def _raise(phase: str) -> None:
    raise FailpointError(f"failpoint {phase} triggered")


def _transient(phase: str) -> None:
    raise TransientRenderError(f"failpoint {phase}: simulated transient render failure (GPU busy)")


class _Limited:
    """Acts on the first ``times`` hits overall, or the first hit per key (job)."""

    def __init__(self, action: Action, times: int | None, per_key: bool) -> None:
        self.action, self.times, self.per_key = action, times, per_key
        self.hits = 0
        self.keys: set[str | None] = set()
        self.lock = threading.Lock()

    def __call__(self, phase: str, key: str | None) -> None:
        with self.lock:
            if self.per_key:
                if key in self.keys:
                    return
                self.keys.add(key)
            elif self.times is not None:
                if self.hits >= self.times:
                    return
                self.hits += 1
        self.action(phase)


def _parse_action(text: str) -> _Limited:
    times: int | None = None
    per_key = False
    if text.endswith("@job"):
        text, per_key = text[: -len("@job")], True
    elif "*" in text:
        text, _, count = text.rpartition("*")
        times = int(count)
        if times < 1:
            raise ValueError("a count must be at least 1")
    kind, _, arg = text.partition(":")
    if kind == "kill" and not arg:
        action: Action = _kill
    elif kind == "stop" and not arg:
        action = _stop
    elif kind == "raise" and not arg:
        action = _raise
    elif kind == "transient" and not arg:
        action = _transient
    elif kind == "sleep":
        seconds = float(arg)
        if seconds < 0:
            raise ValueError("negative sleep")
        action = lambda _phase: time.sleep(seconds)  # noqa: E731
    elif kind == "exit":
        code = int(arg or "1")
        action = lambda _phase: os._exit(code)  # noqa: E731
    else:
        raise ValueError(f"unknown action {text!r}")
    return _Limited(action, times, per_key)


def parse(spec: str) -> dict[str, _Limited]:
    """``"phase=action,phase=action"`` to a table of actions; ValueError names the bad part."""
    table: dict[str, _Limited] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        phase, sep, action = item.partition("=")
        phase = phase.strip()
        if not sep or phase not in PHASES:
            raise ValueError(f"{ENV_VAR}: {item!r}: expected PHASE=ACTION with PHASE one of {', '.join(PHASES)}")
        try:
            table[phase] = _parse_action(action.strip())
        except ValueError as e:
            raise ValueError(f"{ENV_VAR}: {item!r}: {e}; actions are kill, stop, sleep:SECONDS, raise, transient, "
                             "exit:CODE, optionally followed by *N or @job") from None
    return table


def _make(env: Mapping[str, str]) -> Callable[..., None]:
    spec = env.get(ENV_VAR, "")
    if not spec.strip():
        def failpoint(phase: str, key: str | None = None) -> None:
            """No failpoints configured: nothing to do."""
        return failpoint

    table = parse(spec)

    def failpoint(phase: str, key: str | None = None) -> None:  # noqa: F811 - the armed variant
        action = table.get(phase)
        if action is not None:
            action(phase, key)
    return failpoint


failpoint = _make(os.environ)
ARMED = bool(os.environ.get(ENV_VAR, "").strip())

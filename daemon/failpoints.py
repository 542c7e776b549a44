"""Fault injection at named phases of a job, for tests that prove crash safety for real.

The worker calls ``failpoint("after_upload")`` and friends at the points where a crash
would leave the most awkward state behind. Normally that call does nothing: when the
environment variable ``LIPSYNCD_FAILPOINTS`` is unset at import time, ``failpoint`` is a
function that returns at once. A test that starts the daemon with, for example::

    LIPSYNCD_FAILPOINTS="after_upload=kill"
    LIPSYNCD_FAILPOINTS="before_sidecar_done=sleep:5,render_progress=kill"

makes the daemon act at that phase, the first time and every time it is reached:

    kill          SIGKILL to the daemon itself (a power cut, an OOM kill, kill -9)
    sleep:SEC     stall for SEC seconds (a hung share, a paused VM)
    raise         raise :class:`FailpointError` (an unexpected bug at that point)
    exit:CODE     leave at once with os._exit(CODE), skipping every cleanup

Phases are listed in :data:`PHASES`; naming another one is an error at start-up, so a
typo cannot turn a crash test into a test of nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping

ENV_VAR = "LIPSYNCD_FAILPOINTS"

PHASES = (
    "claimed",              # job renamed into the work area, lease written
    "before_render",
    "render_progress",      # every progress report while frames are being encoded
    "after_render",         # the MP4 is complete in the work area, nothing uploaded
    "before_upload",
    "after_upload",         # the object is in the store, the sidecar does not know yet
    "before_sidecar_done",
    "after_sidecar_done",   # sidecar says done, inputs not yet moved to done/
    "after_finish",         # inputs in done/, work folder not yet removed
    "heartbeat",            # each lease renewal round of the heartbeat thread
)


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


Action = Callable[[str], None]


def _kill(_phase: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # the signal is asynchronous; never run on past the failpoint


def _raise(phase: str) -> None:
    raise FailpointError(f"failpoint {phase} triggered")


def _parse_action(phase: str, text: str) -> Action:
    kind, _, arg = text.partition(":")
    if kind == "kill" and not arg:
        return _kill
    if kind == "raise" and not arg:
        return _raise
    if kind == "sleep":
        seconds = float(arg)
        if seconds < 0:
            raise ValueError("negative sleep")
        return lambda _phase: time.sleep(seconds)
    if kind == "exit":
        code = int(arg or "1")
        return lambda _phase: os._exit(code)
    raise ValueError(f"unknown action {text!r}")


def parse(spec: str) -> dict[str, Action]:
    """``"phase=action,phase=action"`` to a table of actions; ValueError names the bad part."""
    table: dict[str, Action] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        phase, sep, action = item.partition("=")
        phase = phase.strip()
        if not sep or phase not in PHASES:
            raise ValueError(f"{ENV_VAR}: {item!r}: expected PHASE=ACTION with PHASE one of {', '.join(PHASES)}")
        try:
            table[phase] = _parse_action(phase, action.strip())
        except ValueError as e:
            raise ValueError(f"{ENV_VAR}: {item!r}: {e}; actions are kill, sleep:SECONDS, raise, exit:CODE") from None
    return table


def _make(env: Mapping[str, str]) -> Callable[[str], None]:
    spec = env.get(ENV_VAR, "")
    if not spec.strip():
        def failpoint(phase: str) -> None:
            """No failpoints configured: nothing to do."""
        return failpoint

    table = parse(spec)

    def failpoint(phase: str) -> None:  # noqa: F811 - the armed variant
        action = table.get(phase)
        if action is not None:
            action(phase)
    return failpoint


failpoint = _make(os.environ)
ARMED = bool(os.environ.get(ENV_VAR, "").strip())

"""The words of a job's life, defined once: its states, their groups, and its outputs' states.

A job is ``waiting`` while its drop lies in the inbox -- no daemon has claimed it, it has no
record yet -- and from its claim on it is in one of :class:`State`, as its sidecar says.
Standard library only: the light client (``lipsyncd submit``) follows jobs with these too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

WAITING = "waiting"  # in the inbox, not claimed yet: no record, so not a State


class State(StrEnum):
    """The job's state, as the sidecar's ``state`` says it."""

    QUEUED = "queued"
    RENDERING = "rendering"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @classmethod
    def of(cls, doc: dict[str, Any]) -> State | None:
        try:
            return cls(doc.get("state"))
        except ValueError:
            return None


ACTIVE_STATES = (State.QUEUED, State.RENDERING, State.UPLOADING)
FINAL_STATES = frozenset({State.DONE, State.FAILED, State.EXPIRED})
# every state a job is shown in, in the order of its life: waiting, then the record's
JOB_STATES: tuple[str, ...] = (WAITING, *State)
# the states of a job that is not finished: waiting in the inbox, or claimed and in work
UNFINISHED: tuple[str, ...] = (WAITING, *ACTIVE_STATES)


class OutputState(StrEnum):
    """The state of one output video within a job."""

    PENDING = "pending"
    RENDERING = "rendering"
    RENDERED = "rendered"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"

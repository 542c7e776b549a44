"""The daemon's exception hierarchy.

``PermanentJobError``: the job itself is wrong (bad manifest, missing partner, media that
cannot be decoded). It is moved to failed/NAME/ with the sidecar saying why; retrying
cannot help. ``TransientJobError``: the world is wrong for now (storage down, GPU out of
memory). The job stays claimed and is retried with backoff. Render errors from
:mod:`lipsync` carry the same distinction in ``LipsyncError.permanent`` and are mapped by
:func:`job_error_from`.
"""

from __future__ import annotations

import errno

from lipsync.errors import LipsyncError


class LipsyncdError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(LipsyncdError):
    """The configuration is invalid. ``problems`` lists every problem found at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class JobError(LipsyncdError):
    code = "job_error"
    permanent = True

    def __init__(self, message: str, *, code: str | None = None, file: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.file = file

    def as_dict(self) -> dict:
        d = {"code": self.code, "message": self.message, "retryable": not self.permanent}
        if self.file:
            d["file"] = self.file
        return d


class PermanentJobError(JobError):
    code = "bad_job"
    permanent = True


class BadManifestError(PermanentJobError):
    code = "bad_manifest"
    problems: tuple[str, ...] = ()  # every problem found, each on its own
    # (field, name, is a template) of the files the manifest names, read leniently so that
    # they go to failed/ with it; None when it could not be read at all
    refs: list[tuple[str, str, bool]] | None = None


class PathOutsideInboxError(PermanentJobError):
    code = "path_outside_inbox"


class MissingPartnerError(PermanentJobError):
    code = "missing_partner"


class TransientJobError(JobError):
    code = "transient"
    permanent = False


class StorageError(TransientJobError):
    code = "storage_unavailable"


def job_error_from(exc: BaseException) -> JobError:
    """Map any exception raised while processing a job to a :class:`JobError`."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, LipsyncError):
        cls = PermanentJobError if exc.permanent else TransientJobError
        return cls(str(exc), code=exc.code, file=exc.path)
    if isinstance(exc, MemoryError):
        return TransientJobError("out of memory while rendering", code="out_of_memory")
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        # retrying cannot make a name shorter: fail the job instead of looping
        return PermanentJobError(f"a file name is too long for the filesystem: {exc}", code="name_too_long")
    if isinstance(exc, OSError):
        # disk full, share unmounted, permission flaps: not the input's fault
        return TransientJobError(f"{type(exc).__name__}: {exc}", code="io_error")
    return PermanentJobError(f"internal error: {type(exc).__name__}: {exc}", code="internal_error")

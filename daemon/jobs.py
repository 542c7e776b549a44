"""The job records shared by intake (inbox, manifest, claims) and the worker.

A job travels in two shapes:

* :class:`JobSpec` -- what the inbox scan found: a ready job whose files are still in the
  inbox (``Inbox.scan`` returns these). A spec whose ``error`` is set is a job that can
  never render (bad manifest, missing partner, a path outside the inbox, ambiguous
  drop); it is claimed like any other so that its files end up in ``failed/NAME/`` with
  a sidecar saying why, and nothing is ever deleted.
* :class:`ClaimedJob` -- the same job after ``claims.claim`` renamed its inbox files into
  this host's private work area; every path in it points into the work area (inputs) or
  the template library (templates that are only read, never moved).

Output names: one template gives ``<output_name>.mp4``; several give
``<output_name>-<template stem>.mp4``. ``output_name`` defaults to the job name.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.names import fit_name

from daemon.errors import (
    BadManifestError,
    JobError,
    MissingPartnerError,
    PathOutsideInboxError,
    PermanentJobError,
)



@dataclass(frozen=True)
class JobOptions:
    """Per-job options from a manifest; ``None`` means "use the daemon's config"."""

    output_name: str | None = None  # friendly name of the output(s), without .mp4
    link_lifetime: float | None = None  # seconds the presigned link stays valid
    engine: str | None = None  # one of lipsync.engines.NAMES
    callback_url: str | None = None  # webhook for this job only (may hold a token: never log it)
    priority: int | None = None  # higher runs first; None means 0
    # finishing (None: the [output] default); see lipsync.finish.spec
    resolution: str | None = None
    aspect: str | None = None
    fps: float | None = None
    watermark: dict | None = None  # {"image": ..., "position": ..., ...}
    intro: str | None = None  # a clip in the template library
    outro: str | None = None
    subtitles: str | None = None  # soft | burn | off
    subtitle_file: str | None = None  # an .srt / .vtt in the inbox, named by the manifest
    # text instead of audio, spoken with [tts] (voice: this job's voice instead of tts.voice)
    text: str | None = None
    voice: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The sidecar's ``options`` object (and job.json's): every field, in declaration order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> JobOptions:
        data = data or {}
        values = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        for name in ("link_lifetime", "fps"):
            if values[name] is not None:
                values[name] = float(values[name])
        return cls(**values)


@dataclass
class JobSpec:
    """A ready job found in the inbox (nothing has been moved yet).

    ``files`` are the inbox files that move on claim (manifest, audio and inbox
    templates; for a failed spec, every file of the drop). ``templates`` lists every
    template in manifest order, each either an inbox file (also in ``files``) or a file of
    the template library (also in ``library_templates``, read in place, never moved).
    """

    name: str  # job name: the common stem, or NAME of NAME.job.toml
    audio: Path | None
    templates: list[Path]
    manifest: Path | None = None
    files: list[Path] = field(default_factory=list)
    library_templates: list[Path] = field(default_factory=list)
    options: JobOptions = field(default_factory=JobOptions)
    error: JobError | None = None
    ready_since: float = 0.0  # scan clock: when the job became ready (oldest first)
    original_name: str | None = None  # set when ``name`` had to be shortened (see fit_name)

    def __post_init__(self) -> None:
        fitted = fit_name(self.name)
        if fitted != self.name:
            self.original_name, self.name = self.name, fitted

    @property
    def failed(self) -> bool:
        return self.error is not None

    def rank(self, now: float, aging: float) -> tuple[float, float, str]:
        """Sort key of the waiting queue: highest priority first, oldest first among equals.

        Waiting raises a job's priority by one per ``aging`` seconds (0: never), so that a
        stream of urgent jobs cannot keep a low-priority one waiting forever.
        """
        waited = max(0.0, now - self.ready_since) if self.ready_since else 0.0
        boost = waited / aging if aging > 0 else 0.0
        return (-((self.options.priority or 0) + boost), self.ready_since, self.name)

    def output_names(self) -> list[str]:
        return output_names(self.name, self.templates, self.options.output_name)


@dataclass(frozen=True)
class ClaimedFile:
    """One input as recorded in job.json: its inbox-relative name as dropped."""

    name: str  # path relative to the inbox (or to the library when ``library``)
    size: int
    library: bool = False
    moved: bool = True  # False: it vanished from the inbox while being claimed
    mtime_ns: int = 0  # modification time seen when it was claimed (0: not recorded)


@dataclass(frozen=True)
class PlannedOutput:
    """One video to render: a template and the friendly name of its MP4."""

    template: Path  # where to read the template (work area or library)
    template_name: str  # as named in the drop, for the sidecar
    name: str  # friendly file name, e.g. "welcome-anna.mp4"
    path: Path  # where the worker writes it: <work dir>/out/<name>


@dataclass
class ClaimedJob:
    """A job owned by this host, its inbox files renamed into ``work_dir/inputs/``.

    Layout of ``work_dir`` (``<work>/<host id>/<job id>/``): ``job.json`` (the claim
    record, written before anything moves), ``inputs/`` (the moved inbox files, keeping
    their inbox-relative names), ``out/`` (rendered MP4s until uploaded). The worker may
    keep other small files there (a lease); ``workarea.finish`` removes the whole folder.
    """

    name: str
    id: str
    host: str
    claimed_at: str  # ISO-8601 UTC
    work_dir: Path
    audio: Path | None
    templates: list[Path]
    audio_name: str | None = None  # as dropped (inbox-relative)
    template_names: list[str] = field(default_factory=list)  # as dropped / library-relative
    library_templates: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    manifest_name: str | None = None
    options: JobOptions = field(default_factory=JobOptions)
    error: JobError | None = None  # set: fail the job with this error without rendering
    files: list[ClaimedFile] = field(default_factory=list)
    original_name: str | None = None  # the name as dropped, when ``name`` is a shortened form

    @property
    def inputs_dir(self) -> Path:
        return self.work_dir / "inputs"

    @property
    def out_dir(self) -> Path:
        return self.work_dir / "out"

    @property
    def record_path(self) -> Path:
        return self.work_dir / "job.json"

    def output_names(self) -> list[str]:
        return output_names(self.name, [Path(n) for n in self.template_names], self.options.output_name)

    def planned_outputs(self) -> list[PlannedOutput]:
        """One entry per template, in manifest order."""
        names = self.output_names()
        return [
            PlannedOutput(template=t, template_name=tn, name=n, path=self.out_dir / n)
            for t, tn, n in zip(self.templates, self.template_names, names)
        ]

    def size_of(self, name: str | None) -> int:
        for f in self.files:
            if f.name == name:
                return f.size
        return 0

    def inputs_document(self) -> dict[str, Any]:
        """The sidecar's ``inputs`` object: names as dropped and sizes.

        A job without audio (a lone template that failed) reports ``{"name": "", "size": 0}``
        so the document still validates.
        """
        audio = {"name": self.audio_name or "", "size": self.size_of(self.audio_name)}
        templates = [{"name": n, "size": self.size_of(n)} for n in self.template_names]
        manifest = None
        if self.manifest_name:
            manifest = {"name": self.manifest_name, "size": self.size_of(self.manifest_name)}
        return {"audio": audio, "templates": templates, "manifest": manifest}


def output_names(job_name: str, templates: list[Path], output_name: str | None) -> list[str]:
    """Friendly MP4 names, one per template, unique within the job.

    ``talk`` + one template -> ``talk.mp4``; ``welcome`` + anna.mp4, ben.jpg ->
    ``welcome-anna.mp4``, ``welcome-ben.jpg`` -> ``welcome-ben.mp4``. Two templates with
    the same stem (one from the inbox, one from the library) get ``-2``, ``-3``. Names
    longer than :data:`daemon.names.NAME_BYTES_MAX` bytes are shortened (fit_name).
    """
    base = fit_name(output_name or job_name)
    if len(templates) <= 1:
        return [f"{base}.mp4"]
    names: list[str] = []
    seen: set[str] = set()
    for t in templates:
        candidate = fit_name(f"{base}-{t.stem}")
        unique, n = candidate, 2
        while unique.lower() in seen:
            unique, n = f"{candidate}-{n}", n + 1
        seen.add(unique.lower())
        names.append(f"{unique}.mp4")
    return names


_ERRORS_BY_CODE: dict[str, type[JobError]] = {
    BadManifestError.code: BadManifestError,
    PathOutsideInboxError.code: PathOutsideInboxError,
    MissingPartnerError.code: MissingPartnerError,
}

AMBIGUOUS_JOB = "ambiguous_job"  # code of the error for a drop that pairs two ways
SYMLINK_INPUT = "symlink_input"  # code of the error for a link inside the inbox


def ambiguous_job_error(message: str, *, file: str | None = None) -> PermanentJobError:
    return PermanentJobError(message, code=AMBIGUOUS_JOB, file=file)


def job_error_to_dict(error: JobError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"code": error.code, "message": error.message, "file": error.file,
            "permanent": error.permanent}


def job_error_from_dict(data: dict[str, Any] | None) -> JobError | None:
    """Rebuild an error recorded in job.json (so a recovered failed job fails the same way)."""
    if not data:
        return None
    cls = _ERRORS_BY_CODE.get(data.get("code", ""))
    if cls is not None:
        return cls(data.get("message", ""), file=data.get("file"))
    return PermanentJobError(data.get("message", ""), code=data.get("code"), file=data.get("file"))

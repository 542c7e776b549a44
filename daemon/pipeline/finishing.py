"""A claimed job's finishing options, resolved: the job's own, else the [output] defaults;
clips and watermark images located in the template library; the subtitle file found among
the job's inputs (named by the manifest, or NAME.srt / NAME.vtt dropped with the job)."""

from __future__ import annotations

from pathlib import Path

from lipsync.finish import FinishSpec, Watermark

from daemon.config import Config
from daemon.errors import MissingPartnerError
from daemon.intake.manifest import PathRules
from daemon.names import SUBTITLE_EXTENSIONS
from daemon.jobs import ClaimedJob


def finish_spec(job: ClaimedJob, cfg: Config) -> FinishSpec:
    o, d = job.options, cfg.output
    mark = o.watermark if o.watermark is not None else (d.watermark or None)
    intro = o.intro if o.intro is not None else (d.intro or None)
    outro = o.outro if o.outro is not None else (d.outro or None)
    fps = o.fps if o.fps is not None else (d.fps or None)
    return FinishSpec(
        resolution=o.resolution or d.resolution,
        aspect=o.aspect or d.aspect,
        fps=float(fps) if fps else None,
        watermark=Watermark(image=_library_file(cfg, job, mark["image"], "watermark.image"),
                            **{k: mark[k] for k in ("position", "margin", "opacity", "scale") if k in mark})
        if mark else None,
        intro=_library_file(cfg, job, intro, "intro") if intro else None,
        outro=_library_file(cfg, job, outro, "outro") if outro else None,
        subtitles=_subtitle_file(job),
        subtitle_mode=o.subtitles or d.subtitles,
    )


def _library_file(cfg: Config, job: ClaimedJob, name: str, field: str) -> Path:
    if cfg.paths.templates is None:
        raise MissingPartnerError(f"{field} {name!r}: clips and watermarks come from the template library, "
                                  "but paths.templates is not set", file=str(name))
    found = PathRules(cfg).in_library(str(name), manifest=job.manifest_name or job.name, field=field)
    if found is None:
        raise MissingPartnerError(f"{field} {name!r} is not in the template library", file=str(name))
    return found.path


def _subtitle_file(job: ClaimedJob) -> Path | None:
    if job.options.subtitle_file:
        return job.inputs_dir / job.options.subtitle_file.replace("\\", "/")
    found = [f.name for f in job.files if f.moved and not f.library
             and Path(f.name).suffix.lower() in SUBTITLE_EXTENSIONS]
    return job.inputs_dir / found[0] if found else None

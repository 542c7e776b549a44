"""Rendering a claimed job's outputs: its speech, each template's render and finish, and
the small record each finished output leaves.

Each finished render leaves ``out/<name>.mp4`` plus ``out/.<name>.rendered.json`` (size,
sha256, duration, ...). A job that comes back after a restart skips every output whose
record still matches its file, so nothing is rendered twice.

The render's progress callback is where a shutdown (:class:`JobInterrupted`) and a
cancel (:class:`JobCancelled`) reach a running render: both are checked once per chunk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from lipsync.engine import RenderOptions
from lipsync.render import render
from lipsync.tts import TtsSettings, read_text, synthesize

from daemon import workarea
from daemon.atomic import write_atomic
from daemon.config import Config
from daemon.errors import PermanentJobError
from daemon.failpoints import failpoint
from daemon.jobs import ClaimedJob, PlannedOutput
from daemon.logsetup import get_logger
from daemon.names import fit_name, is_text
from daemon.outbox import Sidecar
from daemon.pipeline.engines import EngineCache
from daemon.pipeline.finishing import finish_spec
from daemon.pipeline.slots import Slot
from daemon.storage import sha256_file

log = get_logger(__name__)


class JobInterrupted(BaseException):
    """Raised from the render's progress callback when the daemon is told to stop now.

    A BaseException, so that no ``except Exception`` between the callback and us can
    mistake a shutdown for a render error and fail the job.
    """


class JobCancelled(Exception):
    """Someone asked for the job to be cancelled (`lipsyncd cancel`): it fails as ``cancelled``."""


def check_cancel(job: ClaimedJob) -> None:
    if workarea.cancel_requested(job):
        raise JobCancelled()


class OutputRenderer:
    """Renders the outputs of one job after another with the daemon's engines (loaded once)."""

    def __init__(self, cfg: Config, *, engines: EngineCache, options: RenderOptions, abort: threading.Event) -> None:
        self.cfg = cfg
        self.engines = engines
        self.options = options
        self.abort = abort

    def render_all(self, job: ClaimedJob, rec: Sidecar, slot: Slot | None) -> None:
        """Render (and finish) every output of ``job`` not rendered before, recording each."""
        planned = job.planned_outputs()
        device = slot.device if slot is not None else self.cfg.render.device
        engine = self.engines.get(job.options.engine or self.cfg.render.engine, device=device,
                                  slot=slot.index if slot is not None else 0)
        options = dataclasses.replace(self.options, device=device)
        rec.rendering(engine=engine.name, outputs=[(p.name, p.template_name) for p in planned],
                      notes=engine.load_notes, device=engine.runs_on(device))
        job.out_dir.mkdir(exist_ok=True)  # never parents: a vanished work folder stays vanished
        speech = self.speech(job)
        finishing = finish_spec(job, self.cfg)
        count = len(planned)
        for i, plan in enumerate(planned):
            earlier = read_rendered(plan)
            if earlier is not None:
                rec.output_rendered(plan.name, earlier["output"])
                continue
            if self.abort.is_set():
                raise JobInterrupted()
            rec.output_rendering(plan.name)
            failpoint("before_render", job.id)
            partial = job.out_dir / f".{plan.name}.partial.mp4"

            def progress(fraction: float, _i: int = i) -> None:
                if self.abort.is_set():
                    raise JobInterrupted()
                check_cancel(job)  # one stat per chunk: a cancel stops the render at the next one
                failpoint("render_progress", job.id)
                done = (_i + fraction) / count
                if slot is not None:
                    slot.progress = done
                rec.progress(done)

            started = time.monotonic()
            # finished as it renders: the engine's frames go straight into the finishing
            result = render(speech, plan.template, partial, engine=engine, options=options,
                            progress=progress, finish=None if finishing.is_noop else finishing)
            shape = (result.duration, result.width, result.height, result.fps)
            seconds = time.monotonic() - started
            check_inputs_unchanged(job)
            os.replace(partial, plan.path)
            fields = {
                "size": plan.path.stat().st_size, "sha256": sha256_file(plan.path),
                "duration": round(float(shape[0]), 3), "width": int(shape[1]),
                "height": int(shape[2]), "fps": float(shape[3]), "engine": result.engine,
            }
            notes = [n if count == 1 else f"{plan.name}: {n}" for n in result.notes]
            rec.output_rendered(plan.name, fields, notes)
            write_rendered(plan, {"output": fields, "render_seconds": round(seconds, 3), "notes": notes})
            log.info("output rendered", output=plan.name, template=plan.template_name, seconds=round(seconds, 2),
                     frames=result.frames, engine=result.engine)
            failpoint("after_render", job.id)
        rec.rendered()

    def speech(self, job: ClaimedJob) -> Path:
        """The audio to render: the job's own, or its text spoken by [tts] into a WAV kept
        with the inputs (made once: a resumed job reuses it)."""
        text_file = job.audio if job.audio is not None and is_text(job.audio.name) else None
        if text_file is None and not job.options.text:
            if job.audio is None:
                raise PermanentJobError("the job has neither audio nor text", code="bad_media")
            return job.audio
        out = job.inputs_dir / f"{fit_name(job.name, 180)}.speech.wav"
        if out.is_file():
            return out
        t = self.cfg.tts
        settings = TtsSettings(backend=t.backend, voice=job.options.voice or t.voice, url=t.url, rate=t.rate,
                               timeout=float(t.timeout))
        text = read_text(text_file) if text_file is not None else job.options.text
        started = time.monotonic()
        synthesize(text, out, settings, source=text_file)
        log.info("text spoken", backend=t.backend, voice=settings.voice, chars=len(text),
                 seconds=round(time.monotonic() - started, 2))
        return out


def check_inputs_unchanged(job: ClaimedJob) -> None:
    """PermanentJobError when an input differs from what was claimed.

    A copy that paused longer than the settle window and then carried on, or a file
    replaced through a handle held open, changes under the renderer: the video would
    mix two versions of it. Size and mtime as recorded at the claim are the reference.
    """
    for f in job.files:
        if not f.moved or f.library:
            continue
        try:
            st = os.stat(job.inputs_dir / f.name)
        except FileNotFoundError:
            st = None
        if st is None or st.st_size != f.size or (f.mtime_ns and st.st_mtime_ns != f.mtime_ns):
            now = "it is gone" if st is None else f"now {st.st_size} bytes, modified after the claim"
            raise PermanentJobError(f"{f.name} changed while it was being read (claimed at {f.size} bytes; {now}): "
                                    "it was still being copied or was replaced. Drop the job again once the file "
                                    "is complete", code="input_changed", file=f.name)


# --------------------------------------------------------------------------- render records


def _record_path(plan: PlannedOutput) -> Path:
    return plan.path.with_name(f".{plan.name}.rendered.json")


def write_rendered(plan: PlannedOutput, data: dict[str, Any]) -> None:
    write_atomic(_record_path(plan), json.dumps(data).encode())


def read_rendered(plan: PlannedOutput) -> dict[str, Any] | None:
    """The record of an earlier complete render of ``plan``, if its MP4 is intact."""
    try:
        data = json.loads(_record_path(plan).read_text())
        if plan.path.stat().st_size == data["output"]["size"]:
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def render_seconds(plan: PlannedOutput) -> float:
    data = read_rendered(plan)
    return float(data.get("render_seconds", 0.0)) if data else 0.0

"""The ``heygem`` engine: photoreal renders by HeyGem / Duix.Avatar servers, one task per server.

A whole-file engine (:class:`lipsync.engine.FileEngine`). For each render it takes an idle
server from its pool, lays the inputs into the folder that server shares with us (the
audio as WAV; the template as a video with a sound track -- a photo or a silent video is
turned into one), submits a task with container paths, follows it until its first
terminal answer, finds the result, checks that it decodes and lasts as long as the audio,
and re-muxes it into lipsyncd's output form (the video copied when it is H.264, the job's
own audio as AAC, faststart). Everything it wrote into the shared folder is removed
afterwards, whatever the outcome.

What the servers do to clients, and what this engine does about it:

* **busy (10001)**: nothing was queued; the pool tries another idle server, or waits
  ``busy_retry`` and submits again. A busy answer never loses a job.
* **no answer**: the server is marked down (``down_since``, the reason) and gets no task
  until a probe (a query of an unknown task, answered 10004) succeeds again.
* **a stall** (no progress change for ``stall_timeout``) or a task that outlasts
  ``task_timeout`` + ``task_timeout_factor`` x the audio's length ends the attempt as a
  transient error; the daemon renders the job again later, on another server when one is
  free (the stalled one is avoided for a while).
* **10004 for a task not yet seen finished**: the server restarted and lost it; submit again.
* **status 3**: the job fails (``render_failed_remote``) with the server's message.
* **a daemon killed mid-task**: the task's server and code are kept next to the output
  (``.NAME.heygem.json``); the next attempt queries that task first instead of submitting
  a second one blindly.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import av

from lipsync.engine import FileEngine, FileRenderRequest, RenderResult
from lipsync.engines.heygem.protocol import (DONE, FAILED, Client, RemoteRenderFailed, Server, TaskState,
                                             TaskUnknown)
from lipsync.errors import EngineUnavailableError, RendererBusyError, RendererUnreachableError, TransientRenderError
from lipsync.media.remux import remux_with_audio, video_seconds, write_wav

TASK_FOLDER = "lipsyncd"  # our per-task folders inside each server's data folder
PROBE_INTERVAL = 30.0  # seconds between health probes of an idle server


@dataclass
class ServerState:
    server: Server
    client: Client
    busy_with: str | None = None  # the output being rendered there
    down_since: float | None = None
    down_reason: str | None = None
    avoid_until: float = 0.0  # after a stall or a busy answer
    probed_at: float = float("-inf")  # monotonic time of the last health probe

    def as_dict(self) -> dict[str, Any]:
        state = "down" if self.down_since else "busy" if self.busy_with else "idle"
        return {"server": self.server.name, "state": state, "job": self.busy_with, "down_since": self.down_since,
                "reason": self.down_reason}


@dataclass
class _Pool:
    """One task per server: ``acquire`` waits for an idle server that is up."""

    states: list[ServerState]
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def acquire(self, job: str, *, wait: float, deadline: float) -> ServerState:
        with self.changed:
            while True:
                self._probe_due()
                now = time.monotonic()
                idle = [s for s in self.states if s.busy_with is None and s.down_since is None]
                ready = sorted((s for s in idle if s.avoid_until <= now), key=lambda s: s.avoid_until)
                if ready:
                    ready[0].busy_with = job
                    return ready[0]
                if now > deadline:
                    raise RendererBusyError("no HeyGem server became free in time: "
                                            + ", ".join(f"{s.server.name} {s.as_dict()['state']}" for s in self.states))
                self.changed.wait(min(wait, max(0.05, deadline - now)))
                self._probe_down()

    def _probe(self, state: ServerState) -> bool:
        """Probe one server with the pool's lock released: a slow network must not hold up
        the other renders, status or metrics (called with the lock held)."""
        state.probed_at = time.monotonic()
        self.lock.release()
        try:
            return state.client.probe()
        finally:
            self.lock.acquire()

    def _probe_down(self) -> None:
        for s in list(self.states):
            if s.down_since is not None and self._probe(s):
                s.down_since = s.down_reason = None

    def _probe_due(self) -> None:
        """Idle servers not heard from for PROBE_INTERVAL: are they still there? (status, metrics)"""
        for s in list(self.states):
            if s.busy_with is None and s.down_since is None and time.monotonic() - s.probed_at > PROBE_INTERVAL:
                if not self._probe(s) and s.busy_with is None:  # (it may have been taken meanwhile)
                    s.down_since, s.down_reason = time.time(), f"{s.server.url} does not answer"

    def release(self, state: ServerState, *, avoid_for: float = 0.0, down: str | None = None) -> None:
        with self.changed:
            state.busy_with = None
            state.avoid_until = time.monotonic() + avoid_for
            if down is not None:
                state.down_since, state.down_reason = state.down_since or time.time(), down
            self.changed.notify_all()


class HeyGemEngine(FileEngine):
    name = "heygem"

    def __init__(self, servers: list[dict[str, Any]] | None = None, *, poll_interval: float = 2.0,
                 stall_timeout: float = 600.0, task_timeout: float = 900.0, task_timeout_factor: float = 10.0,
                 busy_retry: float = 5.0, request_timeout: float = 10.0, **_ignored: object) -> None:
        super().__init__()
        if not servers:
            raise EngineUnavailableError("the heygem engine needs at least one server in render.heygem.servers")
        self.poll_interval, self.stall_timeout = float(poll_interval), float(stall_timeout)
        self.task_timeout, self.task_timeout_factor = float(task_timeout), float(task_timeout_factor)
        self.busy_retry = float(busy_retry)
        states = []
        for s in servers:
            server = Server(url=str(s["url"]), host_dir=str(s["host_dir"]),
                            container_dir=str(s.get("container_dir", "/code/data")))
            states.append(ServerState(server, Client(server, timeout=request_timeout)))
        self.pool = _Pool(states)

    def servers(self) -> list[dict[str, Any]]:
        """Each server's state (idle, busy with a job, down since when and why), for status and metrics."""
        with self.pool.lock:
            return [s.as_dict() for s in self.pool.states]

    # ------------------------------------------------------------------ one render

    def render_file(self, request: FileRenderRequest) -> RenderResult:
        limit = self.task_timeout + self.task_timeout_factor * request.audio_duration
        record = _task_record(request.output)
        resumed = self._resume(record, request, limit)
        if resumed is not None:
            return resumed
        while True:
            state = self.pool.acquire(request.output.name, wait=self.busy_retry,
                                      deadline=time.monotonic() + limit)
            try:
                return self._attempt(state, request, record, limit)
            except RendererBusyError:
                self.pool.release(state, avoid_for=self.busy_retry)  # another client got there first
            except TaskUnknown:
                self.pool.release(state)  # the server restarted and lost the task: submit it again
            except RendererUnreachableError as e:
                self.pool.release(state, down=str(e))
                if all(s.down_since for s in self.pool.states):
                    raise
            except TransientRenderError:
                self.pool.release(state, avoid_for=self.stall_timeout)  # stalled or too slow: another, next time
                raise
            except BaseException:
                self.pool.release(state)
                raise

    def _attempt(self, state: ServerState, request: FileRenderRequest, record: Path, limit: float) -> RenderResult:
        server, client = state.server, state.client
        code = f"lipsyncd-{secrets.token_hex(8)}"
        task_dir = Path(server.host_dir) / TASK_FOLDER / code
        try:
            audio, video = self._prepare(request, task_dir)
            inside = PurePosixPath(server.container_dir) / TASK_FOLDER / code
            _write_record(record, {"url": server.url, "code": code})
            client.submit(code, inside / audio.name, inside / video.name)
            result = self._follow(state, code, request, limit)
            out = self._publish(server, code, result, request)
        except Exception:
            # this attempt is over; only an interruption (a daemon stopping: a BaseException)
            # keeps the record, so that the next start follows the task the server still runs
            _remove(record)
            raise
        finally:
            shutil.rmtree(task_dir, ignore_errors=True)
        self.pool.release(state)
        return out

    def _resume(self, record: Path, request: FileRenderRequest, limit: float) -> RenderResult | None:
        """A task submitted by an attempt that was cut short (a daemon killed): follow it, don't resubmit."""
        try:
            recorded = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        state = next((s for s in self.pool.states if s.server.url == recorded.get("url")), None)
        code = recorded.get("code")
        if state is None or not isinstance(code, str):
            _remove(record)
            return None
        with self.pool.lock:
            if state.busy_with is not None:
                return None
            state.busy_with = request.output.name
        try:
            result = self._follow(state, code, request, limit)
            out = self._publish(state.server, code, result, request)
        except TaskUnknown:
            _remove(record)
            self.pool.release(state)
            return None  # lost (or finished and forgotten while we were away): render it again
        except RendererUnreachableError as e:
            _remove(record)
            self.pool.release(state, down=str(e))
            return None
        except BaseException:
            self.pool.release(state, avoid_for=self.stall_timeout)
            raise
        finally:
            shutil.rmtree(Path(state.server.host_dir) / TASK_FOLDER / code, ignore_errors=True)
        self.pool.release(state)
        return out

    def _prepare(self, request: FileRenderRequest, task_dir: Path) -> tuple[Path, Path]:
        """The inputs in the shared folder: a WAV, and a template video with a sound track."""
        task_dir.mkdir(parents=True, exist_ok=True)
        audio = write_wav(request.audio, task_dir / "audio.wav")
        template = request.template
        video = task_dir / "template.mp4"
        if not template.is_still and _has_audio(template.path):
            _link_or_copy(template.path, video)
        else:
            # a photo becomes a held frame, a silent video gets the job's sound: the passthrough
            # render does both, as long as the audio (importing here: the registry imports us)
            from lipsync.engines.passthrough import PassthroughEngine
            from lipsync.render import render

            render(request.audio, template.path, video, engine=PassthroughEngine(), options=request.options)
        return audio, video

    def _follow(self, state: ServerState, code: str, request: FileRenderRequest, limit: float) -> TaskState:
        started = last_change = time.monotonic()
        last = -1.0
        name = state.server.name
        while True:
            answer = state.client.query(code)  # TaskUnknown / RendererUnreachableError go to the caller
            if answer.status == DONE:
                return answer
            if answer.status == FAILED:
                raise RemoteRenderFailed(f"HeyGem server {name} failed the task: {answer.msg or 'no reason given'}")
            now = time.monotonic()
            if answer.progress != last:
                last, last_change = answer.progress, now
                request.progress(min(0.95, answer.progress))
            if now - last_change > self.stall_timeout:
                raise TransientRenderError(f"HeyGem server {name} stalled at {last:.0%} for "
                                           f"{now - last_change:.0f}s; the job is tried again")
            if now - started > limit:
                raise TransientRenderError(f"HeyGem server {name} took longer than {limit:.0f}s; "
                                           "the job is tried again")
            time.sleep(self.poll_interval)

    def _publish(self, server: Server, code: str, answer: TaskState, request: FileRenderRequest) -> RenderResult:
        result = _find_result(server, code, answer.result)
        try:
            seconds, fps, _codec = video_seconds(result)
            if abs(seconds - request.audio_duration) > 1.0 / max(fps, 1.0) + 1e-3:
                raise TransientRenderError(f"HeyGem server {server.name} returned {seconds:.2f}s of video for "
                                           f"{request.audio_duration:.2f}s of audio")
            remux_with_audio(result, request.audio, request.output, request.options)
        finally:
            _remove(result)
            _remove(_task_record(request.output))
        with av.open(str(request.output)) as c:
            v = c.streams.video[0]
            width, height = v.codec_context.width, v.codec_context.height
        frames = round(request.audio_duration * fps)
        return RenderResult(path=request.output, engine=self.name, duration=request.audio_duration, width=width,
                            height=height, fps=fps, frames=frames, notes=(f"rendered by HeyGem server {server.name}",))


def _task_record(output: Path) -> Path:
    """Where a render keeps its task's server and code while the task runs (beside the output)."""
    return output.with_name(f".{output.name}.heygem.json")


def _find_result(server: Server, code: str, result: str | None) -> Path:
    """Where the server left the video: its ``result`` path (which may lack ``temp/``), else
    ``temp/<code>-r.mp4``."""
    root = Path(server.host_dir)
    candidates = []
    if result:
        relative = result.removeprefix(server.container_dir).lstrip("/")
        candidates += [root / relative, root / "temp" / Path(relative).name]
    candidates.append(root / "temp" / f"{code}-r.mp4")
    for path in candidates:
        if path.is_file():
            return path
    raise TransientRenderError(f"HeyGem server {server.name} reported task {code} done, but its video is not in "
                               f"{root} (looked for {', '.join(str(c.relative_to(root)) for c in candidates)})")


def _has_audio(path: Path) -> bool:
    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_record(path: Path, data: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

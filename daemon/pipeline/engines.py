"""Glue between the configuration and :mod:`lipsync`: render options and loaded engines.

Shared by the daemon (one engine per name, loaded once, reused for every job) and the
``lipsyncd render`` command.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lipsync.engine import Engine, FileEngine, MediaLimits, RenderOptions
from lipsync.engines import AUTO, HEYGEM, LATENTSYNC, MUSETALK, WAV2LIP, create_engine

from daemon.config import Config
from daemon.logsetup import get_logger

log = get_logger(__name__)


def media_limits(cfg: Config) -> MediaLimits:
    """``[limits]`` as the limits every probe and render applies (the API checks uploads by them)."""
    lim = cfg.limits
    return MediaLimits(max_file_bytes=int(lim.max_file_size), max_pixels=lim.max_pixels,
                       max_template_seconds=float(lim.max_template_seconds),
                       max_audio_seconds=float(lim.max_audio_seconds))


def render_options(cfg: Config, *, device: str | None = None) -> RenderOptions:
    r = cfg.render
    return RenderOptions(
        device=device or r.device,
        still_fps=r.still_fps,
        crf=r.crf,
        preset=r.preset,
        audio_bitrate=r.audio_bitrate,
        chunk_frames=r.chunk_frames,
        # face analysis of a template is cached by content: a team re-using one
        # presenter video pays for the landmark pass once
        cache_dir=cfg.paths.state / "cache" / "face",
        limits=media_limits(cfg),
    )


def engine_options(cfg: Config, name: str, *, device: str | None = None,
                   checkpoint: Path | None = None) -> dict[str, Any]:
    """Keyword arguments for ``create_engine(name, **options)``."""
    opts: dict[str, Any] = {"device": device or cfg.render.device}
    if name in (WAV2LIP, AUTO):
        w = cfg.render.wav2lip
        ckpt = checkpoint or w.checkpoint
        if ckpt is not None:
            opts["checkpoint"] = Path(ckpt)
        opts["batch_size"] = w.batch_size
        opts["precision"] = w.precision
    if name in (MUSETALK, AUTO):
        m = cfg.render.musetalk
        if m.models is not None:
            opts["musetalk_models"] = Path(m.models)
        opts["musetalk_batch_size"] = m.batch_size
        opts["musetalk_precision"] = m.precision
    if name in (LATENTSYNC, AUTO):
        ls = cfg.render.latentsync
        if ls.models is not None:
            opts["latentsync_models"] = Path(ls.models)
        opts.update(latentsync_steps=ls.inference_steps, latentsync_guidance=ls.guidance_scale,
                    latentsync_seed=ls.seed, latentsync_window=ls.window, latentsync_precision=ls.precision)
    if name == HEYGEM:
        h = cfg.render.heygem
        opts.update(servers=[dict(s) for s in h.servers], poll_interval=float(h.poll_interval),
                    stall_timeout=float(h.stall_timeout), task_timeout=float(h.task_timeout),
                    task_timeout_factor=float(h.task_timeout_factor), busy_retry=float(h.busy_retry))
    return opts


class EngineCache:
    """Engines by name and render slot, created on first use and kept: loading a model costs
    seconds. Each slot has its own engine, on its own device: renders that run at once share
    no model object."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._engines: dict[tuple[str, int], Engine] = {}
        self._lock = threading.Lock()

    def get(self, name: str, *, device: str | None = None, slot: int = 0) -> Engine:
        with self._lock:
            # a whole-file engine (remote renderers) is one for all slots: it holds the pool
            # of servers that its renders share
            engine = self._engines.get((name, -1)) or self._engines.get((name, slot))
            if engine is None:
                engine = create_engine(name, **engine_options(self._cfg, name, device=device))
                for note in engine.load_notes:
                    log.warning("engine fallback", requested=name, engine=engine.name, note=note)
                log.info("engine loaded", requested=name, engine=engine.name, device=device or self._cfg.render.device)
                self._engines[(name, -1 if isinstance(engine, FileEngine) else slot)] = engine
            return engine

    def remote_servers(self) -> list[dict]:
        """The servers of every loaded remote engine (state, job, down since), for metrics."""
        with self._lock:
            engines = list(self._engines.values())
        return [row for e in engines if callable(getattr(e, "servers", None)) for row in e.servers()]

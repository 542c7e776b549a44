"""The engine registry: the one list of engine names; create engines by name.

    engine = create_engine("auto", device="auto", checkpoint=path)

:data:`NAMES` is where configuration validation, manifests, the command line and the
documentation get the engine names from. Engines are imported only when asked for, so a
machine without torch or without a wav2lip checkpoint can still run the others. Options
an engine's constructor does not take are left out rather than passed on, so callers can
hand every engine the same settings (device=, checkpoint=, batch_size=, precision=, ...).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsync.errors import CheckpointError, EngineUnavailableError

if TYPE_CHECKING:  # the names are read by light callers (a client's --engine choices): no numpy here
    from lipsync.engine import Engine



@dataclass(frozen=True)
class EngineEntry:
    module: str
    cls: str
    summary: str  # one line for --help and the docs


# the engines' names, defined here once: configuration, manifests, the API and the command line use these
WARP, LATENTSYNC, MUSETALK, WAV2LIP, PASSTHROUGH, HEYGEM = (
    "warp", "latentsync", "musetalk", "wav2lip", "passthrough", "heygem")
DEFAULT = WARP  # render.engine when nothing is configured: needs no model

ENGINES: dict[str, EngineEntry] = {
    WARP: EngineEntry("lipsync.engines.warp", "WarpEngine",
                        "landmark-driven warp of mouth and jaw; no model to download (the default)"),
    LATENTSYNC: EngineEntry("lipsync.engines.latentsync", "LatentSyncEngine",
                            "photoreal 512x512 mouth by diffusion, LatentSync 1.6 weights, for re-voicing videos "
                            "(needs a CUDA GPU with ~18 GB; render.latentsync.models)"),
    MUSETALK: EngineEntry("lipsync.engines.musetalk", "MuseTalkEngine",
                            "photoreal 256x256 face, MuseTalk 1.5 weights (usable commercially; render.musetalk.models)"),
    WAV2LIP: EngineEntry("lipsync.engines.wav2lip", "Wav2LipEngine",
                           "photoreal mouth from a Wav2Lip checkpoint (render.wav2lip.checkpoint)"),
    PASSTHROUGH: EngineEntry("lipsync.engines.passthrough", "PassthroughEngine",
                               "no lip-sync: the template re-timed to the audio"),
    HEYGEM: EngineEntry("lipsync.engines.heygem", "HeyGemEngine",
                          "photoreal renders by HeyGem / Duix.Avatar servers (render.heygem.servers)"),
}
AUTO = "auto"  # not an engine of its own: the first of AUTO_ORDER that loads
# best first: latentsync only on a CUDA GPU with enough free memory (it declines otherwise),
# then the engines whose models are present, then warp, which needs none
AUTO_ORDER = (LATENTSYNC, MUSETALK, WAV2LIP, WARP)
NAMES: tuple[str, ...] = (AUTO, *ENGINES)


def summaries() -> dict[str, str]:
    """Engine name -> one-line description, ``auto`` included (for --help and the docs)."""
    return {AUTO: "latentsync on a CUDA GPU with 18 GiB free when its models load, else musetalk when its models "
                  "load, else wav2lip when its checkpoint loads, else warp",
            **{n: e.summary for n, e in ENGINES.items()}}


def create_engine(name: str, **options: Any) -> Engine:
    """Load the engine called ``name`` (one of :data:`NAMES`).

    "auto" tries latentsync (on a CUDA GPU with enough free memory), musetalk, wav2lip,
    then warp; the engine that loads says in
    ``engine.load_notes`` why the ones before it did not. An unknown name raises
    :class:`EngineUnavailableError` listing the known ones.
    """
    key = (name or "").strip().lower()
    if key == AUTO:
        skipped = []
        for candidate in AUTO_ORDER[:-1]:
            try:
                engine = _construct(candidate, {**options, "auto_pick": True})
            except (CheckpointError, EngineUnavailableError) as e:
                skipped.append(f"{candidate} unavailable ({e})")
                continue
            engine.load_notes.extend(f"{s}; using {candidate}" for s in skipped)
            return engine
        engine = _construct(AUTO_ORDER[-1], options)
        engine.load_notes.extend(f"{s}; using {AUTO_ORDER[-1]}" for s in skipped)
        return engine
    return _construct(key, options, shown=name)


def _engine_class(key: str, shown: str | None = None) -> type[Engine]:
    if key not in ENGINES:
        raise EngineUnavailableError(f"unknown engine {shown or key!r}; known engines: {', '.join(NAMES)}")
    entry = ENGINES[key]
    try:
        module = importlib.import_module(entry.module)
        return getattr(module, entry.cls)
    except (ImportError, AttributeError) as e:
        raise EngineUnavailableError(f"the {key} engine cannot be loaded: {type(e).__name__}: {e}") from e


def _construct(key: str, options: dict[str, Any], shown: str | None = None) -> Engine:
    cls = _engine_class(key, shown)
    return cls(**_accepted(cls, options))


def _accepted(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``cls`` takes: all of them when it has **kwargs, else those it names."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(options)
    names = {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in options.items() if k in names}


def available_engines(checkpoint: str | Path | None = None, *, heygem_servers: int = 0,
                      musetalk_models: str | Path | None = None, latentsync_models: str | Path | None = None,
                      device: str = "auto") -> dict[str, str]:
    """Engine name -> "available" or the reason it is not (for ``lipsyncd doctor``).

    Nothing is loaded: engines are imported, and the wav2lip checkpoint is only checked
    to be a readable file (whether it holds the right weights shows when it loads).
    """
    report: dict[str, str] = {}
    for key in ENGINES:
        try:
            _engine_class(key)
        except EngineUnavailableError as e:
            report[key] = f"unavailable: {e.message}"
            continue
        report[key] = "available"
    if report.get("wav2lip") == "available":
        if checkpoint is None:
            report["wav2lip"] = "unavailable: no checkpoint configured (render.wav2lip.checkpoint)"
        else:
            path = Path(checkpoint)
            if not path.is_file():
                report["wav2lip"] = f"unavailable: checkpoint {path} not found"
            elif path.stat().st_size == 0:
                report["wav2lip"] = f"unavailable: checkpoint {path} is empty"
    # the engines that read a models folder: is it configured, and are its files there?
    for key, folder in ((MUSETALK, musetalk_models), (LATENTSYNC, latentsync_models)):
        if report.get(key) != "available":
            continue
        if folder is None:
            report[key] = f"unavailable: no models folder configured (render.{key}.models)"
            continue
        try:
            importlib.import_module(f"lipsync.engines.{key}.weights").ModelFiles.find(folder)
        except CheckpointError as e:
            report[key] = f"unavailable: {e}"
    auto_skips: dict[str, str] = {}
    if report.get("latentsync") == "available":
        from lipsync.device import resolve_device
        from lipsync.engines.latentsync.engine import auto_unavailable

        reason = auto_unavailable(resolve_device(device))
        if reason:
            auto_skips["latentsync"] = reason
    if report.get("heygem") == "available" and heygem_servers == 0:
        report["heygem"] = "unavailable: no servers configured (render.heygem.servers)"
    elif report.get("heygem") == "available":
        report["heygem"] = f"available: {heygem_servers} server(s) configured (see the heygem checks)"
    first = next((n for n in AUTO_ORDER if report.get(n) == "available" and n not in auto_skips), None)
    if first is None:
        report["auto"] = f"unavailable: none of {', '.join(AUTO_ORDER)} can be loaded"
    else:
        skipped = [f"{n}: {auto_skips[n]}" if n in auto_skips else n for n in AUTO_ORDER[:AUTO_ORDER.index(first)]]
        joined = ("; " if auto_skips else ", ").join(skipped)
        report["auto"] = f"available: {first}" + (f" ({joined} unavailable)" if skipped else "")
    return report

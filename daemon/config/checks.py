"""Checks that span options: what one option requires of another, and values a type cannot say."""

from __future__ import annotations

import re

from lipsync.engines import HEYGEM, LATENTSYNC, MUSETALK, WAV2LIP
from lipsync.finish.spec import check as check_finish
from lipsync.tts import HEYGEM as TTS_HEYGEM

from daemon.config.sections import Config
from daemon.config.values import is_loopback_bind, parse_rate
from daemon.jobstate import State

WEBHOOK_EVENTS = (State.DONE, State.FAILED)  # the final job states a webhook may ask for


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def cross_checks(cfg: Config, src: str, problems: list[str]) -> None:
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
    if cfg.render.engine == LATENTSYNC and cfg.render.latentsync.models is None:
        problems.append(f"{src}: render.latentsync.models: required when render.engine = \"latentsync\"")
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

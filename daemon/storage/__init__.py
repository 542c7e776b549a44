"""Object storage for finished videos: any S3-compatible store, or an embedded SeaweedFS.

    with open_storage(cfg) as store:      # starts/stops the embedded SeaweedFS when configured
        obj = store.upload_file(path, key, sha256=digest, filename="talk.mp4")
        url, expires_at = store.presign_get(key, lifetime=cfg.links.lifetime, filename="talk.mp4")

The handle forwards the :class:`ObjectStore` API (``upload_file``, ``presign_get``,
``head``, ``list_objects``, ``delete``, ``ping``, ...) and adds :meth:`StorageHandle.store_health`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any

from daemon.config import Config, StorageConfig
from daemon.errors import StorageError
from daemon.storage.credentials import S3Credentials
from daemon.storage.embedded import EmbeddedSeaweed, StoreHealth
from daemon.storage.s3 import (CONTENT_TYPE, MAX_LINK_SECONDS, ObjectStore, StoredObject, content_disposition,
                               retention_days, sha256_file)

__all__ = [
    "CONTENT_TYPE", "MAX_LINK_SECONDS", "EmbeddedSeaweed", "ObjectStore", "S3Credentials", "StorageError",
    "StorageHandle", "StoreHealth", "StoredObject", "content_disposition", "object_key", "open_storage",
    "retention_days", "sha256_file",
]

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120  # keeps keys far below S3's 1024-byte limit, whatever the prefix


def object_key(cfg: Config | StorageConfig, job_id: str, output_name: str, when: datetime) -> str:
    """``<prefix><yyyy>/<mm>/<dd>/<job_id>/<safe name>.mp4`` (date in UTC).

    The name keeps only letters, digits, ``.``, ``_`` and ``-``: accents are dropped
    (``é`` -> ``e``), anything else becomes ``_``, so the key is safe in URLs, shells and
    every store's console. The friendly, unsanitized name travels separately (links).
    """
    storage = cfg.storage if isinstance(cfg, Config) else cfg
    if not _JOB_ID_RE.match(job_id) or job_id in (".", ".."):
        raise ValueError(f"job id {job_id!r} is not safe in an object key (letters, digits, . _ - only)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    day = when.astimezone(timezone.utc).strftime("%Y/%m/%d")
    return f"{storage.prefix}{day}/{job_id}/{safe_output_name(output_name)}"


def safe_output_name(name: str) -> str:
    """``name`` reduced to a safe key charset, always ending in ``.mp4``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if base.lower().endswith(".mp4"):
        base = base[:-4]
    ascii_base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    safe = _UNSAFE_RE.sub("_", ascii_base)
    safe = safe.strip("._-")[:_MAX_NAME].rstrip("._-")  # no hidden files, no "..", no "x..mp4"
    if not safe:
        # nothing letter-like survived (a name in Chinese, say): a short digest keeps two
        # such outputs of one job from landing on the same key
        safe = "video-" + hashlib.sha256(base.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe}.mp4"


class StorageHandle:
    """An open object store; closing it stops the embedded server, if there is one."""

    _FORWARDED = frozenset({"upload_file", "presign_get", "head", "list_objects", "delete", "ping",
                            "ensure_bucket", "set_lifecycle_expiration", "lifecycle_expiration_days",
                            "max_link_lifetime", "bucket", "prefix", "public_endpoint",
                            "list_incomplete_uploads", "incomplete_upload_bytes", "abort_upload",
                            "abort_incomplete_uploads"})

    def __init__(self, store: ObjectStore, embedded: EmbeddedSeaweed | None = None):
        self.store = store
        self.embedded = embedded

    @property
    def endpoint(self) -> str:
        return self.embedded.endpoint if self.embedded else self.store.endpoint

    @property
    def credentials(self) -> S3Credentials | None:
        """The embedded store's credentials (None for an external store)."""
        return self.embedded.credentials if self.embedded else None

    def store_health(self) -> StoreHealth:
        """Cheap, no network: the embedded server's state, or "remote" (use ping())."""
        if self.embedded is None:
            return StoreHealth(ok=True, state="remote")
        return self.embedded.health()

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()

    def __getattr__(self, name: str) -> Any:
        if name in StorageHandle._FORWARDED:
            return getattr(self.store, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __enter__(self) -> StorageHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "embedded" if self.embedded else "s3"
        return f"StorageHandle(mode={mode!r}, endpoint={self.endpoint!r}, bucket={self.store.bucket!r})"


def open_storage(cfg: Config) -> StorageHandle:
    """Open the configured store.

    "embedded": start the supervised SeaweedFS (returns once its S3 API answers) and make
    sure the bucket exists. "s3": only build the client; nothing is contacted, so the
    daemon starts while the store is down (call ``ensure_bucket``/``ping`` when ready).
    """
    if cfg.storage.mode != "embedded":
        return StorageHandle(ObjectStore(cfg))
    embedded = EmbeddedSeaweed.from_config(cfg)
    embedded.start()
    try:
        store = ObjectStore(cfg, credentials=embedded.credentials, endpoint=embedded.endpoint)
        store.ensure_bucket(create=True)
    except BaseException:
        embedded.stop()
        raise
    return StorageHandle(store, embedded)

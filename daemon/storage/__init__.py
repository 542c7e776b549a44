"""Object storage for finished videos: any S3-compatible store, or an embedded SeaweedFS.

    with open_storage(cfg) as handle:     # starts/stops the embedded SeaweedFS when configured
        obj = handle.store.upload_file(path, key, sha256=digest, filename="talk.mp4")
        url, expires_at = handle.store.presign_get(key, lifetime=cfg.links.lifetime, filename="talk.mp4")

``handle.store`` is a :class:`Store` (the contract in :mod:`daemon.storage.store`);
``handle.health()`` reports on the embedded server.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timezone

from daemon.config import Config, StorageConfig
from daemon.errors import StorageError
from daemon.storage.credentials import S3Credentials, credentials_path, load_or_create
from daemon.storage.embedded import EmbeddedSeaweed, StoreHealth
from daemon.storage.store import Store
from daemon.storage.s3 import (CONTENT_TYPE, MAX_LINK_SECONDS, ObjectStore, StoredObject, content_disposition,
                               retention_days, sha256_file)

__all__ = [
    "CONTENT_TYPE", "MAX_LINK_SECONDS", "EmbeddedSeaweed", "ObjectStore", "S3Credentials", "StorageError",
    "StorageHandle", "Store", "StoreHealth", "StoredObject", "content_disposition", "object_key", "open_storage", "open_for_command",
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
    """An open store plus the embedded server behind it, if any; closing stops that server.

    ``store`` is what uploads and links go through; ``health()`` says how the embedded
    server is doing (cheap, no network).
    """

    def __init__(self, store: ObjectStore, embedded: EmbeddedSeaweed | None = None):
        self.store: Store = store
        self.embedded = embedded

    @property
    def endpoint(self) -> str:
        return self.embedded.endpoint if self.embedded else self.store.endpoint

    @property
    def credentials(self) -> S3Credentials | None:
        """The embedded store's credentials (None for an external store)."""
        return self.embedded.credentials if self.embedded else None

    def health(self) -> StoreHealth:
        """The embedded server's state, or "remote" for an external store (use ``store.ping()``)."""
        if self.embedded is None:
            return StoreHealth(ok=True, state="remote")
        return self.embedded.health()

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()

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


@contextlib.contextmanager
def open_for_command(cfg: Config) -> Iterator[Store]:
    """The store for a one-shot command (doctor, cleanup, links refresh).

    With the embedded store, a running daemon already serves it on 127.0.0.1: the command
    joins that server with the generated credentials rather than starting a second one on
    the same data folder -- which would find the live server's pid file and stop it as
    stale. Otherwise it opens the store as the daemon does.
    """
    port = cfg.storage.embedded.port
    if cfg.storage.mode == "embedded" and _listening(port):
        if not credentials_path(cfg.paths.state).exists():
            raise StorageError(f"127.0.0.1:{port} is in use, but {credentials_path(cfg.paths.state)} does not "
                               "exist: that is not this configuration's embedded store (check paths.state and "
                               "storage.embedded.port)", code="storage_setup")
        store = ObjectStore(cfg, credentials=load_or_create(cfg.paths.state), endpoint=f"http://127.0.0.1:{port}")
        store.ping()
        yield store
        return
    with open_storage(cfg) as handle:
        yield handle.store


def connect(cfg: Config) -> Store:
    """The store as a client only -- for the HTTP API, which never runs a store itself.

    "s3": a client of the configured endpoint (nothing is contacted yet). "embedded": a
    client of the SeaweedFS that ``lipsyncd run`` serves on 127.0.0.1 with this state
    folder's credentials; StorageError when no daemon here has ever made them.
    """
    if cfg.storage.mode != "embedded":
        return ObjectStore(cfg)
    path = credentials_path(cfg.paths.state)
    if not path.exists():
        raise StorageError(f"{path} does not exist: the embedded store is run by `lipsyncd run` with this "
                           "state folder (start it first), or use an external store (storage.mode = \"s3\")",
                           code="storage_setup")
    return ObjectStore(cfg, credentials=load_or_create(cfg.paths.state),
                       endpoint=f"http://127.0.0.1:{cfg.storage.embedded.port}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False

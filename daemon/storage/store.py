"""The store contract: what the daemon asks of object storage, whoever provides it.

:class:`daemon.storage.s3.ObjectStore` implements it for any S3-compatible store; the
embedded SeaweedFS (:mod:`daemon.storage.embedded`) is only a server that store talks to.
Code that uploads, signs or deletes takes a :class:`Store`, so a new kind of storage (or a
test double of a closed service) has one list of methods to provide.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload that was started and neither completed nor aborted.

    Its parts occupy (and on cloud S3 are billed as) storage, yet no object listing shows
    them; they go only when the upload is aborted.
    """

    bucket: str
    key: str
    upload_id: str
    initiated: datetime | None  # UTC; None when the store did not say

    def age(self, now: float) -> float | None:
        """Seconds since it was started, or None when unknown."""
        return now - self.initiated.timestamp() if self.initiated is not None else None


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str | None  # None when the store did not say (listings carry no metadata)
    etag: str | None
    last_modified: datetime | None


@runtime_checkable
class Store(Protocol):
    bucket: str
    prefix: str

    def upload_file(self, path: str | Path, key: str, *, sha256: str,
                    filename: str | None = None) -> StoredObject:
        """Store ``path`` at ``key``; skipped when an identical object (size, sha256) is there."""

    def presign_get(self, key: str, *, lifetime: float, filename: str | None = None,
                    disposition: str | None = None) -> tuple[str, datetime]:
        """A link anyone can open until the returned time ("inline" plays, "attachment" saves;
        None: as links.content_disposition says)."""

    def head(self, key: str) -> StoredObject | None:
        """The object at ``key``, or None when there is none."""

    def list_objects(self, prefix: str | None = None) -> Iterator[StoredObject]: ...

    def delete(self, key: str) -> None: ...

    def list_incomplete_uploads(self, prefix: str | None = None) -> Iterator[IncompleteUpload]: ...

    def incomplete_upload_bytes(self, upload: IncompleteUpload) -> int: ...

    def abort_upload(self, upload: IncompleteUpload) -> None: ...

    def ping(self) -> None:
        """StorageError when the store cannot be reached or the bucket is not usable."""

    def ensure_bucket(self, *, create: bool | None = None) -> None: ...

    def set_lifecycle_expiration(self, days: int, prefix: str | None = None, *,
                                 abort_incomplete_days: int = 0) -> None:
        """A bucket rule deleting objects under ``prefix`` after ``days``; StorageError
        with code ``lifecycle_unsupported`` where the store has no such rules."""

    def lifecycle_expiration_days(self) -> int | None: ...

    def max_link_lifetime(self) -> float:
        """The longest link the current credentials can sign, in seconds."""

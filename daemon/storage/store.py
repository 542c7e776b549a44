"""The store contract: what the daemon asks of object storage, whoever provides it.

:class:`daemon.storage.s3.ObjectStore` implements it for any S3-compatible store; the
embedded SeaweedFS (:mod:`daemon.storage.embedded`) is only a server that store talks to.
Code that uploads, signs or deletes takes a :class:`Store`, so a new kind of storage (or a
test double of a closed service) has one list of methods to provide.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from daemon.storage.s3 import IncompleteUpload, StoredObject


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

"""Resumable uploads on disk: what the tus 1.0 routes (:mod:`daemon.api.routes.uploads`)
keep, and what a submission's ``*_upload`` field takes.

An upload is two files in ``<inbox>/.lipsyncd/uploads/`` (on the inbox's filesystem, so a
job takes the bytes by rename): ``ID`` holds the bytes received so far -- its size *is*
the upload's offset, so a server killed mid-request resumes exactly where the disk says --
and ``ID.info`` the declared length, the metadata and the owner. An upload belongs to
the key that created it; to every other key it does not exist.

Appending never writes past the declared length: a body that would is cut back to the
offset it started from and refused. One request at a time appends to an upload (an
exclusive ``flock`` on its file, which NFS honours); a second one is told 423 Locked.
Uploads nobody touched for ``api.upload_expiry`` are swept away.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from daemon.atomic import write_atomic

FORMAT = "lipsyncd.upload/1"
MAX_METADATA = 4096  # bytes of the Upload-Metadata header


class UploadRefused(Exception):
    """An upload request that cannot be honoured: ``status`` and ``code`` for the answer."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Upload:
    id: str
    owner: str
    length: int
    metadata: str  # the Upload-Metadata header as sent (HEAD gives it back)
    filename: str | None  # the "filename" (or "name") entry of the metadata
    data: Path
    info: Path

    @property
    def offset(self) -> int:
        try:
            return os.stat(self.data).st_size
        except FileNotFoundError:
            return 0

    def expires_at(self, expiry: float) -> float:
        try:
            return os.stat(self.info).st_mtime + expiry
        except FileNotFoundError:
            return time.time()


def parse_metadata(header: str) -> dict[str, str]:
    """tus ``Upload-Metadata``: ``key base64,key base64,...`` -> {key: text}."""
    if len(header.encode("latin-1", "replace")) > MAX_METADATA:
        raise UploadRefused(400, "bad_metadata", f"Upload-Metadata: longer than {MAX_METADATA} bytes")
    out: dict[str, str] = {}
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        if not key or not key.isascii() or not key.isprintable() or key in out:
            raise UploadRefused(400, "bad_metadata", f"Upload-Metadata: {key[:40]!r} is not a usable key "
                                "(printable ASCII, each key once)")
        try:
            raw = base64.b64decode(value.strip(), validate=True) if value.strip() else b""
        except (binascii.Error, ValueError):
            raise UploadRefused(400, "bad_metadata", f"Upload-Metadata: the value of {key!r} is not base64") from None
        out[key] = raw.decode("utf-8", "replace")
    return out


class UploadStore:
    def __init__(self, folder: Path, *, max_size: int, expiry: float):
        self.folder = folder
        self.max_size = max_size
        self.expiry = expiry

    def create(self, owner: str, length: int, metadata: str) -> Upload:
        if length > self.max_size:
            raise UploadRefused(413, "too_large", f"Upload-Length: {length} bytes is more than limits.max_file_size "
                                f"({self.max_size} bytes)")
        values = parse_metadata(metadata) if metadata else {}
        self.folder.mkdir(parents=True, exist_ok=True)
        uid = secrets.token_hex(16)
        upload = self._upload(uid, owner, length, metadata, values.get("filename") or values.get("name"))
        with open(upload.data, "xb"):
            pass
        write_atomic(upload.info, json.dumps({
            "format": FORMAT, "id": uid, "owner": owner, "length": length, "metadata": metadata,
            "filename": upload.filename, "created_at": time.time()}).encode(), mode=0o600)
        return upload

    def _upload(self, uid: str, owner: str, length: int, metadata: str, filename: str | None) -> Upload:
        return Upload(uid, owner, length, metadata, filename, self.folder / uid, self.folder / f"{uid}.info")

    def get(self, uid: str, owner: str) -> Upload | None:
        """The upload ``uid`` when ``owner`` created it; None otherwise (absent, expired or not theirs).

        ``uid`` has been confined already (:func:`daemon.api.deps.upload_id`)."""
        try:
            info = json.loads((self.folder / f"{uid}.info").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("owner") != owner:
            return None
        if not (self.folder / uid).is_file():
            return None
        return self._upload(uid, owner, int(info.get("length", 0)), str(info.get("metadata") or ""),
                            info.get("filename"))

    @contextlib.contextmanager
    def appending(self, upload: Upload, offset: int) -> Iterator[BinaryIO]:
        """The upload's file, locked, positioned at ``offset`` (which must be the current one)."""
        try:
            fh = open(upload.data, "r+b")
        except FileNotFoundError:
            raise UploadRefused(404, "not_found", "no such upload") from None
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UploadRefused(423, "locked", "another request is sending this upload; "
                                        "wait for it, then ask where it stands (HEAD)") from None
                raise
            current = os.fstat(fh.fileno()).st_size
            if offset != current:
                raise UploadRefused(409, "offset_mismatch", f"Upload-Offset: {offset} is not where the upload "
                                    f"stands ({current}); ask with HEAD and continue from there")
            fh.seek(offset)
            try:
                yield fh
            finally:
                fh.flush()
                os.utime(upload.info)  # activity keeps an upload from expiring

    def remove(self, upload: Upload) -> None:
        try:
            with open(upload.data, "r+b") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise UploadRefused(423, "locked", "the upload is being sent; try again when that ends") from None
                upload.info.unlink(missing_ok=True)
                upload.data.unlink(missing_ok=True)
        except FileNotFoundError:
            upload.info.unlink(missing_ok=True)

    def take(self, uid: str, owner: str, target: Path) -> Upload:
        """Move a finished upload's bytes to ``target`` (a job takes them; used once)."""
        upload = self.get(uid, owner)
        if upload is None:
            raise UploadRefused(404, "unknown_upload", f"no upload {uid} (finished uploads are kept "
                                "api.upload_expiry, and each is used once)")
        if upload.offset != upload.length:
            raise UploadRefused(409, "upload_incomplete", f"upload {uid} has {upload.offset} of {upload.length} "
                                "bytes; finish it first (HEAD then PATCH)")
        try:
            os.rename(upload.data, target)
        except FileNotFoundError:
            raise UploadRefused(404, "unknown_upload", f"upload {uid} was used by another job") from None
        upload.info.unlink(missing_ok=True)
        return upload

    def sweep(self, now: float | None = None) -> int:
        """Delete uploads untouched for ``expiry`` seconds (and stray files of broken ones)."""
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for e in entries:
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                stamp = e.stat(follow_symlinks=False).st_mtime
                if e.name.endswith(".info"):
                    data = self.folder / e.name[: -len(".info")]
                    if data.exists():
                        stamp = max(stamp, data.stat().st_mtime)
                elif (self.folder / f"{e.name}.info").exists():
                    continue  # judged with its .info
                if now - stamp > self.expiry:
                    os.unlink(e.path)
                    if e.name.endswith(".info"):
                        (self.folder / e.name[: -len(".info")]).unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

"""The S3 client: idempotent uploads, presigned links, listing and bucket housekeeping.

Works with any S3-compatible store (AWS, MinIO, SeaweedFS, Ceph RGW, R2). Every boto or
network failure leaves this module as :class:`daemon.errors.StorageError` whose message
names the endpoint, bucket and key, and never contains a credential or a signed URL.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from daemon.config import Config
from daemon.errors import StorageError
from daemon.logsetup import get_logger
from daemon.storage.credentials import S3Credentials
from daemon.storage.store import IncompleteUpload, StoredObject
from daemon.storage.s3_errors import (MALFORMED_RULE, NO_SUCH_UPLOAD, NOT_FOUND, UNSUPPORTED, describe, error_code_of,
                                      job_code, redact_signatures)

log = get_logger(__name__)

CONTENT_TYPE = "video/mp4"
SHA256_METADATA = "sha256"  # sent as x-amz-meta-sha256
MAX_LINK_SECONDS = 7 * 86400  # SigV4 refuses presigned URLs valid longer than 7 days
# A link must not outlive the temporary credentials that signed it; this margin absorbs
# clock skew between us and the store.
CREDENTIAL_EXPIRY_MARGIN = 60.0
LIFECYCLE_RULE_ID = "lipsyncd-expire"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
def sha256_file(path: str | Path, *, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def content_disposition(disposition: str, filename: str | None) -> str:
    """A Content-Disposition value (RFC 6266) that every browser understands.

    Non-ASCII names go in ``filename*`` (RFC 5987, UTF-8 percent-encoded), with an ASCII
    approximation in ``filename`` for old clients; the value itself is pure ASCII, as
    HTTP headers must be.
    """
    if disposition not in ("inline", "attachment"):
        raise ValueError(f"content disposition must be 'inline' or 'attachment', not {disposition!r}")
    if not filename:
        return disposition
    name = filename.replace("\r", " ").replace("\n", " ").replace("/", "_").replace("\\", "_")
    # accents fall away (ä -> a); characters with no ASCII form become _
    fallback = "".join(c if c.isascii() else "_" for c in unicodedata.normalize("NFKD", name)
                       if not unicodedata.combining(c))
    fallback = re.sub(r"[\x00-\x1f\x7f\"%;\\]", "_", fallback).strip() or "video.mp4"
    if fallback == name:
        return f'{disposition}; filename="{name}"'
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class ObjectStore:
    """One bucket of one S3-compatible store.

    Credentials come from the standard AWS chain (environment, profile, instance role)
    unless ``credentials`` is given (only the embedded store does that). ``endpoint``
    overrides storage.endpoint (the embedded store's address). Thread-safe.
    """

    def __init__(self, cfg: Config, *, credentials: S3Credentials | None = None,
                 endpoint: str | None = None):
        st = cfg.storage
        self.bucket = st.bucket
        self.prefix = st.prefix
        self.endpoint = endpoint if endpoint is not None else st.endpoint
        self.public_endpoint = st.public_endpoint or self.endpoint
        self._disposition = cfg.links.content_disposition
        self._create_bucket = st.create_bucket
        self._explicit = credentials
        if credentials is not None:
            self._session = boto3.session.Session(aws_access_key_id=credentials.access_key,
                                                  aws_secret_access_key=credentials.secret_key,
                                                  region_name=st.region)
        else:
            self._session = boto3.session.Session(region_name=st.region)

        def client(url: str, attempts: int, connect: float, read: float) -> Any:
            conf = BotoConfig(
                signature_version="s3v4",
                region_name=st.region,
                s3={"addressing_style": st.addressing},  # "path" | "virtual" | "auto", as botocore spells them
                retries={"mode": "standard", "max_attempts": attempts},
                connect_timeout=connect,
                read_timeout=read,
                # newer botocore adds CRC checksums by default, which several non-AWS
                # stores reject or mangle; send and check them only where S3 requires it
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                user_agent_extra="lipsyncd",
                # a proxy from the environment cannot reach a store on our own loopback
                proxies={} if _is_loopback(url) else None,
            )
            return self._session.client("s3", endpoint_url=url or None, config=conf)

        self._client = client(self.endpoint, st.max_attempts, st.connect_timeout, st.read_timeout)
        # links are signed for the host users open (a proxy/CDN); SigV4 covers the host
        self._public = client(self.public_endpoint, st.max_attempts, st.connect_timeout, st.read_timeout)
        # health checks answer fast and leave retrying to the caller
        self._probe = client(self.endpoint, 1, min(st.connect_timeout, 3.0), min(st.read_timeout, 5.0))
        self._transfer = TransferConfig(multipart_threshold=st.multipart_threshold,
                                        multipart_chunksize=st.multipart_chunksize,
                                        max_concurrency=4, use_threads=True)
        self._lock = threading.Lock()
        self.uploads_done = 0
        self.uploads_skipped = 0

    def __repr__(self) -> str:
        return f"ObjectStore(endpoint={self._where()!r}, bucket={self.bucket!r})"

    # ---------------------------------------------------------------- objects
    def upload_file(self, path: str | Path, key: str, *, sha256: str,
                    filename: str | None = None) -> StoredObject:
        """Upload ``path`` as ``key`` unless the same content is already stored there.

        "The same" is: same size and the same sha256 metadata. That makes a retry after a
        crash between upload and bookkeeping free, and never uploads a video twice.
        """
        path = Path(path)
        if not _SHA256_RE.match(sha256 or ""):
            raise ValueError(f"{path}: sha256 must be 64 lower-case hex digits, got {sha256!r}")
        size = path.stat().st_size
        existing = self.head(key)
        if existing is not None and existing.size == size and existing.sha256 == sha256:
            with self._lock:
                self.uploads_skipped += 1
            log.info("upload skipped: identical object already stored", bucket=self.bucket, key=key, size=size,
                     reason="already stored with the same sha256")
            return existing
        extra: dict[str, Any] = {"ContentType": CONTENT_TYPE, "Metadata": {SHA256_METADATA: sha256}}
        if filename:
            extra["ContentDisposition"] = content_disposition(self._disposition, filename)
        try:
            self._client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self._transfer)
        except (BotoCoreError, ClientError, Boto3Error) as e:
            raise self._error(f"upload of {path.name}", e, key) from None
        stored = self.head(key)
        if stored is None or stored.size != size:
            got = "nothing" if stored is None else f"{stored.size} bytes"
            raise StorageError(f"upload of {path.name} to {self._where(key)}: the store holds {got} "
                               f"after the upload, expected {size} bytes", code="storage_unavailable")
        if stored.sha256 != sha256:
            log.warning("object metadata dropped", bucket=self.bucket, key=key,
                        consequence="the store did not keep x-amz-meta-sha256; repeated uploads cannot be skipped")
        with self._lock:
            self.uploads_done += 1
        log.info("object uploaded", bucket=self.bucket, key=key, size=size,
                 multipart=size >= self._transfer.multipart_threshold)
        return stored

    def head(self, key: str) -> StoredObject | None:
        try:
            r = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if error_code_of(e) in NOT_FOUND:
                return None
            raise self._error("HEAD", e, key) from None
        except BotoCoreError as e:
            raise self._error("HEAD", e, key) from None
        meta = {k.lower(): v for k, v in (r.get("Metadata") or {}).items()}
        return StoredObject(self.bucket, key, int(r.get("ContentLength", 0)), meta.get(SHA256_METADATA),
                            _etag(r.get("ETag")), _utc(r.get("LastModified")))

    def list_objects(self, prefix: str | None = None, *, page_size: int = 1000) -> Iterator[StoredObject]:
        """Every object under ``prefix`` (None: the configured storage.prefix; "": all).

        Listings carry no metadata, so ``sha256`` is None; use :meth:`head` for it.
        """
        prefix = self.prefix if prefix is None else prefix
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
        try:
            for page in pages:
                for o in page.get("Contents", []):
                    yield StoredObject(self.bucket, o["Key"], int(o.get("Size", 0)), None,
                                       _etag(o.get("ETag")), _utc(o.get("LastModified")))
        except (BotoCoreError, ClientError) as e:
            raise self._error("listing", e, f"{prefix}*") from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise self._error("delete", e, key) from None

    # ---------------------------------------------------------------- unfinished uploads
    def list_incomplete_uploads(self, prefix: str | None = None, *,
                                page_size: int = 1000) -> Iterator[IncompleteUpload]:
        """Multipart uploads under ``prefix`` (None: storage.prefix; "": all) that were
        started and never completed or aborted: an upload killed mid-way leaves one."""
        prefix = self.prefix if prefix is None else prefix
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
        try:
            for page in pages:
                for u in page.get("Uploads", []):
                    yield IncompleteUpload(self.bucket, u["Key"], u["UploadId"], _utc(u.get("Initiated")))
        except (BotoCoreError, ClientError) as e:
            raise self._error("listing unfinished uploads", e, f"{prefix}*") from None

    def incomplete_upload_bytes(self, upload: IncompleteUpload) -> int:
        """Bytes the parts uploaded so far occupy (0 when the upload is already gone)."""
        pages = self._client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=upload.key,
                                                                  UploadId=upload.upload_id)
        try:
            return sum(int(part.get("Size", 0)) for page in pages for part in page.get("Parts", []))
        except ClientError as e:
            if error_code_of(e) in NO_SUCH_UPLOAD:
                return 0
            raise self._error("listing the parts of an unfinished upload", e, upload.key) from None
        except BotoCoreError as e:
            raise self._error("listing the parts of an unfinished upload", e, upload.key) from None

    def abort_upload(self, upload: IncompleteUpload) -> None:
        """Abort one unfinished upload, freeing its parts; one already gone is not an error."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=upload.key, UploadId=upload.upload_id)
        except ClientError as e:
            if error_code_of(e) not in NO_SUCH_UPLOAD:
                raise self._error("aborting an unfinished upload", e, upload.key) from None
        except BotoCoreError as e:
            raise self._error("aborting an unfinished upload", e, upload.key) from None

    def abort_incomplete_uploads(self, older_than: float, prefix: str | None = None, *,
                                 now: float | None = None) -> list[IncompleteUpload]:
        """Abort the unfinished uploads under ``prefix`` started more than ``older_than``
        seconds before ``now`` (default: the current time); returns those aborted.

        Younger ones, and any whose start time the store does not report, are kept: they
        may be uploads in progress on another host.
        """
        now = time.time() if now is None else now
        aborted = []
        for upload in list(self.list_incomplete_uploads(prefix)):
            age = upload.age(now)
            if age is not None and age > older_than:
                self.abort_upload(upload)
                log.info("stale multipart upload aborted", bucket=self.bucket, key=upload.key, initiated=str(upload.initiated))
                aborted.append(upload)
        return aborted

    # ---------------------------------------------------------------- links
    def presign_get(self, key: str, *, lifetime: float, filename: str | None = None,
                    disposition: str | None = None) -> tuple[str, datetime]:
        """A SigV4 GET link for ``key`` on the public endpoint, and when it expires (UTC).

        The lifetime is capped at 7 days and at :meth:`max_link_lifetime`.
        """
        seconds = int(min(float(lifetime), self.max_link_lifetime()))
        if seconds < 1:
            raise StorageError(f"cannot sign a link for {self._where(key)}: the credentials expire "
                               "too soon (or the requested lifetime is below one second)",
                               code="storage_credentials")
        params = {"Bucket": self.bucket, "Key": key,
                  "ResponseContentDisposition": content_disposition(disposition or self._disposition, filename)}
        # taken before signing, so the reported expiry is never later than the real one
        signed_at = datetime.now(timezone.utc).replace(microsecond=0)
        try:
            url = self._public.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        except (BotoCoreError, ClientError) as e:
            raise self._error("signing a link", e, key) from None
        return url, signed_at + timedelta(seconds=seconds)

    def max_link_lifetime(self) -> float:
        """Seconds a link signed now can stay valid: 7 days, or less when the credentials
        are temporary (session token, assumed role) and expire sooner."""
        creds = self._session.get_credentials()
        if creds is None or getattr(creds, "_expiry_time", None) is None:
            return float(MAX_LINK_SECONDS)
        try:
            creds.get_frozen_credentials()  # refreshes them first when they are about to expire
        except (BotoCoreError, ClientError) as e:
            raise self._error("refreshing credentials", e) from None
        expiry = getattr(creds, "_expiry_time", None)
        if expiry is None:
            return float(MAX_LINK_SECONDS)
        left = (expiry - datetime.now(timezone.utc)).total_seconds() - CREDENTIAL_EXPIRY_MARGIN
        return max(0.0, min(float(MAX_LINK_SECONDS), left))

    # ---------------------------------------------------------------- bucket
    def ping(self) -> None:
        """Raise StorageError unless the bucket answers now (one try, short timeouts)."""
        try:
            self._probe.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as e:
            raise self._error("ping", e) from None

    def ensure_bucket(self, *, create: bool | None = None) -> None:
        """Make sure the bucket exists; create it when missing and ``create`` (default:
        storage.create_bucket) allows it."""
        create = self._create_bucket if create is None else create
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as e:
            if error_code_of(e) not in NOT_FOUND:
                raise self._error("checking the bucket", e) from None
        except BotoCoreError as e:
            raise self._error("checking the bucket", e) from None
        if not create:
            raise StorageError(f"bucket {self.bucket!r} does not exist at {self._where()}; create it "
                               "or set storage.create_bucket = true", code="bucket_missing")
        args: dict[str, Any] = {"Bucket": self.bucket}
        region = self._client.meta.region_name
        if region and region != "us-east-1":  # us-east-1 is the one region that refuses the constraint
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**args)
            log.info("bucket created", bucket=self.bucket, endpoint=self.endpoint or "AWS")
        except ClientError as e:
            if error_code_of(e) != "BucketAlreadyOwnedByYou":
                raise self._error("creating the bucket", e) from None
        except BotoCoreError as e:
            raise self._error("creating the bucket", e) from None

    def set_lifecycle_expiration(self, days: int, prefix: str | None = None, *,
                                 abort_incomplete_days: int = 0) -> None:
        """Install (``days`` >= 1) or remove (``days`` == 0) our expiration rule.

        With ``abort_incomplete_days`` >= 1 the rule also aborts multipart uploads left
        unfinished that many days after they started (a store that refuses that part gets
        the expiration alone, with a warning). Other lifecycle rules on the bucket are
        kept. Raises StorageError with code ``lifecycle_unsupported`` when the store has no
        lifecycle support.
        """
        if not isinstance(days, int) or days < 0:
            raise ValueError(f"lifecycle expiration needs whole days >= 0, got {days!r}")
        if not isinstance(abort_incomplete_days, int) or abort_incomplete_days < 0:
            raise ValueError(f"aborting unfinished uploads needs whole days >= 0, got {abort_incomplete_days!r}")
        prefix = self.prefix if prefix is None else prefix
        current = self._lifecycle_rules()
        rules = [r for r in current if r.get("ID") != LIFECYCLE_RULE_ID]
        if not days:
            self._put_lifecycle_rules(rules, current)
            return
        ours = {"ID": LIFECYCLE_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": prefix},
                "Expiration": {"Days": days}}
        if abort_incomplete_days:
            abort = {"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_incomplete_days}}
            if self._put_lifecycle_rules(rules + [{**ours, **abort}], current, refusal_ok=True):
                return
            log.warning("lifecycle rule for unfinished uploads refused", bucket=self.bucket,
                        consequence="the rule only expires old videos; cleanup still aborts unfinished uploads")
        self._put_lifecycle_rules(rules + [ours], current)

    def _put_lifecycle_rules(self, rules: list[dict], current: list[dict], *, refusal_ok: bool = False) -> bool:
        """Write ``rules`` (none: delete the configuration); False when ``refusal_ok`` and
        the store refused a rule as malformed."""
        try:
            if rules:
                self._client.put_bucket_lifecycle_configuration(Bucket=self.bucket,
                                                                LifecycleConfiguration={"Rules": rules})
            elif current:
                self._client.delete_bucket_lifecycle(Bucket=self.bucket)
        except ClientError as e:
            if error_code_of(e) in UNSUPPORTED:
                raise self._unsupported_lifecycle() from None
            if refusal_ok and error_code_of(e) in MALFORMED_RULE:
                return False
            raise self._error("writing lifecycle rules", e) from None
        except BotoCoreError as e:
            raise self._error("writing lifecycle rules", e) from None
        return True

    def lifecycle_expiration_days(self) -> int | None:
        """Days of our expiration rule, or None when there is none."""
        for rule in self._lifecycle_rules():
            if rule.get("ID") == LIFECYCLE_RULE_ID:
                return rule.get("Expiration", {}).get("Days")
        return None

    def _lifecycle_rules(self) -> list[dict]:
        try:
            return self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError as e:
            if error_code_of(e) == "NoSuchLifecycleConfiguration":
                return []
            if error_code_of(e) in UNSUPPORTED:
                raise self._unsupported_lifecycle() from None
            raise self._error("reading lifecycle rules", e) from None
        except BotoCoreError as e:
            raise self._error("reading lifecycle rules", e) from None

    # ---------------------------------------------------------------- errors
    def _where(self, key: str | None = None) -> str:
        host = self.endpoint or f"AWS S3 ({self._client.meta.region_name})"
        return f"s3://{self.bucket}/{key} at {host}" if key else f"bucket {self.bucket!r} at {host}"

    def _unsupported_lifecycle(self) -> StorageError:
        return StorageError(f"the store at {self._where()} does not support bucket lifecycle rules; "
                            "old videos are only removed by lipsyncd's own cleanup", code="lifecycle_unsupported")

    def _error(self, what: str, exc: BaseException, key: str | None = None) -> StorageError:
        text = f"{what} failed for {self._where(key)}: {describe(exc)}"
        return StorageError(self._scrub(text), code=job_code(exc))

    def _scrub(self, text: str) -> str:
        """Remove every credential we know of, and any signature, from ``text``."""
        text = redact_signatures(text)
        for secret in self._known_secrets():
            if secret and len(secret) >= 4:
                text = text.replace(secret, "<redacted>")
        return text

    def _known_secrets(self) -> list[str]:
        found = [os.environ.get(n, "") for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")]
        if self._explicit is not None:
            found += [self._explicit.access_key, self._explicit.secret_key]
        creds = self._session.get_credentials()
        if creds is not None:
            # the stored values, not the properties: on refreshable credentials those may
            # start a network refresh in the middle of reporting an error
            stored = vars(creds)
            found += [stored.get(f"_{n}") or stored.get(n) or "" for n in ("access_key", "secret_key", "token")]
        return found


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "") if url else ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(timezone.utc) if value is not None else None


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def retention_days(seconds: float) -> int:
    """Whole days (at least 1) covering ``seconds``: lifecycle rules count in days."""
    return max(1, math.ceil(seconds / 86400))

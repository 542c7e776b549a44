"""What a store's refusals mean: the codes S3-compatible stores answer with, and a failure
told the way a user can act on it (no credential, no signed URL in the text)."""

from __future__ import annotations

import re

from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError,
                                 ReadTimeoutError)

NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
NO_SUCH_UPLOAD = {"NoSuchUpload", "404"}
UNSUPPORTED = {"NotImplemented", "MethodNotAllowed", "501", "405"}
# how stores refuse a lifecycle rule element they do not know
MALFORMED_RULE = {"MalformedXML", "InvalidArgument", "InvalidRequest"}
# signed query parameters are bearer tokens: a leaked link is a leaked video
SIGNED_QUERY_RE = re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId)=[^&\s\"']+",
                              re.I)


def error_code_of(e: ClientError) -> str:
    err = e.response.get("Error", {})
    return str(err.get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        msg = err.get("Message") or ""
        return f"{err.get('Code', 'error')} (HTTP {status}){': ' + msg if msg else ''}"
    if isinstance(exc, NoCredentialsError):
        return ("no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "an AWS profile, or run with an instance role)")
    if isinstance(exc, EndpointConnectionError):
        return "cannot connect (is the store running and the endpoint right?)"
    if isinstance(exc, ConnectTimeoutError):
        return "connection timed out"
    if isinstance(exc, ReadTimeoutError):
        return "no answer before storage.read_timeout"
    return f"{type(exc).__name__}: {exc}"


def job_code(exc: BaseException) -> str:
    if isinstance(exc, NoCredentialsError):
        return "storage_credentials"
    if isinstance(exc, ClientError) and error_code_of(exc) in {"AccessDenied", "InvalidAccessKeyId",
                                                        "SignatureDoesNotMatch", "403"}:
        return "storage_access_denied"
    return "storage_unavailable"


def redact_signatures(text: str) -> str:
    """``text`` with every signed query parameter's value replaced."""
    return SIGNED_QUERY_RE.sub(lambda m: f"{m.group(1)}=<redacted>", text)

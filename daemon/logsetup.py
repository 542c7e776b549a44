"""The one place logging is configured (structlog on top of the standard library).

Off a terminal (systemd, cron, a pipe) every line is one JSON object on stdout, which
journald stores as-is; on a terminal the output is the readable console format. Lines
logged by libraries through :mod:`logging` (boto3, watchdog, ...) go through the same
renderer, so the journal never mixes formats.

Context bound with :func:`bind_job` (structlog.contextvars) appears on every line logged
while it is bound, from any module, so one job's lines can be pulled out of the journal by
``job_id``.

Presigned URLs and credentials must never reach the journal: the redaction step below
strips signature query strings from every string value and masks values of secret-named
keys, as a safety net behind code that logs bucket and key instead of links.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import structlog
import structlog.tracebacks

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# chatty libraries: their INFO lines (connection pools, inotify events) drown the job lines
_QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "watchdog", "numba", "apscheduler", "PIL")

_SECRET_KEY_RE = re.compile(r"(secret|password|passwd|token|credential|access_key|authorization)", re.I)
# a query string carrying an S3 signature (SigV4 or SigV2) or a security token
_SIGNED_QUERY_RE = re.compile(r"\?[^\s\"'<>]*(X-Amz-(Signature|Credential|Security-Token)|Signature=|AWSAccessKeyId=)[^\s\"'<>]*",
                              re.I)
_AWS_SECRET_ASSIGN_RE = re.compile(r"(aws_secret_access_key|aws_session_token|secret_key)\s*[=:]\s*\S+", re.I)
REDACTED = "<redacted>"


def redact_text(text: str) -> str:
    """``text`` with signed query strings and secret assignments masked."""
    text = _SIGNED_QUERY_RE.sub("?" + REDACTED, text)
    return _AWS_SECRET_ASSIGN_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if _SECRET_KEY_RE.search(key) and value:
            return REDACTED
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(key, v) for v in value)
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: applies :func:`_redact_value` to every field."""
    return {k: (_redact_value(k, v) if k != "event" else redact_text(str(v))) for k, v in event_dict.items()}


def resolve_format(fmt: str, stream: TextIO) -> str:
    if fmt in ("json", "console"):
        return fmt
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> str:
    """Configure structlog and the standard library; returns the format chosen.

    Safe to call again (tests, ``run`` after the config is loaded): it replaces the
    previous configuration instead of adding handlers.
    """
    stream = stream if stream is not None else sys.stdout
    # the process's own stdout/stderr are looked up when a record is emitted, not kept
    standard = "stdout" if stream is sys.stdout else "stderr" if stream is sys.stderr else None
    handler = _StandardStreamHandler(standard) if standard else logging.StreamHandler(stream)
    fmt = resolve_format(fmt, stream)
    numeric = LEVELS.get(level, logging.INFO)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        # no local variables in tracebacks: they may hold credentials or signed links
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False, use_rich=False))
        final: list[Any] = [tracebacks, redact, structlog.processors.JSONRenderer()]
    else:
        final = [structlog.processors.format_exc_info, redact,
                 structlog.dev.ConsoleRenderer(colors=_colors_ok(stream))]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler.setFormatter(formatter)
    handler.set_name("lipsyncd")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "lipsyncd":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.processors.StackInfoRenderer(), structlog.processors.UnicodeDecoder(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return fmt


class _StandardStreamHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is when a record is emitted, not
    the object it was at configure time: a thread still logging after the stream was
    replaced (a test's capture, since closed) must not fail with "I/O operation on closed
    file"."""

    def __init__(self, name: str):
        self._attribute = name  # not _name: logging.Handler keeps its own name there
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return getattr(sys, self._attribute)

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it
        pass


def _colors_ok(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name or "lipsyncd")


@contextlib.contextmanager
def bind_job(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` (job, job_id) to every line logged in this context, then unbind."""
    tokens = structlog.contextvars.bind_contextvars(**fields)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)

"""Webhook notifications when a job is done or failed.

The worker calls a :class:`Notifier` with the job's final sidecar document. Delivery runs
in background threads, so a slow or dead webhook never holds up rendering, and every
failure is logged and swallowed: a notification is a courtesy, the job's result is the
sidecar.

Formats:

* ``json``: the sidecar document, plus ``name``, ``link`` (the first video's permanent link,
  else its presigned URL), ``links`` and ``error_message`` for workflow tools (also used for
  a job's own ``callback_url``);
* ``wecom`` / ``dingtalk``: the chat-robot text message ``{"msgtype": "text", "text":
  {"content": "video ready: talk.mp4 https://..."}}`` that both robots accept, in
  ``notify.language`` (``视频已生成：talk.mp4 https://...``).

Webhook URLs often carry their key in the query string, so logs name only the host.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from daemon.backoff import Backoff
from daemon.config import Config
from daemon.i18n import SOURCE, translations
from daemon.outbox import OutputState, State
from daemon.logsetup import get_logger

log = get_logger(__name__)

FORMATS = ("json", "wecom", "dingtalk")
EVENTS = (State.DONE, State.FAILED)
USER_AGENT = "lipsyncd-webhook/1"
# Chat robots answer 200 with {"errcode": N, "errmsg": ...}; non-zero means not delivered.
_ROBOT_FORMATS = ("wecom", "dingtalk")
# Client errors other than these will not go away by asking again.
_RETRYABLE_4XX = (408, 425, 429)


@dataclass(frozen=True)
class Webhook:
    url: str
    format: str = "json"
    events: tuple[str, ...] = EVENTS

    @property
    def host(self) -> str:
        """What logs may show of the URL: host and port, never path or query."""
        return safe_host(self.url)


class DeliveryError(Exception):
    """One delivery attempt failed. ``retryable`` says whether another attempt may help."""

    def __init__(self, reason: str, *, retryable: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def safe_host(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


# --------------------------------------------------------------------------- messages


def message_text(doc: dict[str, Any], language: str = SOURCE) -> str:
    """The one-glance chat line(s) for a finished or failed job, in ``language``. Names,
    links and the record's error message are quoted as they are."""
    _ = translations(language).gettext
    job = doc.get("job", "?")
    if doc.get("state") == State.FAILED:
        err = doc.get("error") or {}
        reason = err.get("message") or err.get("code") or _("unknown error")
        return _("video failed: {name}: {reason}").format(name=job, reason=reason)
    lines = []
    for out in doc.get("outputs", []):
        name = out.get("name", job)
        if out.get("link"):  # permanent: the chat message stays useful after 7 days
            lines.append(_("video ready: {name} {link}").format(name=name, link=out["link"]))
        elif out.get("url"):
            until = out.get("url_expires_at")
            line = _("video ready: {name} {link}").format(name=name, link=out["url"])
            if until:
                line += _(" (link valid until {time})").format(time=until.replace("T", " ").replace("Z", " UTC"))
            lines.append(line)
        elif out.get("state") == OutputState.FAILED:
            lines.append(_("video failed: {name}: {reason}").format(name=name,
                                                                    reason=out.get("error") or _("render failed")))
    return "\n".join(lines) or _("video ready: {name}").format(name=job)


def render_payload(fmt: str, doc: dict[str, Any], language: str = SOURCE) -> dict[str, Any]:
    if fmt == "json":
        # the sidecar, plus flat fields a workflow tool (Dify, Zapier, n8n) can map without
        # walking the outputs: the first video's link, every link, the error message, and the
        # chat line in the configured language
        links = [o.get("link") or o.get("url") for o in doc.get("outputs", []) if o.get("link") or o.get("url")]
        err = doc.get("error") or {}
        return {**doc, "name": doc.get("job"), "link": links[0] if links else None, "links": links,
                "error_message": err.get("message"), "text": message_text(doc, language)}
    if fmt in _ROBOT_FORMATS:
        return {"msgtype": "text", "text": {"content": message_text(doc, language)}}
    raise ValueError(f"unknown webhook format {fmt!r} (use one of {', '.join(FORMATS)})")


def webhooks_for(configured: Iterable[Webhook], doc: dict[str, Any]) -> list[Webhook]:
    """The webhooks that want this job's event: configured ones plus its own callback_url."""
    event = doc.get("state")
    if event not in EVENTS:
        return []
    hooks = [h for h in configured if event in h.events]
    callback = (doc.get("options") or {}).get("callback_url")
    if callback:
        if _is_http_url(callback):
            hooks.append(Webhook(callback, "json", EVENTS))
        else:
            log.warning("callback_url ignored", job=doc.get("job"), reason="not an http(s) URL")
    return hooks


def _is_http_url(url: object) -> bool:
    try:
        return isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and bool(urlsplit(url).hostname)
    except ValueError:
        return False


def configured_webhooks(cfg: Config) -> list[Webhook]:
    return [Webhook(url=h["url"], format=h.get("format", "json"), events=tuple(h.get("events", EVENTS)))
            for h in cfg.notify.webhooks]


# --------------------------------------------------------------------------- delivery


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without body and call it a success.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post_once(hook: Webhook, payload: dict[str, Any], *, timeout: float) -> None:
    """One POST; raise :class:`DeliveryError` with a reason that never contains the URL."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    req = urllib.request.Request(hook.url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
    })
    try:
        with _opener.open(req, timeout=timeout) as resp:
            answer = resp.read(64 * 1024)
    except urllib.error.HTTPError as e:
        retryable = e.code >= 500 or e.code in _RETRYABLE_4XX
        raise DeliveryError(f"HTTP {e.code}", retryable=retryable) from None
    except urllib.error.URLError as e:
        raise DeliveryError(_describe(e.reason)) from None
    except (TimeoutError, OSError) as e:
        raise DeliveryError(_describe(e)) from None
    except ValueError:
        raise DeliveryError("malformed URL", retryable=False) from None
    if hook.format in _ROBOT_FORMATS:
        _check_robot_answer(answer)


def _check_robot_answer(answer: bytes) -> None:
    try:
        reply = json.loads(answer or b"{}")
    except ValueError:
        return  # not a robot answer we understand; HTTP said 2xx
    code = reply.get("errcode", 0) if isinstance(reply, dict) else 0
    if code not in (0, "0"):
        raise DeliveryError(f"robot answered errcode {code}: {str(reply.get('errmsg', ''))[:200]}")


def _describe(reason: object) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__


class Notifier:
    """Callable the worker runs with every final sidecar; returns at once.

    ``backoff`` is the first pause between attempts (doubling each time, at most
    ``backoff_max``). :meth:`close` lets pending deliveries finish (at shutdown).
    """

    def __init__(self, webhooks: Iterable[Webhook] = (), *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 2.0, backoff_max: float = 60.0, threads: int = 4, language: str = SOURCE):
        self.webhooks = list(webhooks)
        self.language = language
        for h in self.webhooks:
            if h.format not in FORMATS:
                raise ValueError(f"webhook {h.host}: unknown format {h.format!r}")
        self.timeout = timeout
        self.retries = retries
        self.backoff = Backoff(backoff, backoff_max)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="notify")
        self._pending: set[Future] = set()
        self._lock = threading.Lock()
        self._abort = threading.Event()

    @classmethod
    def from_config(cls, cfg: Config, **kwargs: Any) -> Notifier:
        return cls(configured_webhooks(cfg), timeout=cfg.notify.timeout, retries=cfg.notify.retries,
                   language=cfg.notify.language, **kwargs)

    def __call__(self, doc: dict[str, Any]) -> None:
        try:
            hooks = webhooks_for(self.webhooks, doc)
            for hook in hooks:
                fut = self._pool.submit(self.deliver, hook, doc)
                with self._lock:
                    self._pending.add(fut)
                fut.add_done_callback(self._forget)
        except Exception as e:  # never let a notification problem reach the worker
            log.error("could not queue notification", job=doc.get("job"), error=type(e).__name__)

    def deliver(self, hook: Webhook, doc: dict[str, Any]) -> bool:
        """Deliver one message with retries; True when the webhook accepted it."""
        job, event = doc.get("job"), doc.get("state")
        try:
            payload = render_payload(hook.format, doc, self.language)
        except ValueError as e:
            log.error("webhook failed", job=job, webhook=hook.host, reason=str(e))
            return False
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                post_once(hook, payload, timeout=self.timeout)
            except DeliveryError as e:
                last = attempt == attempts or not e.retryable or self._abort.is_set()
                log.warning("webhook attempt failed", job=job, state=event, webhook=hook.host,
                            attempt=attempt, of=attempts, reason=e.reason, giving_up=last)
                if last:
                    log.error("webhook failed", job=job, state=event, webhook=hook.host, reason=e.reason)
                    return False
                pause = self.backoff.delay(attempt)
                # an expired close() grace cuts the pause short: one last attempt, no long wait
                self._abort.wait(pause)
                continue
            except Exception as e:  # a bug here must not kill the pool thread silently
                log.error("webhook failed", job=job, state=event, webhook=hook.host, reason=type(e).__name__)
                return False
            log.info("webhook delivered", job=job, state=event, webhook=hook.host, format=hook.format, attempt=attempt)
            return True
        return False

    def _forget(self, fut: Future) -> None:
        with self._lock:
            self._pending.discard(fut)

    def close(self, grace: float = 30.0) -> None:
        """Stop taking messages and give pending ones up to ``grace`` seconds (retries
        included); after that each gets one last attempt without further backoff."""
        with self._lock:
            pending = set(self._pending)
        wait_futures(pending, timeout=grace)
        self._abort.set()
        self._pool.shutdown(wait=True)

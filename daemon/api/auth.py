"""API keys and rate limits.

Keys are random 256-bit tokens (``lsk_...``) shown once by ``lipsyncd api-key create``;
the state folder keeps only their SHA-256 (a key is high-entropy, so a plain hash is as
good as a slow one and costs nothing per request). The key file is re-read when it
changes, so ``api-key revoke`` takes effect at once on a running server.

A key is ``full`` (submit, delete, retry, read) or ``read`` (``--read-only``: only GET
routes; anything else answers 403). Each key (each client address with ``auth = "none"``)
has a token bucket of ``api.rate_limit``; beyond it the answer is 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.atomic import write_atomic
from daemon.timestamps import isotime

KEY_PREFIX = "lsk_"
FORMAT = "lipsyncd.api-keys/1"
SCOPES = ("full", "read")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and scope (``anonymous`` with ``auth = "none"``)."""

    name: str
    scope: str

    @property
    def can_write(self) -> bool:
        return self.scope == "full"


class KeyRing:
    """The hashed keys in ``path``; thread-safe; reloads when the file changes."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, dict[str, Any]] = {}

    # -- administration (the `lipsyncd api-key` command) -------------------------------
    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: not a readable key file: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("keys"), list):
            raise ValueError(f"{self.path}: not a lipsyncd key file (format {FORMAT})")
        return data["keys"]

    def _write(self, keys: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps({"format": FORMAT, "keys": keys}, indent=2) + "\n").encode(), mode=0o600)

    def create(self, name: str, *, scope: str = "full") -> str:
        """A new key called ``name``; returns the key itself (it is not stored)."""
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r}: a key name is 1-64 letters, digits, '.', '_', '@' or '-'")
        if scope not in SCOPES:
            raise ValueError(f"{scope!r}: the scope is one of {', '.join(SCOPES)}")
        keys = self._read()
        if any(k["name"] == name for k in keys):
            raise ValueError(f"a key called {name!r} exists already (revoke it first, or pick another name)")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        keys.append({"name": name, "sha256": _digest(key), "hint": key[:8] + "...", "scope": scope,
                     "created_at": isotime()})
        self._write(keys)
        return key

    def list(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in entry.items() if k != "sha256"} for entry in self._read()]

    def revoke(self, name: str) -> bool:
        keys = self._read()
        kept = [k for k in keys if k["name"] != name]
        if len(kept) == len(keys):
            return False
        self._write(kept)
        return True

    # -- checking (the server) -----------------------------------------------------------
    def lookup(self, key: str) -> Principal | None:
        digest = _digest(key)
        with self._lock:
            self._reload_if_changed()
            entry = self._by_hash.get(digest)
        if entry is None:
            return None
        # the dict lookup found it by hash; compare once more in constant time anyway
        if not hmac.compare_digest(entry["sha256"], digest):
            return None
        return Principal(entry["name"], entry.get("scope", "full"))

    def lookup_digest(self, digest: str) -> Principal | None:
        """The key whose SHA-256 is ``digest`` (a console session names its key this way)."""
        with self._lock:
            self._reload_if_changed()
            entry = self._by_hash.get(digest)
        return Principal(entry["name"], entry.get("scope", "full")) if entry else None

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        try:
            keys = self._read() if stamp else []
        except ValueError:
            keys = []  # a broken file admits nobody (and `lipsyncd doctor` says why)
        self._by_hash = {k["sha256"]: k for k in keys if isinstance(k, dict) and "sha256" in k}
        self._stamp = stamp


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class RateLimiter:
    """A token bucket per caller: ``count`` requests per ``per`` seconds, refilled smoothly."""

    def __init__(self, count: int, per: float, *, clock=time.monotonic):
        self.capacity = float(count)
        self.rate = count / per
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 when ``who`` may go ahead now, else the seconds until the next request is allowed."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[who] = (tokens - 1, now)
                if len(self._buckets) > 10000:  # forget the full buckets of callers long gone
                    self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.capacity - 1}
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1 - tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


# --------------------------------------------------------------------------- console sessions

SESSION_COOKIE = "lipsyncd_session"
SESSION_HOURS = 12
_SESSION_DOMAIN = b"lipsyncd-console-session/1\0"


class Sessions:
    """The web console's sign-in: a cookie naming the key by its hash, signed and dated.

    The key itself never leaves the sign-in form: the cookie holds its SHA-256 (what the
    key file holds anyway), an expiry and an HMAC with the server's link secret. It is a
    session cookie (gone when the browser closes), HttpOnly (no script reads it) and
    SameSite=Strict; revoking the key ends every session made with it at once.
    """

    def __init__(self, secret: bytes, keys: KeyRing, *, clock=time.time):
        self._secret, self._keys, self._clock = secret, keys, clock

    def _tag(self, body: str) -> str:
        return hmac.new(self._secret, _SESSION_DOMAIN + body.encode(), hashlib.sha256).hexdigest()[:32]

    def open(self, key: str) -> str | None:
        """The cookie value for a valid ``key``, else None."""
        if self._keys.lookup(key) is None:
            return None
        body = f"{_digest(key)}.{int(self._clock()) + SESSION_HOURS * 3600}"
        return f"{body}.{self._tag(body)}"

    def check(self, cookie: str | None) -> Principal | None:
        if not cookie or cookie.count(".") != 2:
            return None
        digest, expires, tag = cookie.split(".")
        body = f"{digest}.{expires}"
        if not hmac.compare_digest(tag, self._tag(body)) or not expires.isdigit() or int(expires) < self._clock():
            return None
        return self._keys.lookup_digest(digest)

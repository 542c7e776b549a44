"""Permanent links: ``<api base>/l/<token>``, which never expire while the video exists.

A presigned URL dies after at most 7 days (SigV4) and with the credentials that signed
it. A permanent link instead names the object itself: the token is the object key plus
an HMAC-SHA256 tag (128 bits) made with a secret only the servers know, so a link cannot
be guessed or forged for another object, and needs no table to look up. The API answers
it with a 307 to a freshly signed URL, or 410 once the object is gone.

The secret is generated once into ``<state>/link-secret`` (mode 0600) -- or the file that
``api.link_secret_file`` names -- and every daemon and API server that serves one store
must use the same file: the daemon writes links into sidecars, the API checks them.
Rotating the file revokes every link handed out so far.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from daemon.atomic import write_atomic
from daemon.errors import ConfigError

_TAG_BYTES = 16
_DOMAIN = b"lipsyncd-link/1\0"  # a tag made for anything else can never verify as a link
_SECRET_BYTES = 32


class LinkSigner:
    """Makes and checks the tokens of one secret."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("a link secret needs at least 16 bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "LinkSigner(<secret hidden>)"

    def _tag(self, key: str) -> bytes:
        return hmac.new(self._secret, _DOMAIN + key.encode("utf-8"), hashlib.sha256).digest()[:_TAG_BYTES]

    def derived_key(self, purpose: bytes) -> bytes:
        """A key for another use (console sessions) that reveals nothing of this one."""
        return hmac.new(self._secret, b"lipsyncd-derive\0" + purpose, hashlib.sha256).digest()

    def token(self, key: str) -> str:
        return f"{_b64(key.encode('utf-8'))}.{_b64(self._tag(key))}"

    def key_of(self, token: str) -> str | None:
        """The object key ``token`` was made for, or None when it is not a valid token."""
        if token.count(".") != 1 or len(token) > 2048:
            return None
        body, tag = token.split(".")
        try:
            key = _unb64(body).decode("utf-8")
            given = _unb64(tag)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        return key if hmac.compare_digest(given, self._tag(key)) else None

    def link(self, base_url: str, key: str) -> str:
        return f"{base_url.rstrip('/')}/l/{self.token(key)}"


def load_signer(path: Path, *, create: bool = True) -> LinkSigner:
    """The signer of the secret in ``path``, generating the file (0600) when it is missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise ConfigError([f"{path}: the permanent-link secret is missing; copy it from the host that "
                               "made it (every daemon and API server of one store needs the same file)"]) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path, secrets.token_hex(_SECRET_BYTES).encode() + b"\n", mode=0o600, exclusive=True)
        except FileExistsError:
            pass  # another process made it first: use theirs
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the permanent-link secret: {e.strerror}"]) from None
    if os.stat(path).st_mode & 0o077:
        try:
            os.chmod(path, 0o600)  # a copied file may have come with wider rights
        except OSError:
            pass  # a read-only mount (a Kubernetes Secret): its mode is the mount's to set
    secret = data.strip()
    if len(secret) < 32:
        raise ConfigError([f"{path}: the permanent-link secret is too short (at least 32 characters); "
                           "delete the file to have a new one made (links made with the old one stop working)"])
    return LinkSigner(secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or any(c not in _URLSAFE for c in text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # the last character's spare bits: one link, one spelling
        raise ValueError("not canonical base64url")
    return data


_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

"""Fetching ``audio_url`` / ``template_url`` without becoming a proxy into the private network.

A URL given to the API is fetched by the server, from inside the network it sits in. To
keep that from reaching what only the server can reach (server-side request forgery),
every host is resolved first and *all* its addresses must be public: loopback, private,
carrier-grade NAT, link-local (169.254.169.254, the cloud metadata service), multicast,
reserved and unspecified addresses are refused, IPv4-mapped IPv6 included. The request
then goes to the address that was checked -- the URL's host is only sent as ``Host`` and
as the TLS server name -- so DNS cannot answer differently a moment later (rebinding).
Redirects are followed by hand, at most five, each one checked the same way.

``api.fetch_private_urls = true`` lifts the address rule (trusted networks only). Sizes
are capped by ``limits.max_file_size`` and the whole fetch by ``api.fetch_timeout``.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from daemon.api.drops import clean_filename
from daemon.api.errors import ApiError

MAX_REDIRECTS = 5
_CHUNK = 1024 * 1024
# a URL whose path has no usable extension is named by the type the server declares
_TYPE_EXTENSIONS = {
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/mp4": ".m4a", "audio/x-m4a": ".m4a", "audio/aac": ".aac",
    "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/ogg": ".ogg",
    "video/mp4": ".mp4", "video/quicktime": ".mov", "video/x-matroska": ".mkv", "video/webm": ".webm",
    "image/png": ".png", "image/jpeg": ".jpg",
}


def refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` may not be fetched from, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, why in ((ip.is_loopback, "loopback"), (ip.is_link_local, "link-local (cloud metadata)"),
                      (ip.is_private, "private"), (ip.is_multicast, "multicast"), (ip.is_unspecified, "unspecified"),
                      (ip.is_reserved, "reserved")):
        if test:
            return why
    if not ip.is_global:
        return "not public"
    return None


def check_target(url: str, *, field: str, allow_private: bool) -> list[str]:
    """The checked addresses of ``url``'s host (ApiError 400 when the URL may not be used)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "bad_url", f"{field}: {_shown(url)} is not an http:// or https:// URL", field=field)
    if parts.username or parts.password:
        raise ApiError(400, "bad_url", f"{field}: credentials in the URL are not accepted", field=field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ApiError(400, "bad_url", f"{field}: {_shown(url)} has an invalid port", field=field) from None
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ApiError(400, "bad_url", f"{field}: cannot resolve {parts.hostname}: {e.strerror}", field=field) from None
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        why = None if allow_private else refused_address(ip)
        if why:
            raise ApiError(400, "url_refused", f"{field}: {parts.hostname} resolves to a {why} address ({ip}); "
                           "the server does not fetch from its own network (api.fetch_private_urls)", field=field)
        addresses.append(str(ip))
    return addresses


def fetch_to(url: str, new_file: Callable[[str], Path], *, field: str, kind: str, max_bytes: int, timeout: float,
             allow_private: bool) -> Path:
    """Download ``url`` to ``new_file(name)`` (the name from the URL or its type, cleaned
    and checked to be of ``kind``); the file written."""
    deadline = time.monotonic() + timeout
    current = url
    with httpx.Client(timeout=httpx.Timeout(min(timeout, 30.0)), follow_redirects=False, trust_env=False) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            address = check_target(current, field=field, allow_private=allow_private)[0]
            pinned = _with_address(current, address)
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": "lipsyncd-fetch"}
            extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
            try:
                with client.stream("GET", pinned, headers=headers, extensions=extensions) as resp:
                    if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                        current = urljoin(current, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise ApiError(400, "fetch_failed", f"{field}: {_shown(url)} answered HTTP {resp.status_code}",
                                       field=field)
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise ApiError(413, "too_large", f"{field}: {_shown(url)} is {int(declared)} bytes, more than "
                                       f"limits.max_file_size ({max_bytes})", field=field)
                    name = clean_filename(_remote_name(current, resp), field=field, kind=kind)
                    target = new_file(name)
                    _stream(resp, target, field=field, url=url, max_bytes=max_bytes, deadline=deadline)
                    return target
            except httpx.HTTPError as e:
                raise ApiError(400, "fetch_failed", f"{field}: fetching {_shown(url)} failed: {type(e).__name__}",
                               field=field) from None
        raise ApiError(400, "fetch_failed", f"{field}: more than {MAX_REDIRECTS} redirects", field=field)


def _stream(resp: httpx.Response, target: Path, *, field: str, url: str, max_bytes: int, deadline: float) -> None:
    size = 0
    try:
        with open(target, "wb") as fh:
            for chunk in resp.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, "too_large", f"{field}: {_shown(url)} is larger than limits.max_file_size "
                                   f"({max_bytes} bytes)", field=field)
                if time.monotonic() > deadline:
                    raise ApiError(400, "fetch_failed", f"{field}: fetching {_shown(url)} took longer than "
                                   "api.fetch_timeout", field=field)
                fh.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _with_address(url: str, address: str) -> str:
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def _remote_name(url: str, resp: httpx.Response) -> str:
    disposition = resp.headers.get("content-disposition")
    if disposition:
        msg = Message()
        msg["content-disposition"] = disposition
        name = msg.get_filename()
        if name:
            return name
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if "." not in name and ctype in _TYPE_EXTENSIONS:
        name = (name or "download") + _TYPE_EXTENSIONS[ctype]
    return name


def _shown(url: str) -> str:
    """The URL for messages: scheme, host and path -- a query may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}" if parts.scheme else repr(url[:80])

"""A client of the HTTP API (``lipsyncd submit``): upload, submit, follow, print the links.

Files up to ``RESUMABLE_OVER`` go in the submit request itself (multipart, streamed from
disk); larger ones first go up as tus uploads in 8 MiB pieces, each piece retried and the
upload resumed from the offset the server confirms, so a flaky link costs one piece, not
the file. The events stream is followed until the job is done or failed; a dropped
stream is reopened (the sidecar is the truth, so nothing is missed).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from daemon.jobstate import FINAL_STATES  # the standard library only: the client stays light

RESUMABLE_OVER = 32 * 1024 * 1024
CHUNK = 8 * 1024 * 1024
RETRIES = 8


class ClientError(Exception):
    """The server refused or could not be reached; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, body: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


class ApiClient:
    def __init__(self, server: str, api_key: str | None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None, resumable_over: int = RESUMABLE_OVER):
        self.server = server.rstrip("/")
        self.resumable_over = resumable_over
        headers = {"User-Agent": "lipsyncd-submit"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0),
                                 transport=transport, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------
    def _checked(self, resp: httpx.Response) -> dict[str, Any]:
        if resp.status_code >= 400:
            try:
                body = resp.json()
                err = body.get("error") or {}
                message = err.get("message") or resp.text
            except ValueError:
                body, message = {}, resp.text[:200]
            raise ClientError(f"HTTP {resp.status_code}: {message}", resp.status_code, body)
        try:
            return resp.json() if resp.content else {}
        except ValueError:
            return {}

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        for attempt in range(RETRIES):
            try:
                resp = self.http.request(method, url, **kw)
            except httpx.TransportError as e:
                if attempt == RETRIES - 1 or "content" in kw or "files" in kw:
                    raise ClientError(f"{self.server}: {type(e).__name__}: {e}") from None
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
            if resp.status_code in (429, 503) and attempt < RETRIES - 1 and "files" not in kw:
                time.sleep(min(60.0, float(resp.headers.get("Retry-After", "1") or 1)))
                continue
            return resp
        raise AssertionError("unreachable")

    # -- tus uploads ------------------------------------------------------------------------
    def upload(self, path: Path, *, progress: Callable[[int, int], None] | None = None) -> str:
        """Upload ``path`` resumably; the upload's URL (usable as *_upload)."""
        size = path.stat().st_size
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                        for k, v in (("filename", path.name), ("filetype", ctype)))
        tus = {"Tus-Resumable": "1.0.0"}
        resp = self._send("POST", "/api/v1/uploads", headers={**tus, "Upload-Length": str(size),
                                                             "Upload-Metadata": meta})
        self._checked(resp)
        location = resp.headers.get("location")
        if not location:
            raise ClientError("the server did not say where the upload goes (no Location)")
        offset, failures = 0, 0
        with open(path, "rb") as fh:
            while offset < size:
                fh.seek(offset)
                piece = fh.read(CHUNK)
                try:
                    r = self.http.patch(location, content=piece, headers={
                        **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
                    if r.status_code == 204:
                        offset = int(r.headers.get("upload-offset", offset + len(piece)))
                        failures = 0
                        if progress:
                            progress(offset, size)
                        continue
                    if r.status_code not in (409, 500, 502, 503, 504):
                        self._checked(r)
                except httpx.TransportError:
                    pass
                failures += 1
                if failures > RETRIES:
                    raise ClientError(f"{path.name}: the upload keeps failing at byte {offset} of {size}")
                time.sleep(min(30.0, 0.5 * 2 ** failures))
                offset = self._offset(location)  # where the server says we are
        return location

    def _offset(self, location: str) -> int:
        r = self._send("HEAD", location, headers={"Tus-Resumable": "1.0.0"})
        if r.status_code != 200:
            raise ClientError(f"the upload at {location} is gone (HTTP {r.status_code})", r.status_code)
        return int(r.headers["upload-offset"])

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, audio: str | None, templates: list[str], *, template_names: list[str] = (),
               fields: dict[str, Any] | None = None, subtitle_file: str | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
        """Submit a job; ``audio``/``templates`` are local paths or http(s) URLs (``audio`` None:
        ``fields`` hold the text to speak); ``subtitle_file`` a local .srt / .vtt."""
        data: list[tuple[str, str]] = [(k, str(v)) for k, v in (fields or {}).items() if v is not None]
        data += [("template_name", n) for n in template_names]
        with ExitStack() as stack:
            files: list[tuple[str, tuple[str, Any, str]]] = []
            if subtitle_file:
                path = Path(subtitle_file)
                files.append(("subtitle_file", (path.name, stack.enter_context(open(path, "rb")), "text/plain")))
            sources = ([("audio", audio)] if audio is not None else []) + [("template", t) for t in templates]
            for field, source in sources:
                if source.startswith(("http://", "https://")):
                    data.append((f"{field}_url", source))
                    continue
                path = Path(source)
                if path.stat().st_size > self.resumable_over:
                    data.append((f"{field}_upload", self.upload(
                        path, progress=(lambda done, total, n=path.name: progress(n, done, total)) if progress else None)))
                else:
                    files.append((field, (path.name, stack.enter_context(open(path, "rb")),
                                          mimetypes.guess_type(path.name)[0] or "application/octet-stream")))
            body: dict[str, list[str]] = {}
            for k, v in data:
                body.setdefault(k, []).append(v)
            if files:
                resp = self._send("POST", "/api/v1/jobs", data=body, files=files)
            else:
                resp = self._send("POST", "/api/v1/jobs", json={k: v if len(v) > 1 or k.startswith("template_")
                                                                 else v[0] for k, v in body.items()})
        return self._checked(resp)

    def job(self, name: str) -> dict[str, Any]:
        return self._checked(self._send("GET", f"/api/v1/jobs/{quote(name, safe='')}"))

    def events(self, name: str) -> Iterator[dict[str, Any]]:
        """The job's sidecar at each change, until it is final; reconnects when cut off."""
        failures = 0
        while True:
            try:
                with self.http.stream("GET", f"/api/v1/jobs/{quote(name, safe='')}/events",
                                      timeout=httpx.Timeout(60.0, read=90.0)) as resp:
                    if resp.status_code != 200:
                        resp.read()
                        self._checked(resp)
                    for kind, doc in parse_sse(resp.iter_lines()):
                        failures = 0
                        if kind == "gone":
                            raise ClientError(f"{name}: the job was withdrawn", 404)
                        yield doc
                        if doc.get("state") in FINAL_STATES:
                            return
            except (httpx.TransportError, httpx.StreamError):
                pass
            failures += 1
            if failures > RETRIES:
                raise ClientError(f"{self.server}: lost the events stream of {name} and could not reopen it")
            time.sleep(min(30.0, 0.5 * 2 ** failures))
            doc = self.job(name)  # the stream was cut: the sidecar says where things are
            if doc.get("state") in FINAL_STATES:
                yield doc
                return


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def links_of(doc: dict[str, Any]) -> list[str]:
    return [o.get("link") or o.get("url") for o in doc.get("outputs", []) if o.get("link") or o.get("url")]

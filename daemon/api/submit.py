"""``POST /api/v1/jobs``: read a submission, check it like an inbox drop, drop it.

A submission is multipart/form-data (files and fields, parsed as a stream: each file part
goes straight to disk in the request's staging folder, never whole into memory) or
application/json (URLs, upload ids and template names only -- what a workflow tool such
as Dify sends). Either way it becomes a :class:`Request` of sources, whose files are then
gathered into the staging folder (fetched URLs, finished tus uploads), checked from their
headers with the same limits the daemon applies, and published by
:meth:`daemon.api.drops.Staging.publish`.

Every problem of the options is reported at once (``error.problems``); the first is the
``error`` itself.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from fastapi import Request as HttpRequest

from lipsync.engine import MediaLimits, RenderOptions
from lipsync.engines import NAMES as ENGINE_NAMES
from lipsync.errors import LipsyncError

from daemon.api.drops import Staging, clean_filename, clean_job_name
from daemon.api.errors import ApiError
from daemon.api.fetch import check_target, fetch_to
from daemon.config import Config, parse_duration
from daemon.intake.manifest import MAX_LINK_LIFETIME, MIN_LINK_LIFETIME, PRIORITY_RANGE, PathRules
from daemon.errors import PermanentJobError

FILE_FIELDS = {"audio": "audio", "template": "template"}
TEXT_FIELDS = ("audio_url", "audio_upload", "template_url", "template_name", "template_upload", "name", "engine",
               "link_lifetime", "callback_url", "output_name", "priority")
REPEATABLE = {"template", "template_url", "template_name", "template_upload"}
MAX_TEXT = 64 * 1024
MAX_PARTS = 1000
_FLUSH = 1024 * 1024  # bytes gathered into one write
_BACKLOG = 32 * 1024 * 1024  # bytes received but not yet written, at most
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Request:
    """What a client asked for, its uploaded files already staged."""

    texts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    audio_file: str | None = None  # staged name
    # in the client's order: (field, value): template -> staged name, template_url -> URL, ...
    templates: list[tuple[str, str]] = field(default_factory=list)

    def text(self, key: str) -> str | None:
        values = self.texts.get(key) or []
        return values[0] if values else None


# --------------------------------------------------------------------------- reading


async def read_request(request: HttpRequest, staging: Staging, cfg: Config) -> Request:
    ctype, _params = parse_options_header(request.headers.get("content-type", ""))
    if ctype == b"multipart/form-data":
        return await _read_multipart(request, staging, cfg)
    if ctype == b"application/json":
        return await _read_json(request)
    raise ApiError(415, "unsupported_media_type", "send multipart/form-data (files) or application/json (URLs, "
                   "upload ids, template names)")


async def _read_json(request: HttpRequest) -> Request:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TEXT * 4:
            raise ApiError(413, "too_large", f"a JSON submission is at most {MAX_TEXT * 4 // 1024} KiB; "
                           "send files as multipart/form-data or tus uploads")
    try:
        data = json.loads(body or b"{}")
    except ValueError as e:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    req = Request()
    for key, value in data.items():
        if key in FILE_FIELDS:
            raise ApiError(400, "bad_request", f"{key}: files need multipart/form-data; in JSON use {key}_url "
                           f"or {key}_upload", field=key)
        if key not in TEXT_FIELDS:
            raise ApiError(400, "unknown_field", f"{key}: unknown field; allowed: {', '.join(TEXT_FIELDS)}", field=key)
        values = value if isinstance(value, list) else [value]
        if len(values) > 1 and key not in REPEATABLE:
            raise ApiError(400, "bad_request", f"{key}: give one value", field=key)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ApiError(400, "bad_request", f"{key}: expected a string, got {json.dumps(v)[:40]}", field=key)
            req.texts[key].append(str(v))
            if key.startswith("template_"):
                req.templates.append((key, str(v)))
    return req


async def _read_multipart(request: HttpRequest, staging: Staging, cfg: Config) -> Request:
    _ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_request", "multipart/form-data without a boundary")
    limit = int(cfg.limits.max_file_size)
    declared = request.headers.get("content-length", "")
    most = limit * (cfg.limits.max_templates_per_job + 1) + MAX_PARTS * MAX_TEXT
    if declared.isdigit() and int(declared) > most:
        raise ApiError(413, "too_large", f"the request is {int(declared)} bytes; at most {most} fit the limits "
                       "(limits.max_file_size per file, limits.max_templates_per_job)")
    writer = _DiskWriter()
    form = _FormWriter(Request(), staging, limit, cfg.limits.max_templates_per_job, writer)
    parser = MultipartParser(boundary, form.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            form.check()
            if writer.backlog > _BACKLOG:  # the disk is slower than the network: let it catch up
                await anyio.to_thread.run_sync(writer.wait_below, _BACKLOG // 2)
            writer.check()
        parser.finalize()
        form.check()
    finally:
        form.close()
        await anyio.to_thread.run_sync(writer.finish)
    writer.check()
    if not form.finished:
        raise ApiError(400, "bad_request", "the multipart body ended early (the upload was cut off)")
    return form.req


class _DiskWriter:
    """Writes the request's file parts in a thread of its own, while the event loop goes on
    receiving: network and disk overlap, and the loop never waits on a slow share. At most
    ``_BACKLOG`` bytes wait in memory (the loop pauses reading beyond that)."""

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.backlog = 0
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="upload-writer", daemon=True)
        self._thread.start()

    def put(self, item: tuple) -> None:
        with self._cond:
            self._items.append(item)
            if item[0] == "data":
                self.backlog += len(item[1])
            self._cond.notify()

    def _run(self) -> None:
        fh = None
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
            try:
                if item[0] == "open":
                    fh = open(item[1], "wb")
                elif item[0] == "data" and fh is not None and self.error is None:
                    fh.write(item[1])
                elif item[0] == "close" and fh is not None:
                    fh.close()
                    fh = None
            except OSError as e:
                self.error = self.error or e
            with self._cond:
                if item[0] == "data":
                    self.backlog -= len(item[1])
                self._cond.notify_all()
            if item[0] == "end":
                if fh is not None:
                    fh.close()
                return

    def wait_below(self, size: int) -> None:
        with self._cond:
            while self.backlog > size and self._thread.is_alive():
                self._cond.wait(1.0)

    def finish(self) -> None:
        self.put(("end",))
        self._thread.join()

    def check(self) -> None:
        if self.error is not None:
            raise ApiError(507 if self.error.errno == errno.ENOSPC else 500, "storage_full" if
                           self.error.errno == errno.ENOSPC else "io_error",
                           f"cannot write the upload into the inbox: {self.error.strerror}")


class _FormWriter:
    """python-multipart callbacks: text fields into the request, file parts to the writer."""

    def __init__(self, req: Request, staging: Staging, limit: int, max_templates: int, writer: _DiskWriter):
        self.req, self.staging, self.limit, self.max_templates = req, staging, limit, max_templates
        self.writer = writer
        self.error: ApiError | None = None
        self.finished = False
        self.parts = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None
        self._file = False  # a file part is open
        self._file_name: str | None = None
        self._size = 0
        self._text = bytearray()
        self._pending = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self._begin, "on_header_field": self._hfield, "on_header_value": self._hvalue,
                "on_header_end": self._hend, "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._end, "on_end": self._all_done}

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self._fail(ApiError(413, "too_large", f"more than {MAX_PARTS} form fields"))
        self._headers, self._field, self._file_name, self._size = {}, None, None, 0
        self._text = bytearray()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_done(self) -> None:
        _kind, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        self._field = name
        filename = opts.get(b"filename")
        if name in FILE_FIELDS:
            if filename is None:
                self._fail(ApiError(400, "bad_request", f"{name}: expected a file (a form part with a filename)",
                                    field=name))
                return
            if name == "audio" and self.req.audio_file is not None:
                self._fail(ApiError(400, "bad_request", "audio: give one audio file", field=name))
                return
            if name == "template" and len(self.req.templates) >= self.max_templates:
                self._fail(ApiError(413, "too_large", f"template: more than limits.max_templates_per_job "
                                    f"({self.max_templates}) templates", field=name))
                return
            try:
                clean = clean_filename(filename.decode("utf-8", "replace"), field=name, kind=FILE_FIELDS[name])
            except ApiError as e:
                self._fail(e)
                return
            path = self.staging.new_file(clean)
            self._file_name = path.name
            self._file = True
            self.writer.put(("open", path))
        elif name not in TEXT_FIELDS:
            self._fail(ApiError(400, "unknown_field", f"{name or '(unnamed part)'}: unknown field; allowed: "
                                f"{', '.join([*FILE_FIELDS, *TEXT_FIELDS])}", field=name or None))

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        n = end - start
        if self._file:
            self._size += n
            if self._size > self.limit:
                self._fail(ApiError(413, "too_large", f"{self._field}: {self._file_name} is larger than "
                                    f"limits.max_file_size ({self.limit} bytes)", field=self._field))
                return
            self._pending += data[start:end]
            if len(self._pending) >= _FLUSH:
                self.flush()
        elif self._field in TEXT_FIELDS:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT:
                self._fail(ApiError(413, "too_large", f"{self._field}: longer than {MAX_TEXT} bytes",
                                    field=self._field))

    def flush(self) -> None:
        if self._file and self._pending:
            self.writer.put(("data", self._pending))
            self._pending = bytearray()

    def _end(self) -> None:
        if self.error is not None:
            return
        field_name = self._field or ""
        if self._file:
            self.flush()
            self.writer.put(("close",))
            self._file = False
            if self._size == 0:
                self._fail(ApiError(400, "bad_media", f"{field_name}: {self._file_name} is empty (0 bytes)",
                                    field=field_name))
                return
            if field_name == "audio":
                self.req.audio_file = self._file_name
            else:
                self.req.templates.append(("template", self._file_name))
        elif field_name in TEXT_FIELDS:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(ApiError(400, "bad_request", f"{field_name}: not UTF-8 text", field=field_name))
                return
            if self.req.texts.get(field_name) and field_name not in REPEATABLE:
                self._fail(ApiError(400, "bad_request", f"{field_name}: give one value", field=field_name))
                return
            self.req.texts[field_name].append(value)
            if field_name.startswith("template_"):
                self.req.templates.append((field_name, value))

    def _all_done(self) -> None:
        self.finished = True

    def close(self) -> None:
        if self._file:
            self.writer.put(("close",))
            self._file = False


# --------------------------------------------------------------------------- checking


@dataclass
class Checked:
    name: str
    audio: str  # staged file name
    templates: list[tuple[str, str]]  # ("staged", file) | ("library", name)
    options: dict[str, Any]


def check_options(req: Request, cfg: Config) -> tuple[str | None, dict[str, Any]]:
    """The job name asked for and the manifest options; ApiError listing every problem."""
    problems: list[ApiError] = []
    options: dict[str, Any] = {}
    engine = req.text("engine")
    if engine is not None and engine not in ENGINE_NAMES:
        problems.append(ApiError(400, "bad_option", f"engine: {engine!r} is not one of {', '.join(ENGINE_NAMES)}",
                                 field="engine"))
    elif engine:
        options["engine"] = engine
    lifetime = req.text("link_lifetime")
    if lifetime:
        try:
            seconds = parse_duration(lifetime)
            if not MIN_LINK_LIFETIME <= seconds <= MAX_LINK_LIFETIME:
                raise ValueError(f"{lifetime!r} is outside 1m..7d")
            options["link_lifetime"] = seconds
        except ValueError as e:
            problems.append(ApiError(400, "bad_option", f"link_lifetime: {e}", field="link_lifetime"))
    priority = req.text("priority")
    if priority:
        try:
            value = int(priority)
            if not PRIORITY_RANGE[0] <= value <= PRIORITY_RANGE[1]:
                raise ValueError
            options["priority"] = value
        except ValueError:
            problems.append(ApiError(400, "bad_option", f"priority: {priority!r} is not a whole number from "
                                     f"{PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}", field="priority"))
    output_name = req.text("output_name")
    if output_name is not None:
        cleaned = clean_job_name(output_name, field="output_name")
        if cleaned is None:
            problems.append(ApiError(400, "bad_option", "output_name: nothing usable is left of it", field="output_name"))
        else:
            options["output_name"] = cleaned
    # every URL is checked before any is fetched: a request naming one refused address
    # makes no request anywhere
    for key in ("audio_url", "template_url", "callback_url"):
        for url in req.texts.get(key, []):
            try:
                check_target(url, field=key, allow_private=cfg.api.fetch_private_urls)
            except ApiError as e:
                problems.append(e)
    callback = req.text("callback_url")
    if callback and not any(p.field == "callback_url" for p in problems):
        options["callback_url"] = callback
    raw_name = req.text("name")
    name = clean_job_name(raw_name)
    if raw_name is not None and name is None:
        problems.append(ApiError(400, "bad_option", f"name: nothing usable is left of {raw_name!r}", field="name"))
    sources = (req.audio_file is not None) + len(req.texts.get("audio_url", [])) + len(req.texts.get("audio_upload", []))
    if sources != 1:
        problems.append(ApiError(400, "missing_audio" if sources == 0 else "bad_request",
                                 "give exactly one of audio (a file), audio_url or audio_upload", field="audio"))
    if not req.templates:
        problems.append(ApiError(400, "missing_template", "give at least one template: template (a file), "
                                 "template_url, template_name or template_upload", field="template"))
    elif len(req.templates) > cfg.limits.max_templates_per_job:
        problems.append(ApiError(413, "too_large", f"template: more than limits.max_templates_per_job "
                                 f"({cfg.limits.max_templates_per_job}) templates", field="template"))
    if problems:
        raise _all_of(problems)
    return name, options


def _all_of(problems: list[ApiError]) -> ApiError:
    first = problems[0]
    first.problems = [{"code": p.code, "message": p.message, "field": p.field} for p in problems]
    return first


def gather(req: Request, staging: Staging, cfg: Config, *, uploads_dir: Path
           ) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """Bring every source into the staging folder (blocking: run it in a thread).

    Returns the staged audio, the templates as ("staged", file) / ("library", name), and
    for each staged file the request field it came from (for error messages).
    """
    limit = int(cfg.limits.max_file_size)
    fetch = dict(max_bytes=limit, timeout=float(cfg.api.fetch_timeout), allow_private=cfg.api.fetch_private_urls,
                 clean_filename=clean_filename)
    audio = req.audio_file
    if audio is None and req.text("audio_url"):
        audio = fetch_to(req.text("audio_url"), staging.new_file, field="audio_url", kind="audio", **fetch).name
    if audio is None and req.text("audio_upload"):
        audio = _take_upload(req.text("audio_upload"), staging, uploads_dir, field="audio_upload", kind="audio")
    templates: list[tuple[str, str]] = []
    rules = PathRules(cfg)
    for source, value in req.templates:
        if source == "template":
            templates.append(("staged", value))
        elif source == "template_url":
            templates.append(("staged", fetch_to(value, staging.new_file, field="template_url", kind="template",
                                                 **fetch).name))
        elif source == "template_upload":
            templates.append(("staged", _take_upload(value, staging, uploads_dir, field="template_upload",
                                                     kind="template")))
        else:
            templates.append(("library", _library_template(value, cfg, rules)))
    fields = {audio: "audio_url" if req.text("audio_url") else "audio_upload" if req.text("audio_upload") else "audio"}
    for (source, _value), (where, name) in zip(req.templates, templates):
        if where == "staged":
            fields[name] = source
    return audio, templates, fields


def _library_template(value: str, cfg: Config, rules: PathRules) -> str:
    if cfg.paths.templates is None:
        raise ApiError(400, "no_template_library", "template_name: this server has no template library "
                       "(paths.templates is not set); upload the template instead", field="template_name")
    try:
        located = rules.locate(value, manifest="(api)", field="template_name", template=True)
    except PermanentJobError as e:
        raise ApiError(400, "bad_template_name", f"template_name: {e.message}", field="template_name") from None
    if located is None or not str(located.path).startswith(str(cfg.paths.templates)):
        raise ApiError(404, "unknown_template", f"template_name: {value!r} is not in the template library",
                       field="template_name")
    return value


def _take_upload(value: str, staging: Staging, uploads_dir: Path, *, field: str, kind: str) -> str:
    uid = value.rstrip("/").rsplit("/", 1)[-1]
    if not _UPLOAD_ID.match(uid):
        raise ApiError(400, "bad_upload", f"{field}: {value[:80]!r} is not an upload id or URL from "
                       "/api/v1/uploads", field=field)
    data, info_path = uploads_dir / uid, uploads_dir / f"{uid}.info"
    try:
        info = json.loads(info_path.read_text())
    except (FileNotFoundError, ValueError):
        raise ApiError(404, "unknown_upload", f"{field}: no upload {uid} (finished uploads are kept "
                       "api.upload_expiry, and each is used once)", field=field) from None
    if info.get("size") is None or info.get("offset") != info.get("size"):
        raise ApiError(409, "upload_incomplete", f"{field}: upload {uid} has {info.get('offset', 0)} of "
                       f"{info.get('size')} bytes; finish it first (HEAD then PATCH)", field=field)
    metadata = info.get("metadata") or {}
    filename = clean_filename(metadata.get("filename") or metadata.get("name"), field=field, kind=kind)
    target = staging.new_file(filename)
    try:
        os.rename(data, target)  # each upload is used once: the job owns the bytes now
    except FileNotFoundError:
        staging.forget(target.name)
        raise ApiError(404, "unknown_upload", f"{field}: upload {uid} was used by another job", field=field) from None
    info_path.unlink(missing_ok=True)
    return target.name


def probe_staged(staging: Staging, audio: str, templates: list[tuple[str, str]], cfg: Config,
                 fields: dict[str, str]) -> None:
    """Header checks of every staged file, as the render would make them (blocking)."""
    from lipsync.media.audio import probe_audio
    from lipsync.media.template import probe_template

    lim = cfg.limits
    limits = MediaLimits(max_file_bytes=int(lim.max_file_size), max_pixels=lim.max_pixels,
                         max_template_seconds=float(lim.max_template_seconds),
                         max_audio_seconds=float(lim.max_audio_seconds))
    options = RenderOptions(device="cpu", still_fps=cfg.render.still_fps, limits=limits)
    problems: list[ApiError] = []
    try:
        probe_audio(staging.path / audio, limits)
    except LipsyncError as e:
        problems.append(ApiError(422, e.code, f"{audio}: {_reason(e)}", field=fields.get(audio, "audio")))
    for where, name in templates:
        if where != "staged":
            continue
        try:
            probe_template(staging.path / name, options)
        except LipsyncError as e:
            problems.append(ApiError(422, e.code, f"{name}: {_reason(e)}", field=fields.get(name, "template")))
    if problems:
        raise _all_of(problems)


def _reason(e: LipsyncError) -> str:
    return e.message  # without the staging path str(e) starts with: the client knows its own name

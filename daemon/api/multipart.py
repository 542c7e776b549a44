"""Streaming multipart/form-data into the staging folder, for ``POST /api/v1/jobs``.

python-multipart parses the body as it arrives; text fields go into the request, file
parts to a writer thread that puts them on disk while the event loop goes on receiving
(network and disk overlap, the loop never waits on a slow share). Sizes are enforced
byte by byte as they arrive: a part that crosses ``limits.max_file_size`` ends the request
with 413 at that byte, not after the whole body was stored. A part's headers are at most
``MAX_HEADER`` bytes; a malformed body is a 400 naming what was wrong.

Files go wherever ``files`` puts them: anything with ``new_file(clean_name) -> Path``
(a request's staging folder, or the template library's incoming names).
"""

from __future__ import annotations

import collections
import errno
import threading
from typing import Any

import anyio
from fastapi import Request as HttpRequest
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from daemon.api.drops import clean_filename
from daemon.api.errors import ApiError
from daemon.config import Config

MAX_TEXT = 64 * 1024
MAX_PARTS = 1000
MAX_HEADER = 8 * 1024  # bytes of one form part's headers
_FLUSH = 1024 * 1024  # bytes gathered into one write
_BACKLOG = 32 * 1024 * 1024  # bytes received but not yet written, at most


async def read_multipart(request: HttpRequest, files: Any, cfg: Config, req: Any, file_fields: dict[str, str],
                         text_fields: tuple[str, ...], repeatable: set[str]) -> Any:
    """Fill ``req`` (texts, audio_file, templates) from the body; files land where ``files`` says."""
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
    form = _FormWriter(req, files, limit, cfg.limits.max_templates_per_job, writer, file_fields, text_fields,
                       repeatable)
    parser = MultipartParser(boundary, form.callbacks())
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except MultipartParseError as e:
                form.check()  # a refusal of ours came first
                raise ApiError(400, "bad_request", f"the multipart body is malformed: {str(e)[:100]}") from None
            form.check()
            if writer.backlog > _BACKLOG:  # the disk is slower than the network: let it catch up
                await anyio.to_thread.run_sync(writer.wait_below, _BACKLOG // 2)
            writer.check()
        try:
            parser.finalize()
        except MultipartParseError as e:
            raise ApiError(400, "bad_request", f"the multipart body is malformed: {str(e)[:100]}") from None
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

    def __init__(self, req: Any, files: Any, limit: int, max_templates: int, writer: _DiskWriter,
                 file_fields: dict[str, str], text_fields: tuple[str, ...], repeatable: set[str]):
        self.req, self.files, self.limit, self.max_templates = req, files, limit, max_templates
        self.writer = writer
        self.file_fields, self.text_fields, self.repeatable = file_fields, text_fields, repeatable
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
        self._header_bytes = 0
        self._files_of: dict[str, int] = {}

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
        self._header_bytes = 0

    def _header_room(self, n: int) -> bool:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER:
            self._fail(ApiError(400, "bad_request", f"form part {self.parts}: its headers are longer than "
                                f"{MAX_HEADER} bytes"))
            return False
        return True

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        if self._header_room(end - start):
            self._header_field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        if self._header_room(end - start):
            self._header_value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_done(self) -> None:
        if self.error is not None:
            return
        _kind, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        self._field = name
        filename = opts.get(b"filename")
        if name in self.file_fields:
            if filename is None:
                self._fail(ApiError(400, "bad_request", f"{name}: expected a file (a form part with a filename)",
                                    field=name))
                return
            seen = self._files_of[name] = self._files_of.get(name, 0) + 1
            if seen > 1 and name not in self.repeatable:
                self._fail(ApiError(400, "bad_request", f"{name}: give one file", field=name))
                return
            if name == "template" and len(self.req.templates) >= self.max_templates:
                self._fail(ApiError(413, "too_large", f"template: more than limits.max_templates_per_job "
                                    f"({self.max_templates}) templates", field=name))
                return
            try:
                clean = clean_filename(filename.decode("utf-8", "replace"), field=name, kind=self.file_fields[name])
            except ApiError as e:
                self._fail(e)
                return
            path = self.files.new_file(clean)
            self._file_name = path.name
            self._file = True
            self.writer.put(("open", path))
        elif name not in self.text_fields:
            shown = name if len(name) <= 60 else name[:40] + "..."
            self._fail(ApiError(400, "unknown_field", f"{shown or '(unnamed part)'}: unknown field; allowed: "
                                f"{', '.join([*self.file_fields, *self.text_fields])}", field=shown or None))

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
        elif self._field in self.text_fields:
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
            elif field_name == "subtitle_file":
                self.req.subtitle_file = self._file_name
            else:
                self.req.templates.append(("template", self._file_name))
        elif field_name in self.text_fields:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(ApiError(400, "bad_request", f"{field_name}: not UTF-8 text", field=field_name))
                return
            if self.req.texts.get(field_name) and field_name not in self.repeatable:
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



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

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import parse_options_header
from fastapi import Request as HttpRequest

from lipsync.engine import RenderOptions
from lipsync.errors import LipsyncError

from daemon.api.drops import Staging, clean_filename, clean_job_name
from daemon.api.multipart import MAX_TEXT, read_multipart
from daemon.api.errors import ApiError, bad_name
from daemon.api.uploads import UploadRefused, UploadStore
from daemon.api.fetch import check_target, fetch_to
from daemon.config import Config
from daemon.intake.manifest import PathRules
from daemon.joboptions import api_file_fields, api_repeatable, api_text_fields, from_fields, judge
from daemon.confine import NameRefused, confine
from daemon.errors import PermanentJobError
from daemon.pipeline.engines import media_limits

# the submission's fields, from the one definition of a job's options and sources
FILE_FIELDS = api_file_fields()
TEXT_FIELDS = api_text_fields()
REPEATABLE = api_repeatable()
URL_FIELDS = ("audio_url", "template_url", "subtitle_url", "callback_url")  # addresses the server would reach
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Request:
    """What a client asked for, its uploaded files already staged."""

    texts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    audio_file: str | None = None  # staged name
    subtitle_file: str | None = None  # staged name of an .srt / .vtt
    # in the client's order: (field, value): template -> staged name, template_url -> URL, ...
    templates: list[tuple[str, str]] = field(default_factory=list)

    def text(self, key: str) -> str | None:
        values = self.texts.get(key) or []
        return values[0] if values else None


# --------------------------------------------------------------------------- reading


async def read_request(request: HttpRequest, staging: Staging, cfg: Config) -> Request:
    ctype, _params = parse_options_header(request.headers.get("content-type", ""))
    if ctype == b"multipart/form-data":
        return await read_multipart(request, staging, cfg, Request(), FILE_FIELDS, TEXT_FIELDS, REPEATABLE)
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
    data = parse_json(bytes(body) or b"{}", what="the body")
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


def parse_json(data: bytes | str, *, what: str, field: str | None = None) -> Any:
    """JSON from a client; 400 (never a crash) when it is malformed or nested too deep for
    the parser (``RecursionError``), naming ``what`` and ``field``."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        reason = "nested too deep" if isinstance(e, RecursionError) else str(e)[:120]
        raise ApiError(400, "bad_request", f"{what} is not valid JSON: {reason}", field=field) from None


# --------------------------------------------------------------------------- checking


@dataclass
class Checked:
    name: str
    audio: str  # staged file name
    templates: list[tuple[str, str]]  # ("staged", file) | ("library", name)
    options: dict[str, Any]


def check_options(req: Request, cfg: Config) -> tuple[str | None, dict[str, Any]]:
    """The job name asked for and the manifest options; ApiError listing every problem.

    The options are judged by :func:`daemon.joboptions.judge`, as a manifest's are; what
    the API adds is its own: URLs it would reach are checked as network targets.
    """
    problems: list[ApiError] = []
    options, found = judge(from_fields({key: values[0] for key, values in req.texts.items() if values}))
    problems += [ApiError(400, "bad_option", message, field=key) for key, message in found]
    # every URL is checked before any is fetched: a request naming one refused address
    # makes no request anywhere
    judged_bad = {key for key, _ in found}
    for key in URL_FIELDS:
        if key in judged_bad:  # refused already, in the words every door uses
            continue
        for url in req.texts.get(key, []):
            try:
                check_target(url, field=key, allow_private=cfg.api.fetch_private_urls)
            except ApiError as e:
                problems.append(e)
                options.pop(key, None)
    raw_name = req.text("name")
    name = clean_job_name(raw_name)
    if raw_name is not None and name is None:
        problems.append(ApiError(400, "bad_option", f"name: nothing usable is left of {raw_name!r}", field="name"))
    sources = (req.audio_file is not None) + len(req.texts.get("audio_url", [])) + len(req.texts.get("audio_upload", []))
    sources += "text" in options
    if sources != 1:
        problems.append(ApiError(400, "missing_audio" if sources == 0 else "bad_request",
                                 "give exactly one of audio (a file), audio_url, audio_upload or text (to be spoken)",
                                 field="audio"))
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


def gather(req: Request, staging: Staging, cfg: Config, *, uploads: UploadStore, owner: str
           ) -> tuple[str | None, list[tuple[str, str]], dict[str, str]]:
    """Bring every source into the staging folder (blocking: run it in a thread).

    Returns the staged audio, the templates as ("staged", file) / ("library", name), and
    for each staged file the request field it came from (for error messages).
    """
    limit = int(cfg.limits.max_file_size)
    fetch = dict(max_bytes=limit, timeout=float(cfg.api.fetch_timeout), allow_private=cfg.api.fetch_private_urls)
    audio = req.audio_file
    if audio is None and req.text("audio_url"):
        audio = fetch_to(req.text("audio_url"), staging.new_file, field="audio_url", kind="audio", **fetch).name
    if audio is None and req.text("audio_upload"):
        audio = _take_upload(req.text("audio_upload"), staging, uploads, owner, field="audio_upload", kind="audio")
    templates: list[tuple[str, str]] = []
    rules = PathRules(cfg)
    for source, value in req.templates:
        if source == "template":
            templates.append(("staged", value))
        elif source == "template_url":
            templates.append(("staged", fetch_to(value, staging.new_file, field="template_url", kind="template",
                                                 **fetch).name))
        elif source == "template_upload":
            templates.append(("staged", _take_upload(value, staging, uploads, owner, field="template_upload",
                                                     kind="template")))
        else:
            templates.append(("library", _library_template(value, cfg, rules)))
    fields = {audio: "audio_url" if req.text("audio_url") else "audio_upload" if req.text("audio_upload") else "audio"}
    if req.subtitle_file is None and req.text("subtitle_url"):
        req.subtitle_file = fetch_to(req.text("subtitle_url"), staging.new_file, field="subtitle_url",
                                     kind="subtitles", **fetch).name
    if req.subtitle_file is not None:
        fields[req.subtitle_file] = "subtitle_file"
    for (source, _value), (where, name) in zip(req.templates, templates):
        if where == "staged":
            fields[name] = source
    return audio, templates, fields


def _library_template(value: str, cfg: Config, rules: PathRules) -> str:
    if cfg.paths.templates is None:
        raise ApiError(400, "no_template_library", "template_name: this server has no template library "
                       "(paths.templates is not set); upload the template instead", field="template_name")
    try:
        confine(cfg.paths.templates, value, nested=True, where="template library")
        located = rules.in_library(value, manifest="(api)", field="template_name")
    except NameRefused as e:
        raise bad_name("template_name", value, e) from None
    except PermanentJobError as e:
        raise ApiError(400, "bad_template_name", f"template_name: {e.message}", field="template_name") from None
    if located is None:
        raise ApiError(404, "unknown_template", f"template_name: {value!r} is not in the template library",
                       field="template_name")
    return value


def _take_upload(value: str, staging: Staging, uploads: UploadStore, owner: str, *, field: str, kind: str) -> str:
    uid = value.rstrip("/").rsplit("/", 1)[-1]
    if not _UPLOAD_ID.match(uid):
        raise ApiError(400, "bad_upload", f"{field}: {value[:80]!r} is not an upload id or URL from "
                       "/api/v1/uploads", field=field)
    upload = uploads.get(uid, owner)
    if upload is None:
        raise ApiError(404, "unknown_upload", f"{field}: no upload {uid} (finished uploads are kept "
                       "api.upload_expiry, and each is used once)", field=field)
    filename = clean_filename(upload.filename, field=field, kind=kind)
    target = staging.new_file(filename)
    try:
        uploads.take(uid, owner, target)  # each upload is used once: the job owns the bytes now
    except UploadRefused as e:
        staging.forget(target.name)
        raise ApiError(e.status, e.code, f"{field}: {e.message}", field=field) from None
    return target.name


def probe_staged(staging: Staging, audio: str | None, templates: list[tuple[str, str]], cfg: Config,
                 fields: dict[str, str]) -> None:
    """Header checks of every staged file, as the render would make them (blocking)."""
    from lipsync.media.audio import probe_audio
    from lipsync.media.template import probe_template

    limits = media_limits(cfg)
    options = RenderOptions(device="cpu", still_fps=cfg.render.still_fps, limits=limits)
    problems: list[ApiError] = []
    try:
        if audio is not None:
            probe_audio(staging.path / audio, limits)
    except LipsyncError as e:
        problems.append(ApiError(422, e.code, f"{audio}: {_reason(e)}", field=fields.get(audio, "audio")))
    subtitles = next((f for f, field in fields.items() if field == "subtitle_file"), None)
    if subtitles is not None:
        from lipsync.finish.subtitles import read_cues

        try:
            read_cues(staging.path / subtitles)
        except LipsyncError as e:
            problems.append(ApiError(422, e.code, f"{subtitles}: {_reason(e)}", field="subtitle_file"))
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

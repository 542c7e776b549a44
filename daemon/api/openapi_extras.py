"""The parts of the OpenAPI document FastAPI cannot infer: the submit body (parsed as a
stream, not by FastAPI), the answers' shapes and the error schema.

The document is meant to be imported as it is by workflow tools (a Dify custom tool):
every operation has an operationId and a summary, every parameter a description.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from lipsync.engines import NAMES as ENGINE_NAMES

from daemon.api.access import rule_for
from daemon.api.errors import ERROR_SCHEMA
from daemon.jobstate import WAITING, State

_ONE_OR_MORE = {"type": "array", "items": {"type": "string"}}

_FIELDS: dict[str, dict[str, Any]] = {
    "audio_url": {"type": "string", "format": "uri",
                  "description": "http(s) URL of the audio (wav, mp3, m4a, flac, ogg, aac), fetched by the server"},
    "audio_upload": {"type": "string", "description": "id (or URL) of a finished tus upload holding the audio"},
    "template_url": {**_ONE_OR_MORE, "description": "http(s) URL(s) of template videos (mp4, mov, mkv, webm) "
                                                     "or photos (png, jpg)"},
    "template_name": {**_ONE_OR_MORE, "description": "name(s) of templates in the server's template library"},
    "template_upload": {**_ONE_OR_MORE, "description": "id(s) or URL(s) of finished tus uploads holding templates"},
    "name": {"type": "string", "description": "job name (default: the audio's name); a name in use gets -2, -3, ..."},
    "engine": {"type": "string", "enum": list(ENGINE_NAMES),
               "description": "lip-sync engine (default: the server's render.engine)"},
    "link_lifetime": {"type": "string", "description": "how long presigned URLs live, e.g. \"3d\" (1m..7d); "
                                                       "permanent links do not expire"},
    "callback_url": {"type": "string", "format": "uri",
                     "description": "webhook called with the job's JSON when it is done or failed"},
    "output_name": {"type": "string", "description": "file name of the video(s), without .mp4"},
    "priority": {"type": "integer", "minimum": -100, "maximum": 100, "description": "higher runs first (default 0)"},
    "text": {"type": "string", "description": "words to speak instead of an audio (the server's text-to-speech); "
                                              "give text or an audio, not both"},
    "voice": {"type": "string", "description": "the voice for text (espeak-ng voice or HeyGem speaker id)"},
    "resolution": {"type": "string", "description": "finished size: keep, 1080p, 720p, 480p (the shorter side) or "
                                                    "WIDTHxHEIGHT"},
    "aspect": {"type": "string", "enum": ["keep", "16:9", "9:16", "1:1", "4:5"],
               "description": "finished shape; the crop follows the face"},
    "fps": {"type": "number", "minimum": 1, "maximum": 120, "description": "finished frame rate"},
    "watermark": {"type": "string", "description": "an image in the template library composited into every frame"},
    "watermark_position": {"type": "string",
                           "enum": ["top-left", "top-right", "bottom-left", "bottom-right", "center"]},
    "watermark_margin": {"type": "number", "description": "share of the frame's shorter side (0..0.25)"},
    "watermark_opacity": {"type": "number", "description": "0..1"},
    "watermark_scale": {"type": "number", "description": "the logo's width as a share of the frame's (0.01..1)"},
    "intro": {"type": "string", "description": "a clip in the template library joined before the video"},
    "outro": {"type": "string", "description": "a clip in the template library joined after the video"},
    "subtitle_url": {"type": "string", "format": "uri",
                     "description": "an .srt or .vtt the server fetches (JSON's way to send subtitles)"},
    "subtitles": {"type": "string", "enum": ["soft", "burn", "off"],
                  "description": "what the subtitle file becomes: a switchable track, also burned in, or nothing"},
}

SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "audio": {"type": "string", "format": "binary", "description": "the audio file"},
                        "template": {"type": "array", "items": {"type": "string", "format": "binary"},
                                     "description": "template file(s): repeat the field for several"},
                        "subtitle_file": {"type": "string", "format": "binary",
                                          "description": "an .srt or .vtt file timed against the speech"},
                        **_FIELDS,
                    },
                },
                "encoding": {"audio": {"contentType": "application/octet-stream"},
                             "template": {"contentType": "application/octet-stream"}},
            },
            "application/json": {
                "schema": {"type": "object", "properties": _FIELDS, "additionalProperties": False},
                "example": {"audio_url": "https://tts.example.com/out/welcome.mp3", "template_name": "anna.mp4",
                            "name": "welcome"},
            },
        },
    }
}

SUBMIT_DESCRIPTION = (
    "Give exactly one audio (`audio` file, `audio_url` or `audio_upload`, or `text` to be spoken) and at least "
    "one template (`template` "
    "files, `template_url`, `template_name`, `template_upload`); one video is made per template. Finishing "
    "options (resolution, aspect, fps, watermark, intro, outro, subtitles with a `subtitle_file`) default to the "
    "server's [output] section. Files are "
    "checked from their headers at once (422 names the file and the problem); the job is then dropped into the "
    "inbox, where a daemon claims it. URLs that resolve to private or loopback addresses are refused.")

_SUBMITTED = {
    "type": "object",
    "required": ["name", "state", "status_url", "events_url"],
    "properties": {
        "name": {"type": "string", "description": "the job's name: use it in getJob"},
        "state": {"type": "string", "enum": [WAITING, State.QUEUED.value]},
        "status_url": {"type": "string", "format": "uri"},
        "events_url": {"type": "string", "format": "uri"},
    },
}
ACCEPTED = {"description": "accepted: the job is in the inbox",
            "content": {"application/json": {"schema": _SUBMITTED}}}
EVENTS = {"description": "text/event-stream: `event: job` with the sidecar as data, once per change; the "
                         "stream ends after done, failed or expired (`event: gone` if the job was withdrawn)",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}}
DELETED = {"description": "what was done: withdrawn, cancel_requested (202), deleted or already_deleted",
           "content": {"application/json": {"schema": {"type": "object", "properties": {
               "name": {"type": "string"}, "action": {"type": "string"},
               "videos_deleted": {"type": "integer"}}}}}}


def install(app: FastAPI) -> None:
    """Add the shared error schema and the tags' descriptions to the generated document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                          routes=app.routes, servers=app.servers, tags=[
                              {"name": "jobs", "description": "submit and follow lip-sync jobs"},
                              {"name": "uploads", "description": "tus 1.0 resumable uploads for large files"},
                              {"name": "templates", "description": "the server's template library"},
                              {"name": "links", "description": "permanent links to videos"},
                              {"name": "health", "description": "liveness, readiness, metrics"}])
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        # who may call what is the access gate's rule table; the document says the same
        components["securitySchemes"] = {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "an API key from `lipsyncd api-key create NAME` (read-only keys: GET routes only)"}}
        doc["security"] = [{"bearerAuth": []}]
        for path, ops in doc.get("paths", {}).items():
            for method, op in ops.items():
                if rule_for(method.upper(), _example_path(path)) in ("public", "open"):
                    op["security"] = []
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _example_path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


def tus_headers(*names: str) -> dict[str, Any]:
    """``openapi_extra`` documenting the tus request headers ``names`` of a route."""
    return {"parameters": [{"name": n, "in": "header", "required": n in _TUS_REQUIRED,
                            "description": _TUS_HEADERS[n], "schema": {"type": "string"}} for n in names]}


_TUS_REQUIRED = {"Tus-Resumable", "Upload-Length", "Upload-Offset"}
_TUS_HEADERS = {
    "Tus-Resumable": "the tus protocol version: 1.0.0",
    "Upload-Length": "the whole file's size in bytes (at most limits.max_file_size)",
    "Upload-Metadata": "tus metadata: `filename <base64>,filetype <base64>`; the filename's extension says the kind",
    "Upload-Offset": "the byte offset this request's data starts at (HEAD tells where to resume)",
}

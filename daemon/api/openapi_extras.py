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

from daemon.api.access import rule_for
from daemon.api.errors import ERROR_SCHEMA
from daemon.joboptions import schema_files, schema_properties
from daemon.jobstate import WAITING, State

# the submission's fields, from the one definition of a job's options and sources
_FIELDS: dict[str, dict[str, Any]] = schema_properties()

SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {**schema_files(), **_FIELDS},
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

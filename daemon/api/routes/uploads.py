"""``/api/v1/uploads``: resumable uploads, tus 1.0 (core, creation, creation-with-upload,
termination, expiration), for files too large to send in one request.

The bytes go to :class:`daemon.api.uploads.UploadStore` as they arrive, through a buffer of
at most ``_FLUSH`` bytes; nothing is ever written past ``Upload-Length`` or
``limits.max_file_size``. The access gate has admitted a full key before any of this runs.
Interoperability with tuspy and tus-js-client is tested (tests/test_tus.py).
"""

from __future__ import annotations

from email.utils import formatdate

import anyio
from fastapi import APIRouter, Path as PathParam, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from daemon.api.deps import API, Caller, ServicesDep, upload_id
from daemon.api.errors import ApiError, responses
from daemon.api.openapi_extras import tus_headers
from daemon.api.uploads import Upload, UploadRefused, UploadStore
from daemon.logsetup import get_logger

log = get_logger(__name__)
router = APIRouter(prefix=f"{API}/uploads", tags=["uploads"])

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration"
OCTETS = "application/offset+octet-stream"
_FLUSH = 1024 * 1024  # bytes gathered into one write
ID = PathParam(..., description="the upload id (the last part of the Location of createUpload)", max_length=64)


def _tus_headers(store: UploadStore, upload: Upload | None = None, **extra: str) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}
    if upload is not None:
        headers["Upload-Expires"] = formatdate(upload.expires_at(store.expiry), usegmt=True)
    return headers


def _refused(status: int, code: str, message: str, store: UploadStore, **extra: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": None}}, status_code=status,
                        headers=_tus_headers(store, **extra))


def _version_refused(request: Request, store: UploadStore) -> JSONResponse | None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        return _refused(412, "precondition_failed", f"send Tus-Resumable: {TUS_VERSION}", store,
                        **{"Tus-Version": TUS_VERSION})
    return None


def _number(request: Request, header: str) -> int | None:
    value = request.headers.get(header)
    if value is None or not value.isdigit() or len(value) > 19:
        return None
    return int(value)


async def _append(request: Request, store: UploadStore, upload: Upload, offset: int) -> int:
    """Stream the body into the upload from ``offset``; the new offset. Never past the length."""
    room = upload.length - offset
    declared = _number(request, "content-length")
    if declared is not None and declared > room:
        raise UploadRefused(413, "too_large", f"the body ({declared} bytes) goes past Upload-Length "
                            f"({upload.length}); {room} bytes are left")
    written = 0
    with store.appending(upload, offset) as fh:
        pending = bytearray()
        try:
            async for chunk in request.stream():
                if written + len(pending) + len(chunk) > room:
                    await anyio.to_thread.run_sync(fh.truncate, offset)
                    raise UploadRefused(413, "too_large", f"the body goes past Upload-Length ({upload.length}); "
                                        "nothing of it was kept")
                pending += chunk
                if len(pending) >= _FLUSH:
                    await anyio.to_thread.run_sync(fh.write, bytes(pending))
                    written += len(pending)
                    pending.clear()
        except ClientDisconnect:
            pass  # what arrived is kept: the client asks where it stands (HEAD) and resumes
        if pending:
            await anyio.to_thread.run_sync(fh.write, bytes(pending))
            written += len(pending)
    return offset + written


@router.options("/", include_in_schema=False)
@router.options("", summary="The tus versions and extensions supported", operation_id="uploadCapabilities",
                responses={204: {"description": "Tus-Version, Tus-Extension, Tus-Max-Size"}})
async def options(services: ServicesDep, _who: Caller) -> Response:
    return Response(status_code=204, headers=_tus_headers(
        services.uploads, **{"Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS,
                             "Tus-Max-Size": str(services.uploads.max_size)}))


@router.post("/", include_in_schema=False)
@router.post("", status_code=201, operation_id="createUpload",
             summary="Start a resumable upload (tus creation; a first piece may come along)",
             openapi_extra=tus_headers("Tus-Resumable", "Upload-Length", "Upload-Metadata"),
             responses={201: {"description": "Location: the upload's URL"}, **responses(400, 401, 403, 412, 413)})
async def create(request: Request, services: ServicesDep, who: Caller) -> Response:
    store = services.uploads
    if (refused := _version_refused(request, store)) is not None:
        return refused
    if request.headers.get("upload-defer-length") is not None:
        return _refused(400, "bad_request", "Upload-Defer-Length is not supported; send Upload-Length", store)
    length = _number(request, "upload-length")
    if length is None:
        return _refused(400, "bad_request", "Upload-Length: give the file's size in bytes (a whole number >= 0)",
                        store)
    try:
        upload = store.create(who.name, length, request.headers.get("upload-metadata", ""))
    except UploadRefused as e:
        extra = {"Tus-Max-Size": str(store.max_size)} if e.status == 413 else {}
        return _refused(e.status, e.code, e.message, store, **extra)
    offset = 0
    if request.headers.get("content-type", "").split(";")[0].strip() == OCTETS:
        try:
            offset = await _append(request, store, upload, 0)
        except UploadRefused as e:
            await anyio.to_thread.run_sync(store.remove, upload)
            return _refused(e.status, e.code, e.message, store)
    log.info("upload created", upload=upload.id, by=who.name, length=length)
    return Response(status_code=201, headers=_tus_headers(
        store, upload, Location=services.location(f"{API}/uploads/{upload.id}"), **{"Upload-Offset": str(offset)}))


@router.head("/{id}", operation_id="uploadOffset", summary="How much of an upload the server has (resume from there)",
             openapi_extra=tus_headers("Tus-Resumable"),
             responses={200: {"description": "Upload-Offset, Upload-Length"}, **responses(401, 404, 412)})
async def head(request: Request, services: ServicesDep, who: Caller, id: str = ID) -> Response:
    store = services.uploads
    if (refused := _version_refused(request, store)) is not None:
        return refused
    upload = store.get(upload_id(store.folder, id), who.name)
    if upload is None:
        return _refused(404, "not_found", "no such upload", store)
    extra = {"Upload-Metadata": upload.metadata} if upload.metadata else {}
    return Response(status_code=200, headers=_tus_headers(
        store, upload, **{"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length), **extra}))


@router.patch("/{id}", status_code=204, operation_id="appendToUpload",
              summary="Send the next piece of an upload (Upload-Offset: where it stands)",
              openapi_extra={**tus_headers("Tus-Resumable", "Upload-Offset"),
                             "requestBody": {"required": True, "content": {OCTETS: {"schema": {
                                 "type": "string", "format": "binary"}}}}},
              responses={204: {"description": "the new Upload-Offset"}, **responses(400, 401, 403, 404, 409, 412,
                                                                                   413, 415)})
async def patch(request: Request, services: ServicesDep, who: Caller, id: str = ID) -> Response:
    store = services.uploads
    if (refused := _version_refused(request, store)) is not None:
        return refused
    if request.headers.get("content-type", "").split(";")[0].strip() != OCTETS:
        return _refused(415, "unsupported_media_type", f"Content-Type: send {OCTETS}", store)
    offset = _number(request, "upload-offset")
    if offset is None:
        return _refused(400, "bad_request", "Upload-Offset: give where the piece starts (a whole number >= 0)", store)
    upload = store.get(upload_id(store.folder, id), who.name)
    if upload is None:
        return _refused(404, "not_found", "no such upload", store)
    try:
        new_offset = await _append(request, store, upload, offset)
    except UploadRefused as e:
        return _refused(e.status, e.code, e.message, store)
    return Response(status_code=204, headers=_tus_headers(store, upload, **{"Upload-Offset": str(new_offset)}))


@router.delete("/{id}", status_code=204, operation_id="deleteUpload", summary="Abandon an upload (tus termination)",
               openapi_extra=tus_headers("Tus-Resumable"),
               responses={204: {"description": "deleted"}, **responses(401, 403, 404, 412)})
async def delete(request: Request, services: ServicesDep, who: Caller, id: str = ID) -> Response:
    store = services.uploads
    if (refused := _version_refused(request, store)) is not None:
        return refused
    upload = store.get(upload_id(store.folder, id), who.name)
    if upload is None:
        return _refused(404, "not_found", "no such upload", store)
    try:
        await anyio.to_thread.run_sync(store.remove, upload)
    except UploadRefused as e:
        return _refused(e.status, e.code, e.message, store)
    return Response(status_code=204, headers=_tus_headers(store))


def refused_as_api_error(e: UploadRefused, field: str) -> ApiError:
    """An upload taken by a submission (``*_upload``) that cannot be used."""
    return ApiError(e.status, e.code, f"{field}: {e.message}", field=field)

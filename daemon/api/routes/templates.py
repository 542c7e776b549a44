"""``/api/v1/templates``: the template library over HTTP (list, add, remove, thumbnail).

Every template name from a request is confined to the library by
:func:`daemon.api.library.path_of`; an upload streams to a hidden file within the limits
and is checked to be a readable picture or video before it joins the library.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Path as PathParam, Request
from fastapi.responses import FileResponse, JSONResponse

from daemon.api import library, previews
from daemon.api.deps import API, Caller, ServicesDep
from daemon.api.errors import ApiError, responses
from daemon.api.multipart import read_multipart
from daemon.api.submit import Request as Form
from daemon.logsetup import get_logger

log = get_logger(__name__)
router = APIRouter(prefix=f"{API}/templates", tags=["templates"])
NAME = PathParam(..., description="a template's file name in the library", max_length=300)


@router.get("", operation_id="listTemplates", summary="The templates of the library (what template_name may name)",
            responses=responses(401, 404, 429))
async def list_templates(services: ServicesDep, _who: Caller) -> dict[str, Any]:
    return {"templates": await anyio.to_thread.run_sync(library.listing, services.cfg)}


@router.post("", status_code=201, operation_id="addTemplate",
             summary="Add a template to the library (multipart field `file`)",
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"], "properties": {"file": {
                     "type": "string", "format": "binary", "description": "a video (mp4, mov, mkv, webm) or "
                                                                         "photo (png, jpg) of one person"}}}}}}},
             responses=responses(400, 401, 403, 404, 409, 413, 415, 422, 429))
async def add_template(request: Request, services: ServicesDep, who: Caller) -> JSONResponse:
    cfg = services.cfg
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", "send the template as multipart/form-data, field `file`")
    incoming = await anyio.to_thread.run_sync(library.Incoming, cfg)
    try:
        form = await read_multipart(request, incoming, cfg, Form(), {"file": "template"}, (), set())
        if not form.templates:
            raise ApiError(400, "bad_request", "file: send the template as the multipart field `file`",
                           field="file")
        name = await anyio.to_thread.run_sync(library.add, cfg, incoming, form.templates[0][1])
    finally:
        await anyio.to_thread.run_sync(incoming.discard)
    log.info("template added", template=name, by=who.name)
    return JSONResponse({"name": name}, status_code=201)


@router.delete("/{name}", operation_id="deleteTemplate", summary="Remove a template from the library",
               responses=responses(400, 401, 403, 404, 429))
async def delete_template(services: ServicesDep, who: Caller, name: str = NAME) -> dict[str, str]:
    await anyio.to_thread.run_sync(library.remove, services.cfg, name)
    log.info("template deleted", template=name, by=who.name)
    return {"name": name, "action": "deleted"}


@router.get("/{name}/thumbnail", operation_id="templateThumbnail", summary="A JPEG of the template's first frame",
            response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}, **responses(400, 401, 404)})
async def thumbnail(services: ServicesDep, _who: Caller, name: str = NAME) -> FileResponse:
    cfg = services.cfg
    path = await anyio.to_thread.run_sync(lambda: library.path_of(cfg, name))
    try:
        picture = await anyio.to_thread.run_sync(previews.template_thumbnail, cfg, path)
    except (OSError, ValueError):
        # the reason names the server's file: it stays in the log, not in the answer
        raise ApiError(404, "no_picture", f"{name}: not a picture or video that can be read", field="name") from None
    return FileResponse(picture, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

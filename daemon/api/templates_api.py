"""``/api/v1/templates``: the template library over HTTP (list, add, remove, thumbnail)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.responses import FileResponse, JSONResponse

from daemon.api import library, previews
from daemon.api.auth import Principal
from daemon.api.errors import ApiError, responses
from daemon.logsetup import get_logger

log = get_logger(__name__)
API = "/api/v1"


def register(app: FastAPI, ctx: Any) -> None:
    cfg = ctx.cfg
    name_param = PathParam(..., description="a template's file name in the library", max_length=300)

    @app.get(f"{API}/templates", tags=["templates"], operation_id="listTemplates",
             summary="The templates of the library (what template_name may name)",
             responses=responses(401, 404, 429))
    async def list_templates(_who: Principal = Depends(ctx.reader)) -> dict[str, Any]:
        return {"templates": await anyio.to_thread.run_sync(library.listing, cfg)}

    @app.post(f"{API}/templates", status_code=201, tags=["templates"], operation_id="addTemplate",
              summary="Add a template to the library (multipart field `file`)",
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"], "properties": {"file": {
                      "type": "string", "format": "binary", "description": "a video (mp4, mov, mkv, webm) or "
                                                                          "photo (png, jpg) of one person"}}}}}}},
              responses=responses(400, 401, 403, 404, 409, 413, 429))
    async def add_template(request: Request, who: Principal = Depends(ctx.writer)) -> JSONResponse:
        limit = int(cfg.limits.max_file_size)
        form = await request.form(max_files=1, max_fields=5, max_part_size=64 * 1024)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "bad_request", "file: send the template as the multipart field `file`", field="file")
        try:
            name = await anyio.to_thread.run_sync(
                lambda: library.add(cfg, upload.filename, upload.file, max_bytes=limit))
        finally:
            await upload.close()
        log.info("template added", template=name, by=who.name)
        return JSONResponse({"name": name}, status_code=201)

    @app.delete(f"{API}/templates/{{name}}", tags=["templates"], operation_id="deleteTemplate",
                summary="Remove a template from the library", responses=responses(401, 403, 404, 429))
    async def delete_template(name: str = name_param, who: Principal = Depends(ctx.writer)) -> dict[str, str]:
        await anyio.to_thread.run_sync(library.remove, cfg, name)
        log.info("template deleted", template=name, by=who.name)
        return {"name": name, "action": "deleted"}

    @app.get(f"{API}/templates/{{name}}/thumbnail", tags=["templates"], operation_id="templateThumbnail",
             summary="A JPEG of the template's first frame", response_class=FileResponse,
             responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}, **responses(401, 404)})
    async def thumbnail(name: str = name_param, _who: Principal = Depends(ctx.reader)) -> FileResponse:
        def make():
            return previews.template_thumbnail(cfg, library.path_of(cfg, name))
        try:
            path = await anyio.to_thread.run_sync(make)
        except (OSError, ValueError) as e:
            raise ApiError(404, "no_picture", f"{name}: no picture could be read ({e})") from None
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

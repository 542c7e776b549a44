"""The API's description: ``/api/v1/openapi.json`` (FastAPI's) and ``/api/v1/docs``, a
reference page rendered on the server. Both are public -- workflow tools such as Dify
import the document by URL without a key, and it holds no secret (docs/security.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from daemon.api import docs_page
from daemon.api.deps import API

router = APIRouter()


@router.get(f"{API}/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(docs_page.render(request.app.openapi()))

"""``/l/{token}``: permanent links. Public: the token is the credential (an object key and
its HMAC tag, :mod:`daemon.storage.permalinks`); a forged or malformed one is 404."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Path as PathParam, Query
from fastapi.responses import RedirectResponse

from daemon.api.deps import ServicesDep
from daemon.api.errors import ApiError, responses
from daemon.errors import StorageError

router = APIRouter(tags=["links"])


@router.get("/l/{token}", operation_id="openLink", status_code=307,
            summary="A permanent link: redirects to a freshly signed URL of the video",
            responses={307: {"description": "redirect to the video"}, **responses(404, 410, 503)})
async def open_link(services: ServicesDep,
                    token: str = PathParam(..., description="the token of a link from a sidecar's outputs[].link",
                                           max_length=2048),
                    download: bool = Query(False, description="true: save the file instead of playing it")
                    ) -> RedirectResponse:
    cfg = services.cfg
    key = services.signer.key_of(token)
    if key is None or not key.startswith(cfg.storage.prefix):
        raise ApiError(404, "not_found", "no such link")

    def sign() -> str:
        store = services.store()
        if store.head(key) is None:
            raise ApiError(410, "gone", "this video was deleted")
        lifetime = min(float(cfg.api.link_redirect_lifetime), store.max_link_lifetime())
        url, _expires = store.presign_get(key, lifetime=lifetime, filename=key.rsplit("/", 1)[-1],
                                          disposition="attachment" if download else None)
        return url
    try:
        url = await anyio.to_thread.run_sync(sign)
    except StorageError as e:
        raise ApiError(503, "storage_unavailable", f"the store is not reachable: {e.message}",
                       headers={"Retry-After": "30"}) from None
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})

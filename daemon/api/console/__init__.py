"""The web console: server-rendered pages with a little plain JavaScript, served by the API.

No build step and nothing from a CDN: the HTML comes from the Jinja2 templates in
``templates/``, the script and style from ``static/``, all served by lipsyncd itself, so
the console works on an offline LAN. Pages read the share through the same
:class:`~daemon.api.jobdesk.JobDesk` as the API; the script changes things only through
the documented API routes (signed in by a session cookie and a console header).

Pages: ``/`` jobs (live progress over one SSE stream), ``/jobs/{name}`` one job (players,
links, the error and what to do, retry/cancel/delete), ``/new`` a new job, ``/templates``
the template library, ``/signin``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from daemon.api.console.routes import router



def install(app: FastAPI) -> None:
    app.include_router(router)
    # package data: the script and style, found through the package wherever it is installed
    app.mount("/static", StaticFiles(packages=[("daemon.api.console", "static")]), name="static")

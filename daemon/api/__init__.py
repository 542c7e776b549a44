"""The HTTP API: another way to drop jobs into the inbox, and to read their sidecars.

* ``app``: the FastAPI application and its routes; ``server``: runs it on uvicorn.
* ``submit``: reading a submission (streaming multipart or JSON) and checking it;
  ``drops``: staging files and publishing a job into the inbox; ``fetch``: URL downloads
  that refuse the server's own network; ``jobdesk``: reading, listing, deleting and
  retrying jobs on the share.
* ``auth``: API keys and rate limits; ``errors``: the one JSON error shape.
* ``client``: ``lipsyncd submit``, the command-line client.
"""

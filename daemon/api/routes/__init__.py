"""The API's routers, one module per resource: jobs, uploads, templates, links, health
and the reference documents. The web console's pages are in :mod:`daemon.api.console`."""

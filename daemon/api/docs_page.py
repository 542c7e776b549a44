"""The API's reference page (``/api/v1/docs``), rendered on the server from the OpenAPI
document: plain HTML with no script and nothing loaded from elsewhere, so it works on
an offline LAN (the usual Swagger UI pulls its code from a CDN)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
code,pre{font:13px ui-monospace,monospace;background:#f3f3f3;border-radius:4px}pre{padding:.6rem;overflow:auto}
.op{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.5rem;font-weight:700}.get{color:#0b6e2b}.post{color:#0a4fb3}
.delete{color:#a4161a}.patch,.head,.options{color:#6b4e00}table{border-collapse:collapse}td,th{padding:.2rem .6rem;
border-bottom:1px solid #eee;text-align:left;vertical-align:top}"""


def render(doc: dict[str, Any]) -> str:
    info = doc.get("info", {})
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
             f"content='width=device-width,initial-scale=1'><title>{escape(info.get('title', 'API'))} API</title>"
             f"<style>{_STYLE}</style></head><body><h1>{escape(info.get('title', ''))} API "
             f"<small>{escape(str(info.get('version', '')))}</small></h1><p>{escape(info.get('description', ''))}</p>"
             f"<p>Machine-readable: <a href='openapi.json'>openapi.json</a> (OpenAPI {escape(doc.get('openapi', ''))})"
             f"</p>"]
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            parts.append(_operation(method, path, op))
    parts.append("</body></html>")
    return "".join(parts)


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    out = [f"<section class=op id='{escape(op.get('operationId', ''))}'><div><span class='m {method}'>"
           f"{method.upper()}</span> <code>{escape(path)}</code> &mdash; {escape(op.get('summary', ''))}</div>"]
    if op.get("description"):
        out.append(f"<p>{escape(op['description'])}</p>")
    params = op.get("parameters") or []
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>")
        for p in params:
            out.append(f"<tr><td><code>{escape(p.get('name', ''))}</code></td><td>{escape(p.get('in', ''))}</td>"
                       f"<td>{escape(p.get('description', ''))}</td></tr>")
        out.append("</table>")
    body = (op.get("requestBody") or {}).get("content") or {}
    for ctype, media in body.items():
        props = (media.get("schema") or {}).get("properties") or {}
        if props:
            out.append(f"<p>Body <code>{escape(ctype)}</code>:</p><table>")
            for name, schema in props.items():
                out.append(f"<tr><td><code>{escape(name)}</code></td><td>{escape(schema.get('description', ''))}"
                           f"</td></tr>")
            out.append("</table>")
        if media.get("example"):
            out.append(f"<pre>{escape(json.dumps(media['example'], indent=2))}</pre>")
    codes = ", ".join(f"{escape(str(c))} {escape(r.get('description', ''))}" for c, r in (op.get("responses") or {}).items())
    out.append(f"<p><small>Answers: {codes}</small></p></section>")
    return "".join(out)

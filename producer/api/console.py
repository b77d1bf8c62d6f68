"""The operator console: static files in the package (producer/api/console/),
served at ``/`` by ``smsbulk api``; no CDN, no build step.

The page holds no data of its own: its script asks for the API token once,
keeps it in the tab's sessionStorage and calls the ``/v1`` JSON API with it
as the Bearer header, like any other client. So the page itself needs no
token, and the headers below keep it from loading anything from elsewhere
or leaking its address.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

CONSOLE_DIR = Path(__file__).with_name("console")
FILES = {
    "console.js": "text/javascript",
    "console.css": "text/css",
}
HEADERS = {
    # Only this origin's own script, style and API; no inline script, no frames.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return _file("index.html", "text/html")


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return _file(name, FILES[name])


def _file(name: str, content_type: str) -> web.FileResponse:
    return web.FileResponse(
        CONSOLE_DIR / name, headers={**HEADERS, "Content-Type": f"{content_type}; charset=utf-8"}
    )


def add_console(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/console/{name}", asset)

"""`GET /`: the one-file page that sends an event and shows it work (static/index.html)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse


@cache
def page_html() -> str:
    """The page, read once from the package."""
    return files("agentflow.gateway").joinpath("static/index.html").read_text(encoding="utf-8")


async def page(request: Request) -> HTMLResponse:
    """Serve the page (it asks for the API key itself; no key needed to load it)."""
    return HTMLResponse(page_html(), headers={
        "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    })  # fmt: skip

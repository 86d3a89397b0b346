"""The Starlette app: routes, the page, /openapi.json, problem answers, start and stop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentflow.config import Settings, get_settings
from agentflow.errors import ConfigError
from agentflow.gateway.auth import KeyRing
from agentflow.gateway.openapi import openapi_document
from agentflow.gateway.page import page
from agentflow.gateway.problems import HTTPProblem
from agentflow.gateway.routes import routes
from agentflow.gateway.state import Gateway

log = logging.getLogger("agentflow.gateway")
INSECURE_FLAG = "--insecure-no-auth-dev-only"


def create_app(settings: Settings | None = None, *, insecure_no_auth: bool = False) -> Starlette:
    """The gateway app. Refuses (ConfigError) to run with no API keys unless
    `insecure_no_auth` (the CLI's ``--insecure-no-auth-dev-only``)."""
    from agentflow import __version__

    settings = settings or get_settings()
    if not settings.gateway.keys and not insecure_no_auth:
        raise ConfigError(
            "the gateway has no API keys: add [gateway] keys to agentflow.toml (make one with "
            f"`agentflow gateway hash-key --new`), or pass {INSECURE_FLAG} on a laptop"
        )
    if insecure_no_auth:
        log.warning("AUTHENTICATION IS OFF (%s): anyone who reaches this port may emit "
                    "events for every agent", INSECURE_FLAG)  # fmt: skip
    gateway = Gateway(settings, KeyRing(settings.gateway.keys, open_access=insecure_no_auth))
    document = openapi_document(__version__)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return HTTPProblem(exc.status_code, "http", str(exc.detail)).response(request.url.path)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return HTTPProblem(500, "internal", "Internal error",
                           type(exc).__name__).response(request.url.path)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=[*routes(), Route("/", page, methods=["GET"]),
                Route("/openapi.json", openapi, methods=["GET"])],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )  # fmt: skip
    app.state.gateway = gateway
    return app

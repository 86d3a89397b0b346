"""Safe defaults for `celery -A agentflow flower`: loopback only, and never unauthenticated.

Flower binds every interface and serves its dashboard and HTTP API (which can revoke and
send tasks) without authentication unless told otherwise. Under ``celery -A agentflow
flower`` AgentFlow changes both defaults, after Flower has read its options (command line,
``FLOWER_*`` environment, ``flowerconfig.py``) and before it binds its port:

- no ``--address`` (``FLOWER_ADDRESS``): it binds 127.0.0.1; ``--address=0.0.0.0`` still
  binds every interface.
- no ``--basic-auth`` (``FLOWER_BASIC_AUTH=user:password``) and no OAuth (``--auth``): Flower
  refuses to start and says how to give it credentials, unless
  ``AGENTFLOW_FLOWER_UNAUTHENTICATED=1`` allows it (local debugging).

Flower's ``/metrics`` and ``/healthcheck`` answer without authentication by Flower's design.

The hook is Celery's ``import_modules`` signal, which Flower's app sends from its constructor:
after option parsing, before the server binds. In any other program it does nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import click
from celery import Celery, signals

log = logging.getLogger("agentflow.flower")

UNAUTHENTICATED_ENV = "AGENTFLOW_FLOWER_UNAUTHENTICATED"
DEFAULT_ADDRESS = "127.0.0.1"
NO_AUTH_MESSAGE = (
    "Error: Flower would serve AgentFlow's dashboard and API without authentication "
    "(anyone who reaches it could read events and revoke or send tasks). Give it "
    "credentials: FLOWER_BASIC_AUTH=user:password celery -A agentflow flower (or "
    "--basic-auth=user:password, or OAuth with --auth). For local debugging only, "
    f"{UNAUTHENTICATED_ENV}=1 lets it start without. See docs/security.md."
)
BAD_BASIC_AUTH_MESSAGE = (
    "Error: every Flower --basic-auth (FLOWER_BASIC_AUTH) entry must be user:password "
    "with both parts non-empty (several: comma-separated)."
)


def running_flower() -> bool:
    """Whether this process is running `celery ... flower` (its click command is current)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "flower":
        return False
    return ctx.find_root().command.name == "celery"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def enforce(options: Any, environ: Mapping[str, str] = os.environ) -> None:
    """Apply AgentFlow's defaults to Flower's parsed `options`; SystemExit (with a message)
    when Flower must not start."""
    if not options.unix_socket and not options.address:
        options.address = DEFAULT_ADDRESS
    basic = [entry for entry in (options.basic_auth or []) if entry is not None]
    if basic:
        for entry in basic:
            user, _, password = str(entry).partition(":")
            if not user or not password:
                raise SystemExit(BAD_BASIC_AUTH_MESSAGE)
        return
    if options.auth:
        return
    if _truthy(environ.get(UNAUTHENTICATED_ENV)):
        log.warning("Flower runs without authentication (%s is set); anyone who reaches "
                    "%s can use it", UNAUTHENTICATED_ENV,
                    options.unix_socket or f"{options.address}:{options.port}")  # fmt: skip
        return
    raise SystemExit(NO_AUTH_MESSAGE)


def _on_import_modules(sender: Any = None, **_: Any) -> None:
    if not running_flower():
        return
    from tornado.options import options  # Flower's options live in tornado's registry

    enforce(options)


def install(app: Celery) -> None:
    """Guard every Flower started with `app` (``celery -A agentflow flower``)."""
    signals.import_modules.connect(_on_import_modules, sender=app, weak=False,
                                   dispatch_uid="agentflow.flower_security")  # fmt: skip

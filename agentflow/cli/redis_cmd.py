"""`agentflow redis url|start|stop`: the Redis AgentFlow uses, embedded or not."""

from __future__ import annotations

from pathlib import Path

import click

from agentflow.cli._util import friendly_errors
from agentflow.config import mask_url


def _runtime_dir() -> Path | None:
    from agentflow.config import get_settings

    d = get_settings().broker.embedded_dir
    return Path(d) if d else None


@click.group("redis")
def redis() -> None:
    """Find, start or stop the Redis AgentFlow uses."""


@redis.command("url")
@click.option(
    "--show-password",
    is_flag=True,
    help="Print the URL with its password (for scripts that need it). Without it the "
    "password is masked.",
)
@friendly_errors
def url(show_password: bool) -> None:
    """Print the Redis URL in use (starting the embedded one if nothing else answers).

    The password is masked unless --show-password is given: that prints the secret.
    """
    from agentflow._redis.connection import redis_url

    found = redis_url()
    click.echo(found if show_password else mask_url(found))


@redis.command("start")
@friendly_errors
def start() -> None:
    """Start the embedded Redis (if not running) and print its URL."""
    from agentflow._redis.embedded import ensure_embedded

    click.echo(mask_url(ensure_embedded(_runtime_dir())))


@redis.command("stop")
@friendly_errors
def stop() -> None:
    """Stop the embedded Redis."""
    from agentflow._redis.embedded import stop_embedded

    click.echo("stopped" if stop_embedded(_runtime_dir()) else "embedded Redis was not running")

"""`agentflow health --liveness | --readiness`: probes for one worker (Kubernetes, compose)."""

from __future__ import annotations

import sys

import click

from agentflow.cli._util import friendly_errors
from agentflow.durations import parse_duration


@click.command("health")
@click.option(
    "--liveness",
    "mode",
    flag_value="liveness",
    default=True,
    help="The worker's consumer loop and event loop are turning (default).",
)
@click.option(
    "--readiness",
    "mode",
    flag_value="readiness",
    help="Alive, consuming its queues, and its broker answers.",
)
@click.option(
    "--max-age", default="30s", show_default=True, help="How old the worker's beat may be."
)
@click.option(
    "--file",
    "path",
    default=None,
    help="The worker's beat file (default: [monitoring] health_file).",
)
@friendly_errors
def health(mode: str, max_age: str, path: str | None) -> None:
    """Exit 0 when the worker on this host is alive (or ready), else 1 with the reason.

    It reads the beat file the worker's own loops write (docs/deploy.md); it sends nothing
    to the worker, so a busy worker answers at once."""
    from agentflow._worker.liveness import check, health_file
    from agentflow.config import get_settings

    settings = get_settings()
    beat = health_file(path or settings.monitoring.health_file)
    why = check(beat, max_age=parse_duration(max_age), readiness=mode == "readiness")
    if why is None and mode == "readiness":
        why = _broker_problem()
    if why is not None:
        click.echo(f"{mode}: FAIL: {why}", err=True)
        sys.exit(1)
    click.echo(f"{mode}: ok")


def _broker_problem() -> str | None:
    """Why the broker does not answer, or None."""
    import redis

    from agentflow._redis.connection import open_redis, redis_url

    try:
        client = open_redis(redis_url(), max_connections=1, timeout=2, socket_connect_timeout=2,
                            socket_timeout=2)  # fmt: skip
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"the broker does not answer: {exc}"
    return None

"""`agentflow signal <event id> <name>`: resume an event that waits for a signal."""

from __future__ import annotations

import click

from agentflow.cli._util import friendly_errors


@click.command("signal")
@click.argument("event_id")
@click.argument("name")
@click.option("--payload", help="The signal's payload as JSON (any JSON value).")
@friendly_errors
def signal(event_id: str, name: str, payload: str | None) -> None:
    """Resume EVENT_ID, which waits for signal NAME (its agent returned WaitFor(NAME))."""
    import json

    from agentflow.client import Client

    value = None
    if payload is not None:
        try:
            value = json.loads(payload, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None
    client = Client()
    try:
        if client.signal(event_id, name, value):
            click.echo(f"{event_id}: resumed with {name!r}")
            return
        raise click.ClickException(
            f"{event_id} does not wait for {name!r} (state {client.state(event_id)})"
        )
    finally:
        client.close()


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON for AgentFlow (no NaN or Infinity)")

"""`agentflow cancel <event id>`: cancel an event wherever it is (see ``Client.cancel``)."""

from __future__ import annotations

import click

from agentflow.cli._util import friendly_errors


@click.command("cancel")
@click.argument("event_ids", nargs=-1, required=True)
@friendly_errors
def cancel(event_ids: tuple[str, ...]) -> None:
    """Cancel events: queued, waiting, running or waiting for their tool calls."""
    from agentflow.client import Client

    client = Client()
    try:
        for event_id in event_ids:
            if client.cancel(event_id):
                click.echo(f"{event_id}: cancelled")
            else:
                click.echo(f"{event_id}: already finished ({client.state(event_id)})")
    finally:
        client.close()

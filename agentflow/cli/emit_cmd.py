"""`agentflow emit`: publish one event from the shell, optionally wait for its result."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from agentflow.cli._util import FiniteFloat, friendly_errors, json_object_option


@click.command("emit")
@click.option("--agent", "agent_name", help="Agent to run the event (else routed by --type).")
@click.option("--type", "event_type", required=True, help="The event type.")
@click.option(
    "--data", default="{}", callback=json_object_option, help="Event data as a JSON object."
)
@click.option("--session", "session_id", help="Session id (state is kept per session).")
@click.option("--id", "event_id", help="Event id (default: a new uuid).")
@click.option("--idempotency-key", help="Events with the same key produce a single result.")
@click.option(
    "--metadata", default="{}", callback=json_object_option, help="Event metadata as a JSON object."
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option(
    "--timeout",
    type=FiniteFloat(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait with --wait or --stream (a finite number >= 0).",
)
@click.option("--stream", is_flag=True, help="Print streamed items (LLM tokens) as they arrive.")
@click.option("--delay", help='Run the event after this long ("30s", "10m", "1d", or seconds).')
@click.option(
    "--at",
    "at_text",
    help="Run the event at this time: ISO 8601 (UTC unless it names its zone) or epoch seconds.",
)
@friendly_errors
def emit(
    agent_name: str | None,
    event_type: str,
    data: dict[str, object],
    session_id: str | None,
    event_id: str | None,
    idempotency_key: str | None,
    metadata: dict[str, object],
    wait: bool,
    timeout: float,
    stream: bool,
    delay: str | None,
    at_text: str | None,
) -> None:
    """Publish one event; prints its id, or its result with --wait."""
    from agentflow.client import Client

    event: dict[str, object] = {
        "type": event_type,
        "data": data,
        "metadata": metadata,
    }
    for key, value in (("agent", agent_name), ("session_id", session_id), ("id", event_id),
                       ("idempotency_key", idempotency_key)):  # fmt: skip
        if value:
            event[key] = value
    from agentflow._redis.schedule import due_time

    at = _parse_at(at_text)
    try:
        due_time(delay, at)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    client = Client()
    try:
        handle = client.emit(event, delay=delay, at=at)
        if stream:
            for item in handle.stream(timeout=timeout):
                click.echo(item if isinstance(item, str) else json.dumps(item), nl=False)
            click.echo()
        if not (wait or stream):
            click.echo(handle.id)
            return
        result = handle.result(timeout=timeout)
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    finally:
        client.close()


def _parse_at(text: str | None) -> datetime | float | None:
    """``--at``: epoch seconds, or an ISO 8601 time (UTC unless it names its zone)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time or epoch seconds",
                                 param_hint="--at") from None  # fmt: skip
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

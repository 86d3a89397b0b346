"""`agentflow dlq list|show|replay|purge`: the dead-letter queue from the shell."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.console import Console
from rich.table import Table

from agentflow.cli._util import friendly_errors
from agentflow.dlq import DeadLetterQueue
from agentflow.errors import AgentFlowError


def _dlq() -> DeadLetterQueue:
    from agentflow._redis.connection import get_redis
    from agentflow.config import get_settings

    return DeadLetterQueue(get_redis(), get_settings().broker.key_prefix)


@click.group("dlq")
def dlq() -> None:
    """Events that could not run, with the reason."""


@dlq.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@friendly_errors
def list_(limit: int, as_json: bool) -> None:
    """Show dead-lettered events, oldest first."""
    queue = _dlq()
    entries = queue.list(limit=limit)
    if as_json:
        for e in entries:
            click.echo(e.to_json())
        return
    table = Table(title=f"dead-letter queue: {len(queue)} entries")
    table.add_column("id", no_wrap=True, min_width=32)
    for col in ("failed at", "queue", "event", "reason"):
        table.add_column(col, overflow="fold")
    for e in entries:
        when = dt.datetime.fromtimestamp(e.failed_at).strftime("%Y-%m-%d %H:%M:%S")
        what = (
            f"{e.event.get('type')} {e.event.get('id')}"
            if e.event
            else f"raw {e.content_type or ''}"
        )
        table.add_row(e.id, when, e.queue or "-", what, e.reason)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(table)


@dlq.command("show")
@click.argument("entry_id")
@friendly_errors
def show(entry_id: str) -> None:
    """Print one entry in full."""
    entry = _dlq().get(entry_id)
    if entry is None:
        raise click.ClickException(f"no dead-letter entry {entry_id}")
    click.echo(json.dumps(json.loads(entry.to_json()), indent=2))


@dlq.command("replay")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every entry.")
@friendly_errors
def replay(entry_ids: tuple[str, ...], replay_all: bool) -> None:
    """Re-emit entries' events; an entry is removed only once its event is queued again."""
    from agentflow.client import Client

    queue = _dlq()
    ids = [e.id for e in queue.list(limit=1_000_000)] if replay_all else list(entry_ids)
    if not ids:
        raise click.UsageError("give entry ids or --all")
    client = Client()
    failed = 0
    try:
        for entry_id in ids:
            try:
                handle = queue.replay(entry_id, client.emit)
                click.echo(f"{entry_id}: re-emitted as event {handle.id} → {handle.queue}")
            except KeyError:
                failed += 1
                click.echo(f"{entry_id}: no such entry", err=True)
            except AgentFlowError as exc:
                failed += 1
                click.echo(f"{entry_id}: kept: {exc}", err=True)
    finally:
        client.close()
    if failed:
        raise SystemExit(1)


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def purge(yes: bool) -> None:
    """Delete every entry."""
    queue = _dlq()
    if not yes:
        click.confirm(f"delete all {len(queue)} dead-letter entries?", abort=True)
    click.echo(f"purged {queue.purge()} entries")

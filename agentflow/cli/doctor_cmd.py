"""`agentflow doctor`: check that the Redis AgentFlow uses keeps what it is given."""

from __future__ import annotations

import json

import click

from agentflow.cli._util import friendly_errors


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@friendly_errors
def doctor(as_json: bool) -> None:
    """Check the Redis AgentFlow uses: one line per check, OK, WARN or FAIL.

    Reachable (Redis 6.2 or later), appendonly, maxmemory-policy noeviction, memory
    headroom, kombu's global_keyprefix unset, AgentFlow's epoch key. Never starts the
    embedded Redis. Exit status 1 when any check FAILs.
    """
    from agentflow.config import get_settings
    from agentflow.doctor import diagnose

    url, checks = diagnose(get_settings())
    failed = any(c.status == "FAIL" for c in checks)
    if as_json:
        report = {"redis": url, "ok": not failed, "checks": [c.to_json() for c in checks]}
        click.echo(json.dumps(report, indent=2))
    else:
        for check in checks:
            click.echo(f"{check.status:<4}  {check.name:<17} {check.detail}")
    if failed:
        raise SystemExit(1)

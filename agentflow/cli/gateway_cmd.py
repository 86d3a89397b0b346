"""`agentflow gateway`: serve the HTTP/SSE gateway; `agentflow gateway hash-key`: make a key."""

from __future__ import annotations

import sys

import click

from agentflow.cli._util import friendly_errors


@click.group("gateway", invoke_without_command=True)
@click.option("--host", default=None, help="Address to bind ([gateway] host; 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port ([gateway] port; 8080).")
@click.option("--log-level", default="warning", show_default=True)
@click.option("--insecure-no-auth-dev-only", "insecure", is_flag=True,
              help="Serve with NO authentication (loopback only). Never in production.")  # fmt: skip
@click.pass_context
@friendly_errors
def gateway(ctx: click.Context, host: str | None, port: int | None, log_level: str,
            insecure: bool) -> None:  # fmt: skip
    """Serve AgentFlow over HTTP: POST /v1/events, SSE streams, the page at /, /openapi.json."""
    if ctx.invoked_subcommand is not None:
        return
    from agentflow.config import get_settings
    from agentflow.gateway.server import serve

    settings = get_settings()
    host = host or settings.gateway.host
    port = settings.gateway.port if port is None else port
    if insecure:
        click.secho("WARNING: --insecure-no-auth-dev-only: the gateway has NO authentication",
                    fg="red", bold=True, err=True)  # fmt: skip
    click.echo(f"agentflow gateway on http://{host}:{port}", err=True)
    serve(settings, host, port, insecure_no_auth=insecure, log_level=log_level)


@gateway.command("hash-key")
@click.argument("key", required=False)
@click.option("--new", "generate", is_flag=True, help="Make a new random key and print it too.")
@click.option("--agents", default="*", show_default=True, help="Comma-separated scope.")
@click.option("--rate", default=50.0, show_default=True, help="Requests per second.")
def hash_key_cmd(key: str | None, generate: bool, agents: str, rate: float) -> None:
    """Print the [gateway] keys entry for KEY (read from stdin when not given)."""
    from agentflow.gateway.auth import hash_key, new_key

    if generate:
        key = new_key()
        click.echo(f"key (give it to the client; it is not stored): {key}", err=True)
    elif key is None:
        key = sys.stdin.readline().strip()
    if not key:
        raise click.UsageError("give a KEY, pipe one on stdin, or pass --new")
    scope = ", ".join(f'"{a.strip()}"' for a in agents.split(",") if a.strip())
    click.echo(f'keys = [{{hash = "{hash_key(key)}", agents = [{scope}], rate = {rate:g}}}]')

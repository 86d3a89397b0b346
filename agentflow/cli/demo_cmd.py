"""`agentflow demo`: run the main job end to end on embedded defaults (what `make demo` runs)."""

from __future__ import annotations

import click

from agentflow.cli._util import friendly_errors


@click.command("demo")
@click.option("--events", "count", default=300, show_default=True, help="Events to emit.")
@click.option("--workers", default=2, show_default=True, help="Worker processes (one per core).")
@click.option(
    "--concurrency", default=100, show_default=True, help="Events each worker runs at once."
)
@click.option("--latency", default="50ms", show_default=True, help="Mock LLM latency.")
@click.option("--redis-url", help="Use this Redis instead of a private embedded one.")
@friendly_errors
def demo(count: int, workers: int, concurrency: int, latency: str, redis_url: str | None) -> None:
    """Start Redis, the mock LLM and a worker; emit events; print a summary; stop everything."""
    from agentflow.demo import run_demo

    report = run_demo(count, workers, concurrency, latency, redis_url, echo=click.echo)
    click.echo("per agent: " + ", ".join(f"{k} {v}" for k, v in sorted(report.per_agent.items())))
    click.echo("demo: " + report.summary())
    if report.errors or not report.state_ok or report.dead_lettered != 1:
        raise SystemExit(1)

"""`agentflow mock-llm`: the OpenAI-compatible mock server on loopback."""

from __future__ import annotations

import click

from agentflow.cli._util import friendly_errors
from agentflow.durations import parse_duration


@click.command("mock-llm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=int)
@click.option("--latency", default="50ms", show_default=True, help="Delay of every reply.")
@click.option("--jitter", default="0s", show_default=True, help="Extra random delay, 0..jitter.")
@click.option("--error-rate", default=0.0, show_default=True, help="Fraction answered 500.")
@click.option("--rate-limit-every", default=0, show_default=True, help="Every N-th request 429.")
@click.option("--retry-after", default="1s", show_default=True, help="Retry-After on 429/503.")
@click.option("--workers", default=1, show_default=True, help="Server processes.")
@friendly_errors
def mock_llm(
    host: str, port: int, latency: str, jitter: str, error_rate: float,
    rate_limit_every: int, retry_after: str, workers: int,
) -> None:  # fmt: skip
    """Serve /v1/chat/completions (+SSE), /v1/embeddings, Azure and Ollama paths, /stats."""
    from agentflow.mock_llm.server import serve_forever

    click.echo(f"mock LLM on http://{host}:{port} (latency {latency})", err=True)
    serve_forever(
        host, port, workers,
        latency=parse_duration(latency), jitter=parse_duration(jitter), error_rate=error_rate,
        rate_limit_every=rate_limit_every, retry_after=parse_duration(retry_after),
    )  # fmt: skip

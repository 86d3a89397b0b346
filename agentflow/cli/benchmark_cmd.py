"""`agentflow benchmark`: a steady load against a running cluster, or one it brings up (--local)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agentflow.cli._util import friendly_errors, parse_json_object
from agentflow.durations import parse_duration

WORKLOAD_NAMES = ("W0", "W1", "W2", "W2http", "W2httpx", "W3")
"""The standard workloads' names (agentflow.bench.workloads, not imported at CLI start)."""


def local_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `benchmark` and `loadtest`: cluster, outputs, profiling."""
    options = [
        click.option("--local", is_flag=True,
                     help="Bring up Redis (embedded unless --redis-url), workers and the mock LLM."),
        click.option("--workers", default=1, show_default=True, help="Local worker processes."),
        click.option("--concurrency", default=200, show_default=True,
                     help="Local worker concurrency (events in flight per worker)."),
        click.option("--pool", default=None, type=click.Choice(["threads", "prefork", "solo"]),
                     help="Pass -P to the local workers (default: none, AgentFlow's pool)."),
        click.option("--redis-url", help="With --local: use this Redis instead of an embedded one."),
        click.option("--mock-latency", default="50ms", show_default=True,
                     help="With --local: mock LLM latency."),
        click.option("--warmup", default="1s", show_default=True,
                     help="Load before measuring, not counted."),
        click.option("--profile", type=click.Choice(["cpu"]),
                     help="With --local: a CPU profile of the workers (py-spy, collapsed stacks)."),
        click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Where --profile writes."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
        click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write an HTML report (latency histogram, throughput over time)."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar (default: when stderr is a terminal)."),
        click.option("--with-hooks", is_flag=True,
                     help="With --local: workers run five no-op lifecycle hooks (their cost)."),
        click.option("--with-trace", is_flag=True,
                     help="With --local: workers record traces ([monitoring] trace)."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_local(local: bool, workers: int, concurrency: int, pool: str | None, redis_url: str | None,
                mock_latency: str, *, hooks: bool = False, trace: bool = False) -> Any:  # fmt: skip
    """LocalOptions for --local, else None."""
    if not local:
        if hooks or trace:
            raise click.UsageError("--with-hooks and --with-trace need --local")
        return None
    from agentflow.bench.local import LocalOptions

    env = {}
    if hooks:
        env["AGENTFLOW_AGENTS__MODULES"] = '["agentflow.bench.noop_hooks"]'
    if trace:
        env["AGENTFLOW_MONITORING__TRACE"] = "true"
    return LocalOptions(workers=workers, concurrency=concurrency, pool=pool,
                        redis_url=redis_url, mock_latency=mock_latency, env=env)  # fmt: skip


def features(hooks: bool, trace: bool) -> str:
    """ " +hooks +trace" as the run's name says what the workers did besides the work."""
    return (" +hooks" if hooks else "") + (" +trace" if trace else "")


def run_and_report(opts: Any, progress: bool | None, as_json: bool, html_path: Path | None) -> None:
    """Run with a progress bar (on a terminal unless told), then print/write the report."""
    from agentflow.bench.output import emit_outputs, progress_bar
    from agentflow.bench.run import run

    show = sys.stderr.isatty() if progress is None else progress
    with progress_bar(show) as on_progress:
        report = run(opts, on_progress)
    emit_outputs(report, as_json, html_path)
    if opts.profile and not as_json:
        click.echo(f"{opts.profile} profile: {opts.profile_output}")


def check_profile(profile: str | None, output: Path | None) -> Path | None:
    """--profile needs --output (a default name otherwise)."""
    if profile and output is None:
        return Path(f"agentflow-{profile}.collapsed")
    return output


@click.command("benchmark")
@click.option("--duration", help="How long to run, e.g. 60s (default 60s unless --requests).")
@click.option("--concurrent-users", "users", default=10, show_default=True,
              help="Virtual users; each keeps one event in flight.")  # fmt: skip
@click.option("--agent", help="Agent to drive (default: noop, or the --workload's agent).")
@click.option("--workload", type=click.Choice(WORKLOAD_NAMES),
              help="A standard workload (see docs/benchmarks.md).")  # fmt: skip
@click.option("--requests", type=int, help="Stop after this many events instead of a duration.")
@click.option("--rate", type=float,
              help="Open loop: send this many events/s whatever the latency; "
                   "--concurrent-users then caps the events in flight.")  # fmt: skip
@click.option("--data", help="JSON object sent as each event's data (with --agent).")
@click.option("--driver", type=click.Choice(["lean", "client", "async"]), default="lean",
              show_default=True,
              help="lean: batched emits and one result subscription; client: a thread per "
                   "user calling Client.emit and handle.result(), as an application does; "
                   "async: a coroutine per user doing the same through AsyncClient.")  # fmt: skip
@local_options
@friendly_errors
def benchmark(
    duration: str | None, users: int, agent: str | None, workload: str | None,
    requests: int | None, rate: float | None, data: str | None, driver: str, local: bool,
    workers: int, concurrency: int,
    pool: str | None, redis_url: str | None, mock_latency: str, warmup: str, profile: str | None,
    output: Path | None, as_json: bool, html_path: Path | None, progress: bool | None,
    with_hooks: bool, with_trace: bool,
) -> None:  # fmt: skip
    """Drive a steady load (N concurrent users) and report requests/s, latency, memory."""
    from agentflow.bench.run import RunOptions
    from agentflow.bench.workloads import WORKLOADS, for_agent

    if workload:
        chosen = WORKLOADS[workload]
    else:
        payload = parse_json_object(data, "--data") if data is not None else None
        chosen = for_agent(agent or "noop", payload)
    seconds = parse_duration(duration) if duration else (None if requests else 60.0)
    if rate is not None and rate <= 0:
        raise click.BadParameter("must be above 0", param_hint="--rate")
    name = f"{chosen.name} x{users} users" if rate is None else (
        f"{chosen.name} at {rate:g}/s (≤{users} in flight)")  # fmt: skip
    name += features(with_hooks, with_trace)
    opts = RunOptions(
        workload=chosen, users=lambda t: users, name=name, rate=rate,
        duration=seconds, requests=requests, warmup=parse_duration(warmup),
        local=build_local(local, workers, concurrency, pool, redis_url, mock_latency,
                          hooks=with_hooks, trace=with_trace),
        profile=profile,  # type: ignore[arg-type]
        profile_output=check_profile(profile, output), max_users=users,
        extra={"concurrent_users": users, "rate": rate},
        driver=driver,  # type: ignore[arg-type]
    )  # fmt: skip
    run_and_report(opts, progress, as_json, html_path)

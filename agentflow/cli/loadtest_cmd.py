"""`agentflow loadtest`: virtual users ramping through stages (k6 style), or a preset shape."""

from __future__ import annotations

from pathlib import Path

import click

from agentflow.cli._util import friendly_errors, parse_json_object
from agentflow.cli.benchmark_cmd import (
    WORKLOAD_NAMES,
    build_local,
    check_profile,
    features,
    local_options,
    run_and_report,
)
from agentflow.durations import parse_duration


@click.command("loadtest")
@click.option("--stages", default="stress", show_default=True,
              help='DURATION:USERS,... e.g. "30s:10,1m:100,30s:10", or a preset: '
                   "stress, spike, soak.")  # fmt: skip
@click.option("--agent", help="Agent to drive (default: noop, or the --workload's agent).")
@click.option("--workload", type=click.Choice(WORKLOAD_NAMES), help="A standard workload.")
@click.option("--data", help="JSON object sent as each event's data (with --agent).")
@local_options
@friendly_errors
def loadtest(
    stages: str, agent: str | None, workload: str | None, data: str | None, local: bool,
    workers: int, concurrency: int, pool: str | None, redis_url: str | None, mock_latency: str,
    warmup: str, profile: str | None, output: Path | None, as_json: bool,
    html_path: Path | None, progress: bool | None, with_hooks: bool, with_trace: bool,
) -> None:  # fmt: skip
    """Ramp virtual users through stages and report as `benchmark` does."""
    from agentflow.bench.run import RunOptions
    from agentflow.bench.stages import parse_stages, total_seconds, users_at
    from agentflow.bench.workloads import WORKLOADS, for_agent

    try:
        shape = parse_stages(stages)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--stages") from None
    if workload:
        chosen = WORKLOADS[workload]
    else:
        payload = parse_json_object(data, "--data") if data is not None else None
        chosen = for_agent(agent or "noop", payload)
    peak = max(s.users for s in shape)
    opts = RunOptions(
        workload=chosen, users=lambda t: users_at(shape, t),
        name=f"{chosen.name} {stages}{features(with_hooks, with_trace)}",
        duration=total_seconds(shape), warmup=parse_duration(warmup),
        local=build_local(local, workers, concurrency, pool, redis_url, mock_latency,
                          hooks=with_hooks, trace=with_trace),
        profile=profile,  # type: ignore[arg-type]
        profile_output=check_profile(profile, output), max_users=peak,
        extra={"stages": stages, "peak_users": peak}, warmup_users=shape[0].users or 1,
    )  # fmt: skip
    run_and_report(opts, progress, as_json, html_path)

"""Show a report: a rich table on the terminal, JSON for machines, an HTML file; a progress bar."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentflow.bench import driver
from agentflow.bench.html import render_html
from agentflow.bench.stats import BenchReport


def print_report(report: BenchReport, console: Console | None = None) -> None:
    """The summary as a table."""
    console = console or Console()
    s = report.summary()
    lat = s["latency_ms"]
    table = Table(title=f"AgentFlow benchmark: {report.name} (agent {report.agent})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in [
        ("requests/s", f"{s['requests_per_second']:.1f}"),
        ("events sent / completed", f"{s['sent']} / {s['completed']}"),
        ("errors", f"{s['errors']} ({s['error_rate']:.2%})"),
        ("latency avg", f"{lat['avg']:.1f} ms"),
        ("latency p50", f"{lat['p50']:.1f} ms"),
        ("latency p95", f"{lat['p95']:.1f} ms"),
        ("latency p99", f"{lat['p99']:.1f} ms"),
        ("worker RSS (peak, all processes)", f"{s['worker_rss_mb_max']:.0f} MB"),
        ("events in flight (peak)", str(s["in_flight_max"])),
        ("wall-clock", f"{s['seconds']:.1f} s"),
    ]:
        table.add_row(k, v)
    producer_cpu = report.settings.get("producer_cpu_us_per_event")
    if producer_cpu is not None:
        table.add_row(f"producer CPU per event ({report.settings.get('driver', '?')} driver)",
                      f"{producer_cpu} µs")  # fmt: skip
    worker_cpu = report.settings.get("worker_cpu_us_per_event")
    if worker_cpu is not None:
        table.add_row("worker CPU per event (all worker processes)", f"{worker_cpu} µs")
    console.print(table)
    for example in report.error_examples[:5]:
        console.print(f"[red]error:[/red] {example}")


def emit_outputs(report: BenchReport, as_json: bool, html_path: Path | None) -> None:
    """Print the report (table or JSON) and write the HTML file if asked."""
    if html_path is not None:
        html_path.write_text(render_html(report))
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, Console(stderr=False))
        if html_path is not None:
            Console().print(f"HTML report: {html_path}")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[driver.Progress], None] | None]:
    """A rich progress bar on stderr fed by the driver's progress callback."""
    if not enabled:
        yield None
        return
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:  # fmt: skip
        task = bar.add_task("running", total=None, info="starting ...")

        def update(p: driver.Progress) -> None:
            rate = p.completed / p.elapsed if p.elapsed else 0.0
            bar.update(task, total=p.total or None, completed=p.done,
                       info=f"{p.completed} done, {rate:.0f}/s, {p.in_flight} in flight, "
                            f"{p.users} users, {p.errors} errors")  # fmt: skip

        yield update

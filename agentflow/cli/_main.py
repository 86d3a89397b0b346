"""The root click group; each command module registers itself in `_COMMANDS`."""

from __future__ import annotations

import importlib

import click

# module path, attribute: each is a click command or group added to `main`.
_COMMANDS: list[tuple[str, str]] = [
    ("agentflow.cli.config_cmd", "config"),
    ("agentflow.cli.emit_cmd", "emit"),
    ("agentflow.cli.cancel_cmd", "cancel"),
    ("agentflow.cli.signal_cmd", "signal"),
    ("agentflow.cli.trace_cmd", "trace"),
    ("agentflow.cli.dlq_cmd", "dlq"),
    ("agentflow.cli.redis_cmd", "redis"),
    ("agentflow.cli.doctor_cmd", "doctor"),
    ("agentflow.cli.health_cmd", "health"),
    ("agentflow.cli.demo_cmd", "demo"),
    ("agentflow.cli.mock_llm_cmd", "mock_llm"),
    ("agentflow.cli.benchmark_cmd", "benchmark"),
    ("agentflow.cli.loadtest_cmd", "loadtest"),
    ("agentflow.cli.gateway_cmd", "gateway"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agentflow")
def main() -> None:
    """AgentFlow: AI-agent work as distributed Celery workers on Redis."""


for _module, _attr in _COMMANDS:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:  # a command whose module is not written yet
        if _exc.name != _module:
            raise
        continue
    main.add_command(getattr(_mod, _attr))

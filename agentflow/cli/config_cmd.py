"""`agentflow config show|check`: the effective configuration, secrets masked."""

from __future__ import annotations

import json

import click

from agentflow.cli._util import friendly_errors
from agentflow.config import config_path, load_settings


@click.group("config")
def config() -> None:
    """Inspect agentflow.toml plus AGENTFLOW_* environment variables."""


@config.command("show")
@click.option("--file", "path", type=click.Path(dir_okay=False), help="Config file to read.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
@friendly_errors
def show(path: str | None, as_json: bool) -> None:
    """Print the effective configuration with secrets masked."""
    settings = load_settings(path)
    data = settings.public_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    source = path or config_path()
    click.echo(f"# effective config (file: {source or 'none'}, plus AGENTFLOW_* environment)")
    _print_toml(data)


@config.command("check")
@click.option("--file", "path", type=click.Path(dir_okay=False), help="Config file to read.")
@friendly_errors
def check(path: str | None) -> None:
    """Validate the configuration; exit 1 with the bad key and file named."""
    load_settings(path)
    click.echo(f"ok: {path or config_path() or 'defaults + environment'}")


def _print_toml(data: dict[str, object], prefix: str = "") -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        click.echo(f"\n[{prefix}]")
    for key, value in scalars.items():
        click.echo(f"# {key} = (unset)" if value is None else f"{key} = {json.dumps(value)}")
    for key, value in tables.items():
        assert isinstance(value, dict)
        name = f"{prefix}.{key}" if prefix else key
        if all(isinstance(v, dict) for v in value.values()) and value and prefix:
            _print_toml(value, name)
        elif not value:
            click.echo(f"\n[{name}]")
        else:
            _print_toml(value, name)

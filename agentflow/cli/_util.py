"""Helpers shared by CLI commands: settings loading and error reporting."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from agentflow.errors import AgentFlowError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn AgentFlow errors into a one-line message and exit status 1 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AgentFlowError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None

    return wrapper  # type: ignore[return-value]


def parse_json_object(value: str | None, what: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line; a clear error otherwise."""
    if value is None or value == "":
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{what} must be a JSON object, got {type(data).__name__}")
    return data

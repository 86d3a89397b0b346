"""Five lifecycle hooks that do nothing, for `agentflow benchmark --with-hooks`: what the
hook points cost a worker (one sync and one async hook would cost the same per call)."""

from __future__ import annotations

from typing import Any

from agentflow import hooks


@hooks.before_event
def _before_event(event: Any, state: Any) -> None:
    """No-op."""


@hooks.before_agent_run
async def _before_agent_run(event: Any, state: Any) -> None:
    """No-op (async)."""


@hooks.after_agent_run
def _after_agent_run(event: Any, state: Any, result: Any) -> None:
    """No-op."""


@hooks.agent_error
def _agent_error(event: Any, state: Any, error: Any) -> None:
    """No-op."""


@hooks.after_event
async def _after_event(event: Any, state: Any, result: Any, error: Any) -> None:
    """No-op (async)."""

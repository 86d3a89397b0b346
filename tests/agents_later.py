"""Agents for the delayed-event and wait-for-signal tests (tests/integration/test_scheduled.py,
test_waiting.py); workers load them with ``tests.agents`` (see ``LATER_MODULES``)."""

from __future__ import annotations

import os
import time

from agentflow import Event, State, agent
from agentflow._redis.connection import get_redis
from agentflow.config import get_settings

LATER_MODULES = '["tests.agents", "tests.agents_later"]'
"""``AGENTFLOW_AGENTS__MODULES`` for workers that serve these agents."""


@agent("stamp", blocking=False)
def stamp(event: Event, state: State) -> dict[str, object]:
    """Record each run of the event and return when it ran (epoch seconds)."""
    prefix = get_settings().broker.key_prefix
    get_redis().rpush(f"{prefix}:test:runs:{event.id}", os.getpid())
    return {"ran_at": time.time(), "data": event.data}

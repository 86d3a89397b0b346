"""Fixtures for integration tests that need the mock LLM server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentflow.mock_llm import MockServer, serve_in_thread
from tests.integration.gateway_server import gateway  # noqa: F401 - the gateway tests' fixture


@pytest.fixture
def mock_llm() -> Iterator[MockServer]:
    """The mock LLM on a free loopback port (no latency), counters at zero.

    Function-scoped: each test gets its own server thread, so options changed through
    ``POST /config`` never leak into the next test.
    """
    server = serve_in_thread(port=0, latency=0.0)
    server.reset_stats()
    yield server
    server.stop()

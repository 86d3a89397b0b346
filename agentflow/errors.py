"""AgentFlow's exception hierarchy: every error the library raises derives from AgentFlowError."""

from __future__ import annotations

from typing import Any


class AgentFlowError(Exception):
    """Base class of every AgentFlow error."""


class ConfigError(AgentFlowError):
    """The configuration file or environment holds an unknown key or a bad value."""


class BrokerUnavailable(AgentFlowError):
    """No Redis answers at the configured URL and no embedded Redis could be started."""


class InvalidEvent(AgentFlowError):
    """An event failed validation; the producer refused it and nothing was enqueued."""

    def __init__(self, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class UnknownAgent(AgentFlowError):
    """An event names an agent that no registry entry or route resolves."""


class BackpressureError(AgentFlowError):
    """The producer hit `event_buffer_size` or `max_concurrent_events` and gave up waiting."""

    def __init__(self, message: str, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class EventFailed(AgentFlowError):
    """The event ran and failed, or was dead-lettered; `reason` says why."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event {event_id} failed: {reason}")
        self.event_id = event_id
        self.reason = reason


class EventCancelled(EventFailed):
    """The event was cancelled (``Client.cancel``); its Celery state is REVOKED."""


class ResultLost(EventFailed):
    """The event's result can no longer come: Redis came back empty (restarted without
    persistence, or flushed) after the event was emitted, and no worker still holds it."""


class EventTimeout(AgentFlowError):
    """No result arrived within the time the caller was willing to wait."""


class EventRejected(AgentFlowError):
    """A worker refused an event and sent it to the dead-letter queue."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventRefused(EventRejected):
    """Raised by a ``before_event``/``before_agent_run`` hook to refuse an event: it is
    dead-lettered with `reason` and its agent does not run."""


class StreamFailed(AgentFlowError):
    """The writer of an event's stream ended it with an error."""


class AgentError(AgentFlowError):
    """An agent's run raised; the event's result carries the message."""


class LLMError(AgentFlowError):
    """Base class of errors from the LLM layer."""


class LLMRequestError(LLMError):
    """The provider refused the request (a 4xx other than 408/409/429); retrying will not help."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMUnavailable(LLMError):
    """The provider kept failing (5xx, 429, timeouts) after every retry."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpen(LLMUnavailable):
    """The shared circuit breaker is open for this provider; the call failed fast."""


class RateLimited(LLMUnavailable):
    """The shared rate limit for this provider key is spent for now."""


class ToolError(AgentFlowError):
    """A tool call failed or timed out."""


class MCPError(ToolError):
    """An MCP server is unreachable or answered with an error."""

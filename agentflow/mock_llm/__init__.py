"""The mock LLM: an OpenAI-compatible HTTP server on loopback for tests, the demo and benchmarks.

Replies are deterministic ("mock: <last user message>") with token counts in `usage`.
Latency, jitter, an error rate and 429s are injectable for the whole server and per request
(headers ``x-mock-latency: 200ms``, ``x-mock-status: 503``, ``x-mock-retry-after: 1``).
``GET /stats`` counts requests per path; ``POST /stats/reset`` zeroes the counters.

Scripted tool calls, so agent loops can be tested: when a chat request carries ``tools`` and
the last user message holds lines of the form::

    CALL <tool_name> {json arguments on one line}

the reply asks for those tool calls (``finish_reason: "tool_calls"``, one call per line, ids
deterministic). A line ``THEN`` starts another round: the next round is asked for once the
previous one is answered (counted as assistant messages with ``tool_calls`` after the last user
message). When every round is answered, the reply is a final text quoting the ``role: tool``
results: ``"mock: tool results: <r1> | <r2>"``. Without ``tools`` directives are plain text.
Other lines of the message are ignored. See docs/mock-llm.md.
"""

from agentflow.mock_llm.app import MockOptions, create_app
from agentflow.mock_llm.server import MockServer, serve_in_thread, start_mock_llm_process

__all__ = ["MockOptions", "MockServer", "create_app", "serve_in_thread", "start_mock_llm_process"]

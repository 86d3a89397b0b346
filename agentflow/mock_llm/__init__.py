"""The mock LLM: an OpenAI-compatible HTTP server on loopback for tests, the demo and benchmarks.

Replies are deterministic ("mock: <last user message>") with token counts in `usage`.
Latency, jitter, an error rate and 429s are injectable for the whole server and per request
(headers ``x-mock-latency: 200ms``, ``x-mock-status: 503``, ``x-mock-retry-after: 1``).
``GET /stats`` counts requests per path; ``POST /stats/reset`` zeroes the counters.

Scripted tool calls: when a request carries ``tools`` and the last user message holds lines
``CALL <tool_name> {json arguments}``, the reply asks for those tool calls (finish_reason
``tool_calls``), unless ``role: tool`` messages already answer them; then it replies with a
final text that quotes the tool results.
"""

from agentflow.mock_llm.app import MockOptions, create_app
from agentflow.mock_llm.server import MockServer, serve_in_thread, start_mock_llm_process

__all__ = ["MockOptions", "MockServer", "create_app", "serve_in_thread", "start_mock_llm_process"]

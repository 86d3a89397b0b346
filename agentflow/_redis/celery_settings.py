"""Map `agentflow.toml` onto Celery settings: one place where seed keys become Celery's own.

| agentflow.toml                   | Celery setting                                        |
| -------------------------------- | ----------------------------------------------------- |
| [runner] worker_pool_size        | worker_concurrency                                    |
| [runner] pool                    | the worker's pool unless ``-P`` is given (see below)  |
| [runner] event_timeout           | task time limits (AgentFlow's own timeout fires first)|
| [runner] prefetch_multiplier     | worker_prefetch_multiplier                            |
| [runner] visibility_timeout      | broker transport options visibility_timeout           |
| [broker] url / result_url        | broker_url / result_backend                           |
| [broker] sentinel_*              | master_name, sentinel_kwargs (broker and backend)     |
| [broker] result_expires          | result_expires                                        |
| [monitoring] task_events         | worker_send_task_events, task_send_sent_event         |

Always on: JSON only, acks_late with reject_on_worker_lost, thread-safe result backend.

The pool: ``worker_pool`` is left unset, because Celery's command line cannot tell
``-P prefork`` from its own default once it is set (it would run the configured pool
instead). :func:`agentflow._worker.signals.choose_pool` applies ``[runner] pool`` when no
``-P`` was given (default ``asyncio``, AgentFlow's pool).
"""

from __future__ import annotations

import logging
from typing import Any

from agentflow._redis.connection import is_sentinel, redis_url, result_url
from agentflow._redis.queues import DEFAULT_QUEUE, all_queues
from agentflow._redis.sentinel import transport_options as sentinel_options
from agentflow.config import Settings, get_settings
from agentflow.errors import ConfigError

log = logging.getLogger("agentflow.config")


def _check_redis(url: str, what: str) -> None:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix", "sentinel"):
        raise ConfigError(
            f"{what} {scheme or url!r}: AgentFlow needs Redis (redis://, rediss://, unix://, "
            "sentinel://). Its producers admit events with Lua scripts, its workers take "
            "them with one (so no message is lost between taking and recording it), and "
            "results, state and the dead-letter queue live in the same Redis."
        )


def _longest(limit: float, names: dict[str, float], what: str) -> float:
    """`limit`, raised to cover the longest of `names` (said in a log line)."""
    if not names:
        return limit
    name, longest = max(names.items(), key=lambda kv: kv[1])
    if longest > limit:
        log.warning("%s: raising Celery's time limit from %gs to %gs to cover %s (timeout "
                    "%gs)", what, limit, longest, name, longest)  # fmt: skip
        return longest
    return limit


def build_celery_config(settings: Settings | None = None) -> dict[str, Any]:
    """Celery settings (lower-case names) for the given AgentFlow settings."""
    from agentflow.agents.registry import agent_names, get_agent, load_modules
    from agentflow.tools.registry import get_tool, tool_names

    s = settings or get_settings()
    load_modules(
        [
            "agentflow.agents.builtin",
            "agentflow.agents.tooling",
            "agentflow.tools.builtin",
            *s.agents.modules,
        ]
    )
    unknown = sorted(set(s.agents.policies) - set(agent_names()))
    if unknown:
        from agentflow.errors import ConfigError

        raise ConfigError(
            f"[agents.{unknown[0]}]: no agent named {unknown[0]!r} is registered (policies for "
            f"{', '.join(unknown)}; agents: {', '.join(agent_names())})"
        )
    runner = s.runner
    broker, backend = redis_url(s), result_url(s)
    _check_redis(broker, "[broker] url")
    _check_redis(backend, "[broker] result_url")
    visibility = int(runner.visibility_timeout)
    # Celery's chord join lets one worker claim the dispatch of a chord's body for
    # max(5, 2 x result_chord_join_timeout) = 6 s; a member redelivered while a dead
    # worker's claim still holds gives up, and the chord would never complete. A message
    # must therefore come back only after such a claim has expired.
    floor = 10
    if visibility < floor:
        log.warning("[runner] visibility_timeout: raising %gs to %gs, the least that outlasts "
                    "Celery's chord dispatch claim (a redelivered tool call must be able to "
                    "send its chord's continuation)", visibility, floor)  # fmt: skip
        visibility = floor
    transport_options = {
        "visibility_timeout": visibility,
        "socket_keepalive": True,
        "health_check_interval": 25,
        # Sweep unacked messages of dead workers every few seconds, not every 100 s.
        "unacked_restore_interval": max(1, min(5, visibility // 4)),
        "unacked_restore_throttle": 1,
        # kombu's restore sweep runs under a Redis lock that expires after 5 minutes by
        # default: one worker killed inside a sweep stopped every restore for that long.
        "unacked_mutex_expire": max(10, visibility),
    }
    concurrency = runner.worker_pool_size
    # Prefork's backstop only: AgentFlow's own timeout stops an agent at its limit first.
    agent_limits = {f"agent {n!r}": float(s.agents.policy(n).timeout or get_agent(n).timeout or 0)
                    for n in agent_names()}  # fmt: skip
    event_limit = _longest(runner.event_timeout, agent_limits, "agentflow.run_event")
    tool_limits = {f"tool {n!r}": float(get_tool(n).timeout or 0) for n in tool_names()}
    tool_limit = _longest(s.tools.timeout, tool_limits, "agentflow.run_tool")
    grace = max(5.0, event_limit * 0.1)
    tool_grace = max(5.0, tool_limit * 0.1)
    transport = "agentflow._redis.transport:Transport"
    backend_options: dict[str, Any] = {"visibility_timeout": visibility}
    if is_sentinel(broker):
        transport = "agentflow._redis.transport:SentinelTransport"
        transport_options.update(sentinel_options(s.broker.sentinel_master,
                                                  s.broker.sentinel_password))  # fmt: skip
    if is_sentinel(backend):
        backend_options.update(sentinel_options(s.broker.sentinel_master,
                                                s.broker.sentinel_password))  # fmt: skip
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_transport": transport,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": backend_options,
        "visibility_timeout": visibility,
        "broker_connection_retry_on_startup": True,
        "broker_pool_limit": max(10, concurrency + 10),
        "redis_max_connections": max(64, concurrency * 2 + 16),
        "redis_socket_timeout": None,
        "result_backend_thread_safe": True,
        "result_expires": int(s.broker.result_expires),
        "result_serializer": "json",
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": DEFAULT_QUEUE,
        "task_queues": all_queues(agent_names()),
        "task_create_missing_queues": True,
        "task_routes": ("agentflow._redis.routes.route_task",),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        "task_soft_time_limit": event_limit + grace / 2,
        "task_time_limit": event_limit + grace,
        "task_annotations": {
            "agentflow.run_tool": {
                "soft_time_limit": tool_limit + tool_grace / 2,
                "time_limit": tool_limit + tool_grace,
            },
        },
        "worker_concurrency": concurrency,
        "worker_prefetch_multiplier": runner.prefetch_multiplier,
        "worker_disable_rate_limits": True,
        "worker_consumer": "agentflow._worker.consumer:Consumer",
        "worker_send_task_events": s.monitoring.task_events,
        "task_send_sent_event": s.monitoring.task_events,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "imports": (
            "agentflow._worker.tasks",
            "agentflow._worker.signals",
            "agentflow._worker.control",
            "agentflow.orchestration",
            *s.agents.modules,
        ),
    }

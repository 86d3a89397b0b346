"""Map `agentflow.toml` onto Celery settings: one place where seed keys become Celery's own.

| agentflow.toml                   | Celery setting                                        |
| -------------------------------- | ----------------------------------------------------- |
| [runner] worker_pool_size        | worker_concurrency                                    |
| [runner] pool                    | worker_pool                                           |
| [runner] event_timeout           | task_soft_time_limit; hard limit = timeout + grace    |
| [runner] prefetch_multiplier     | worker_prefetch_multiplier                            |
| [runner] visibility_timeout      | broker/result transport options visibility_timeout    |
| [broker] url / result_url        | broker_url / result_backend                           |
| [broker] result_expires          | result_expires                                        |
| [monitoring] task_events         | worker_send_task_events, task_send_sent_event         |

Always on: JSON only, acks_late with reject_on_worker_lost, thread-safe result backend.
"""

from __future__ import annotations

from typing import Any

from agentflow.broker.connection import redis_url, result_url
from agentflow.broker.queues import DEFAULT_QUEUE, all_queues
from agentflow.config import Settings, get_settings


def build_celery_config(settings: Settings | None = None) -> dict[str, Any]:
    """Celery settings (lower-case names) for the given AgentFlow settings."""
    from agentflow.agents.registry import agent_names, load_modules

    s = settings or get_settings()
    load_modules(
        [
            "agentflow.agents.builtin",
            "agentflow.agents.tooling",
            "agentflow.tools.builtin",
            *s.agents.modules,
        ]
    )
    runner = s.runner
    visibility = int(runner.effective_visibility_timeout)
    transport_options = {
        "visibility_timeout": visibility,
        "socket_keepalive": True,
        "health_check_interval": 25,
        # Sweep unacked messages of dead workers every few seconds, not every 100 s.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    }
    concurrency = runner.worker_pool_size
    return {
        "broker_url": redis_url(s),
        "result_backend": result_url(s),
        "broker_transport": "agentflow.broker.transport:Transport",
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {"visibility_timeout": visibility},
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
        "task_routes": ("agentflow.broker.routes.route_task",),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        "task_soft_time_limit": runner.event_timeout,
        "task_time_limit": runner.hard_time_limit,
        "worker_concurrency": concurrency,
        "worker_pool": runner.pool,
        "worker_prefetch_multiplier": runner.prefetch_multiplier,
        "worker_disable_rate_limits": True,
        "worker_consumer": "agentflow.workers.consumer:Consumer",
        "worker_send_task_events": s.monitoring.task_events,
        "task_send_sent_event": s.monitoring.task_events,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "imports": (
            "agentflow.tasks",
            "agentflow.workers.signals",
            "agentflow.workers.metrics_signals",
            "agentflow.workers.profiling",
            "agentflow.orchestration",
            *s.agents.modules,
        ),
    }

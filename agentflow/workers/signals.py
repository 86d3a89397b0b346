"""Worker lifecycle hooks (Celery signals): announce agents, per-process set-up and tear-down."""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

from celery import signals

from agentflow import _aio

log = logging.getLogger("agentflow.worker")


@signals.before_task_publish.connect
def stamp_enqueue_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp the enqueue time on every task our app publishes (queue-wait metrics)."""
    from agentflow.tasks.runner import ENQUEUED_AT_HEADER

    if headers is not None and ENQUEUED_AT_HEADER not in headers:
        headers[ENQUEUED_AT_HEADER] = time.time()


def ready_workers_key(prefix: str) -> str:
    """The Redis set of main-process pids of workers that are ready (local tooling waits on it)."""
    return f"{prefix}:workers:ready"


@signals.worker_shutdown.connect
def retire_worker(**_: Any) -> None:
    """Take this worker out of the ready set."""
    from agentflow.broker.connection import get_redis
    from agentflow.config import get_settings

    try:
        get_redis().srem(ready_workers_key(get_settings().broker.key_prefix), os.getpid())
    except Exception as exc:
        log.debug("could not retire worker: %s", exc)


@signals.worker_ready.connect
def announce_agents(sender: Any = None, **_: Any) -> None:
    """Record the agents this worker serves, so producers can refuse unknown agent names;
    then freeze the start-up heap where events run in this process."""
    from agentflow.agents.registry import agent_names
    from agentflow.broker.connection import get_redis
    from agentflow.client import known_agents_key
    from agentflow.config import get_settings

    runs_here = getattr(getattr(sender, "app", None), "conf", None) is not None and (
        sender.app.conf.worker_pool != "prefork"
    )
    if runs_here:  # threads or solo: events run in this process
        _start_mcp()  # here rather than at worker_init: logging is set up by now
    names = agent_names()
    prefix = get_settings().broker.key_prefix
    pipe = get_redis().pipeline(transaction=False)
    if names:
        pipe.sadd(known_agents_key(prefix), *names)
    pipe.sadd(ready_workers_key(prefix), os.getpid())
    pipe.execute()
    log.info("agentflow worker ready; agents: %s", ", ".join(names))
    if runs_here:
        _freeze_heap()


@signals.worker_process_init.connect
def init_process(**_: Any) -> None:
    """After fork: fresh runner, fresh event loop, warm LLM connections."""
    from agentflow.tasks.runner import reset_runner

    reset_runner()
    _warm_llm()
    _start_mcp()
    _freeze_heap()


def _freeze_heap() -> None:
    """Take what start-up allocated (modules, Celery's app, clients) out of the garbage
    collector's view: a gen-2 collection then scans only what events allocate. On a busy
    worker those collections paused every thread for up to 80 ms; frozen, about half."""
    gc.collect()
    gc.freeze()


@signals.worker_init.connect
def init_worker(sender: Any = None, **_: Any) -> None:
    """In a threads/solo worker there is no fork: warm up here."""
    pool = getattr(getattr(sender, "app", None), "conf", None)
    if pool is not None and pool.worker_pool != "prefork":
        _warm_llm()


def _warm_llm() -> None:
    try:
        from agentflow.llm import warm
    except ImportError:
        return
    try:
        _aio.run(warm(), timeout=30)
    except Exception as exc:
        log.warning("could not warm LLM connections: %s", exc)


def _start_mcp() -> None:
    """Connect to the configured MCP servers and register their tools (best effort)."""
    from agentflow.config import get_settings

    if not get_settings().mcp.servers:
        return
    try:
        from agentflow.mcp import register_server_tools

        names = _aio.run(register_server_tools(), timeout=30)
        log.info("MCP tools registered: %s", ", ".join(names) or "none")
    except Exception as exc:
        log.warning("MCP servers not ready at start: %s", exc)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def close_process(**_: Any) -> None:
    """Close pooled clients and stop the process's event loop."""
    from agentflow.llm import aclose_all

    try:
        _aio.run(aclose_all(), timeout=10)
    except Exception as exc:
        log.warning("closing LLM clients failed: %s", exc)
    try:
        from agentflow.mcp.pool import aclose_all as close_mcp

        _aio.run(close_mcp(), timeout=10)
    except Exception as exc:
        log.warning("closing MCP sessions failed: %s", exc)
    _aio.stop()

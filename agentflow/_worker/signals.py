"""Worker lifecycle hooks (Celery signals): the pool, the heartbeat, per-process set-up."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
from typing import Any

from celery import signals

from agentflow import _aio
from agentflow._worker import task_events

log = logging.getLogger("agentflow.worker")


@signals.before_task_publish.connect
def stamp_enqueue_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp the enqueue time on every task our app publishes (queue-wait metrics)."""
    from agentflow._redis.messages import ENQUEUED_AT_HEADER

    if headers is not None and ENQUEUED_AT_HEADER not in headers:
        headers[ENQUEUED_AT_HEADER] = time.time()


def ready_workers_key(prefix: str) -> str:
    """The Redis set of main-process pids of workers that are ready (local tooling waits on it)."""
    from agentflow._redis.keys import Keys

    return Keys(prefix).workers_ready


_POOLS = {
    "asyncio": "agentflow._worker.asyncio_pool:AsyncPool",
    "threads": "threads",
    "prefork": "prefork",
    "solo": "solo",
}


@signals.worker_init.connect
def choose_pool(sender: Any = None, **_: Any) -> None:
    """The pool: ``-P`` when given on the command line, else ``[runner] pool`` (default
    ``asyncio``, AgentFlow's pool). gevent and eventlet are refused: their monkey-patching
    breaks the event loop that carries the LLM calls."""
    import click
    from click.core import ParameterSource

    from agentflow.config import get_settings
    from agentflow.errors import ConfigError

    if sender is None:
        return
    ctx = click.get_current_context(silent=True)
    source = None
    if ctx is not None:
        with contextlib.suppress(Exception):
            source = ctx.get_parameter_source("pool")
    if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        sender.pool_cls = _POOLS[get_settings().runner.pool]
    pool = sender.pool_cls
    name = str(pool if isinstance(pool, str) else getattr(pool, "__module__", ""))
    name = name.split(":")[0].rsplit(".", 1)[-1]
    if name in ("gevent", "eventlet"):
        reason = (
            f"AgentFlow workers cannot run on the {name} pool: its monkey-patching breaks the "
            "per-process asyncio loop that carries LLM calls (events would never finish). "
            "Leave -P out (AgentFlow's asyncio pool) or use -P prefork."
        )
        log.critical(reason)
        print(f"Error: {reason}", file=sys.stderr)
        # Celery logs and swallows a signal handler's exceptions: only an exit stops it.
        raise SystemExit(1) from ConfigError(reason)


@signals.worker_shutdown.connect
def retire_worker(**_: Any) -> None:
    """Take this worker out of the ready set and stop its heartbeat."""
    from agentflow._redis.connection import get_redis
    from agentflow._redis.transport import _limbo, _push_limbo
    from agentflow._worker import heartbeat, liveness, scheduler
    from agentflow.config import get_settings

    heartbeat.stop()
    scheduler.stop()
    liveness.stop()
    try:
        if _limbo:  # messages held across a lost connection: back on their queues
            _push_limbo(get_redis())
        get_redis().srem(ready_workers_key(get_settings().broker.key_prefix), os.getpid())
    except Exception as exc:
        log.debug("could not retire worker: %s", exc)


@signals.worker_ready.connect
def announce_agents(sender: Any = None, **_: Any) -> None:
    """Start the heartbeat (it announces the agents this worker serves at once); then
    freeze the start-up heap where events run in this process."""
    from agentflow._worker import heartbeat, liveness, scheduler
    from agentflow._worker.asyncio_pool import AsyncPool
    from agentflow.agents.registry import agent_names

    runs_here = getattr(getattr(sender, "app", None), "conf", None) is not None and (
        "prefork" not in type(getattr(sender, "pool", None)).__module__
    )
    if runs_here:  # events run in this process
        _start_mcp()  # here rather than at worker_init: logging is set up by now
    heartbeat.start(sender)
    scheduler.start()
    on_loop = isinstance(getattr(sender, "pool", None), AsyncPool)
    liveness.start(sender, _aio.get_loop() if on_loop else None)
    log.info("agentflow worker ready; agents: %s", ", ".join(agent_names()))
    if runs_here:
        _freeze_heap()


@signals.worker_process_init.connect
def init_process(**_: Any) -> None:
    """After fork: fresh runner, fresh event loop, warm LLM connections."""
    from agentflow._worker.runner import reset_runner

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
    """Where events run in the main process (no fork), warm up here."""
    if sender is not None and "prefork" not in str(sender.pool_cls):
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
    except ModuleNotFoundError as exc:
        log.error("[mcp] servers are configured but %s is not installed: "
                  "pip install 'agentflow[mcp]'", exc.name)  # fmt: skip
        return
    try:
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
    if "agentflow.http" in sys.modules:  # only where a tool used the HTTP client
        from agentflow.http import aclose_all as close_http

        try:
            _aio.run(close_http(), timeout=10)
        except Exception as exc:
            log.warning("closing HTTP clients failed: %s", exc)
    if "agentflow.mcp.pool" in sys.modules:  # only where MCP sessions were opened
        from agentflow.mcp.pool import aclose_all as close_mcp

        try:
            _aio.run(close_mcp(), timeout=10)
        except Exception as exc:
            log.warning("closing MCP sessions failed: %s", exc)
    task_events.detach()  # task events sent from now on go through kombu
    _aio.stop()

"""The worker's heartbeat: one thread in the main process doing what must happen all the time.

Every ``interval`` seconds (``[monitoring] metrics_interval``, at most 5 s):

- **Announce** the agents this worker serves (``<prefix>:agents``: agent → time), so a
  producer knows them, also after Redis restarted or a producer started late.
- **Watch the epoch.** ``<prefix>:epoch`` names this Redis's life; a worker that finds it
  gone or changed knows Redis came back empty (restarted without persistence, flushed):
  queued events, results and session state are gone. It logs an error, counts
  ``redis.wiped``, records the messages it still holds again (so they are not lost a second
  time should it die) and lists the events among them as survivors
  (``<prefix>:survivors:<epoch>``): producers fail every other event they still wait for
  with :class:`~agentflow.errors.ResultLost`.
- **Gauges**: queue depth per agent, events in flight, dead letters; and, from one worker
  per interval (a Redis lock picks it), each queue's backlog: queued plus taken and not yet
  acked (prefetched or running), what an autoscaler must count
  (:mod:`agentflow._redis.backlog`).
- **Unserved queues**: a queue ``agentflow.agent.<name>`` whose agent no live worker has
  announced for ``[runner] unserved_timeout`` is consumed by one worker (a Redis lock picks
  it), which dead-letters its events ("no worker serves agent ..."), then stops consuming it.
  Queues are found in the set producers name them in, not by scanning the keyspace (see
  :meth:`Heartbeat._agent_queues`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Any

from redis.exceptions import WatchError

from agentflow._redis.doorbell import QUEUES_KEY
from agentflow._redis.keys import Keys
from agentflow._redis.queues import AGENT_QUEUE_PREFIX, TOOLS_QUEUE, agent_queue

log = logging.getLogger("agentflow.worker")

_RUN_TASKS = ("agentflow.run_event", "agentflow.resume_event", "agentflow.signal_event")
_SCAN_STEP = 1000
"""Keys one beat's SCAN step looks at (Redis spends about 1 ms on it)."""


class Heartbeat:
    """The heartbeat of one worker (main process)."""

    def __init__(self, consumer: Any, interval: float) -> None:
        from agentflow.config import get_settings

        self.consumer = consumer
        self.interval = interval
        self.settings = get_settings()
        self.keys = Keys(self.settings.broker.key_prefix)
        self.epoch: str | None = None
        self.adopted: set[str] = set()
        self._scan_cursor = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentflow-heartbeat", daemon=True)

    def start(self) -> None:
        """Beat once now, then every interval in a thread."""
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """One round; a failure is logged and the next round tries again."""
        from agentflow._redis.connection import get_redis

        try:
            client = get_redis()
            self.check_epoch(client)
            self.announce(client)
            self.gauges(client)
            self.serve_unserved(client)
        except Exception as exc:
            log.debug("heartbeat failed: %s", exc, exc_info=True)

    # -- announce --------------------------------------------------------------------------
    def announce(self, client: Any) -> None:
        """Record the agents served here, with the time (and this worker as ready)."""
        from agentflow.agents.registry import agent_names

        names = agent_names()
        pipe = client.pipeline(transaction=False)
        if names:
            now = time.time()
            pipe.hset(self.keys.agents, mapping=dict.fromkeys(names, now))
        pipe.sadd(self.keys.workers_ready, os.getpid())
        pipe.execute()

    # -- epoch -----------------------------------------------------------------------------
    def check_epoch(self, client: Any) -> None:
        """Notice a Redis that came back empty; say so and recover what can be."""
        fresh = uuid.uuid4().hex
        client.set(self.keys.epoch, fresh, nx=True)
        raw = client.get(self.keys.epoch)
        current = raw.decode() if isinstance(raw, bytes) else str(raw)
        known, self.epoch = self.epoch, current
        if known is None or known == current:
            return
        from agentflow.metrics import get_metrics

        get_metrics().incr("redis.wiped")
        held = self._held_messages()
        log.error(
            "Redis came back empty (epoch %s -> %s): queued events, results and session "
            "state written before are gone. This worker still holds %d messages and records "
            "them again; producers get ResultLost for the other events they wait for. Run "
            "Redis with appendonly yes (see `agentflow doctor`).", known, current, len(held),
        )  # fmt: skip
        self._record_again(client, current, held)

    def _held_messages(self) -> list[Any]:
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        qos = getattr(channel, "qos", None)
        delivered = getattr(qos, "_delivered", None)
        return list(delivered.values()) if delivered else []

    def _record_again(self, client: Any, epoch: str, held: list[Any]) -> None:
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        if channel is None:
            return
        qos = channel.qos
        now = time.time()
        pipe = client.pipeline(transaction=False)
        survivors = []
        for message in held:
            raw, tag = getattr(message, "_raw", None), message.delivery_tag
            queue = (message.delivery_info or {}).get("routing_key") or ""
            if raw is None or tag is None:
                continue
            pipe.hset(qos.unacked_key, tag, json.dumps([raw, "", queue]))
            pipe.zadd(qos.unacked_index_key, {tag: now})
            headers = message.headers if isinstance(message.headers, dict) else {}
            if headers.get("task") in _RUN_TASKS and isinstance(headers.get("id"), str):
                survivors.append(headers["id"])
        key = self.keys.survivors(epoch)
        if survivors:
            pipe.sadd(key, *survivors)
        pipe.sadd(key, "")  # the set exists once some worker has looked
        pipe.expire(key, int(self.settings.broker.result_expires))
        pipe.execute()

    # -- gauges ----------------------------------------------------------------------------
    def gauges(self, client: Any) -> None:
        """Queue depth per agent, events in flight and dead letters, to statsd; the backlog
        of every agent queue and of the tools queue when it is this worker's turn."""
        if not self.settings.monitoring.enable_metrics:
            return
        from agentflow.agents.registry import agent_names
        from agentflow.dlq import DeadLetterQueue
        from agentflow.metrics import get_metrics

        names = agent_names()
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(agent_queue(name))
        pipe.zcard(self.keys.inflight)
        pipe.llen(DeadLetterQueue(client, self.keys.prefix).list_key)
        *depths, inflight, dead = pipe.execute()
        metrics = get_metrics()
        for name, depth in zip(names, depths, strict=True):
            metrics.gauge(f"queue.depth.{_stat(name)}", int(depth))
        metrics.gauge("events.in_flight", int(inflight))
        metrics.gauge("dlq.size", int(dead))
        if client.set(self.keys.backlog_turn, os.getpid(), nx=True,
                      ex=max(1, int(self.interval))):  # fmt: skip
            self.backlog(client, names, metrics)

    def backlog(self, client: Any, names: list[str], metrics: Any) -> None:
        """Send ``queue.backlog.<agent>`` and ``tools.backlog``: queued plus held."""
        from agentflow._redis.backlog import backlog

        agents = {agent_queue(name): name for name in names}
        for queue, work in backlog(client, [*agents, TOOLS_QUEUE]).items():
            if queue in agents:
                metrics.gauge(f"queue.backlog.{_stat(agents[queue])}", work.total)
            else:
                metrics.gauge("tools.backlog", work.total)

    # -- unserved queues -------------------------------------------------------------------
    def serve_unserved(self, client: Any) -> None:
        """Dead-letter the events of agents no live worker serves (see the module doc)."""
        from agentflow.agents.registry import agent_names

        timeout = self.settings.runner.unserved_timeout
        for queue in list(self.adopted):
            if not client.llen(queue):
                self._consume(queue, False)
        if not client.set(f"{self.keys.prefix}:janitor", os.getpid(), nx=True,
                          ex=max(1, int(self.interval))):  # fmt: skip
            return
        mine = set(agent_names())
        seen = {k.decode(): float(v) for k, v in client.hgetall(self.keys.agents).items()}
        now = time.time()
        for queue in sorted(self._agent_queues(client)):
            name = queue[len(AGENT_QUEUE_PREFIX) :]
            if "\x06\x16" in name or name in mine or queue in self.adopted:
                continue
            if now - seen.get(name, 0.0) < timeout:
                continue
            if not self._old_enough(client, queue, now, timeout):
                self._forget_if_empty(client, queue)
                continue
            log.warning("no worker has served agent %r for %gs: dead-lettering %s", name,
                        timeout, queue)  # fmt: skip
            self._consume(queue, True)

    def _agent_queues(self, client: Any) -> set[str]:
        """The agent queues pushed to: those AgentFlow's producers named in
        :data:`~agentflow._redis.doorbell.QUEUES_KEY`, plus what one step of a SCAN that
        goes on across beats finds (queues filled by other producers). A whole SCAN per beat
        would grow with every key in Redis, results included."""
        self._scan_cursor, found = client.scan(self._scan_cursor, match=f"{AGENT_QUEUE_PREFIX}*",
                                               count=_SCAN_STEP, _type="list")  # fmt: skip
        if found:
            client.sadd(QUEUES_KEY, *found)
        queues = {q.decode(errors="replace") for q in client.smembers(QUEUES_KEY)}
        return {q for q in queues if q.startswith(AGENT_QUEUE_PREFIX)}

    @staticmethod
    def _forget_if_empty(client: Any, queue: str) -> None:
        """Drop an unserved queue from the set once it is empty (a push in between keeps it:
        the queue is watched)."""
        with client.pipeline() as pipe:
            try:
                pipe.watch(queue)
                if pipe.llen(queue):
                    return
                pipe.multi()
                pipe.srem(QUEUES_KEY, queue)
                pipe.execute()
            except WatchError:
                pass

    @staticmethod
    def _old_enough(client: Any, queue: str, now: float, timeout: float) -> bool:
        """Whether the oldest event on `queue` has waited `timeout` (an unreadable one has)."""
        oldest = client.lindex(queue, -1)
        if oldest is None:
            return False
        try:
            headers = json.loads(oldest).get("headers") or {}
            enqueued = float(headers["agentflow_enqueued_at"])
        except (ValueError, TypeError, AttributeError, KeyError):
            return True
        return now - enqueued >= timeout

    def _consume(self, queue: str, start: bool) -> None:
        consumer = self.consumer
        if start:
            self.adopted.add(queue)
            consumer.call_soon(consumer.add_task_queue, queue)
        else:
            self.adopted.discard(queue)
            consumer.call_soon(consumer.cancel_task_queue, queue)


def _stat(name: str) -> str:
    """An agent's name as one statsd path segment (dots would split it)."""
    return name.replace(".", "_")


_heartbeat: Heartbeat | None = None


def start(consumer: Any) -> Heartbeat:
    """Start this worker's heartbeat (once)."""
    global _heartbeat
    from agentflow.config import get_settings

    if _heartbeat is None:
        interval = min(5.0, get_settings().monitoring.metrics_interval)
        _heartbeat = Heartbeat(consumer, interval)
        _heartbeat.start()
    return _heartbeat


def stop() -> None:
    """Stop this worker's heartbeat."""
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None

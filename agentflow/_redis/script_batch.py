"""Lua script calls made in one turn of the event loop, sent to Redis together.

On an asyncio-pool worker every event claims itself (the begin script) and stores its
result (the finish script) from the process's event loop. Events delivered together reach
those calls in the same turn of the loop; here they wait for the end of that turn and go out
as one write of EVALSHAs on the loop's shared connection
(:mod:`agentflow._redis.shared_connection`; a redis-py pipeline per batch cost 6.9 % of a
W0 worker's CPU, the shared connection 4.9 %, most of it the socket write). Each caller gets
its own reply or its own error; a script Redis has forgotten (``SCRIPT FLUSH``, a restarted
Redis) is loaded again and run on its own.

With ``[broker] wait_replicas``, each write ends with one ``WAIT``
(:mod:`agentflow._redis.replication`): its callers go on once replicas have their writes.

The batch goes out on the loop's asyncio Redis client: the loop goes on with other events
while it is on its way. (A blocking call would stop every event on the loop for the round
trip, and for as long again as the loop thread then waits to get the GIL back.)
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from redis.exceptions import NoScriptError

from agentflow._redis.replication import ReplicaWait
from agentflow._redis.shared_connection import SharedConnection


class Script(Protocol):
    """A Lua script with its SHA (AgentFlow's, or one redis-py registered)."""

    sha: str


class ScriptBatch:
    """Collects script calls (and plain commands) on one event loop and runs each turn's
    calls together on `client`, a ``redis.asyncio`` client of that loop."""

    def __init__(self, client: Any, wait: ReplicaWait | None = None) -> None:
        self.client = client
        self.wait = wait
        """A WAIT that ends every batch (``[broker] wait_replicas``), or None."""
        self.loop = asyncio.get_running_loop()
        self.shared = SharedConnection(client, wait, "worker batch")
        """The connection the batches go out on (one write per turn, replies in order)."""
        self._pending: list[tuple[Script | None, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    def call(self, script: Script, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """The script's reply, once this turn's batch has run (await it on the loop)."""
        return self._add(script, keys, args)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """A plain command's reply (``batch.command("GET", key)``), in this turn's batch."""
        return self._add(None, [], list(args))

    def _add(self, script: Script | None, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if not self._pending:
            self.loop.call_soon(self._start)
        self._pending.append((script, keys, args, future))
        return future

    def _start(self) -> None:
        pending, self._pending = self._pending, []
        task = self.loop.create_task(self._flush(pending))
        self._flushing.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._flushing.discard)

    async def _flush(
        self, pending: list[tuple[Script | None, list[Any], list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            await self._run(pending)
        finally:  # whatever happened, no caller is left waiting for ever
            for *_, future in pending:
                if not future.done():
                    future.set_exception(ConnectionError("the batch's pipeline did not finish"))

    async def _run(
        self, pending: list[tuple[Script | None, list[Any], list[Any], asyncio.Future[Any]]]
    ) -> None:
        commands = [args if script is None else ["EVALSHA", script.sha, len(keys), *keys, *args]
                    for script, keys, args, _ in pending]  # fmt: skip
        try:  # a half-open connection fails after its reply timeout, not hangs
            replies = await self.shared.execute(commands)
        except Exception as exc:  # the connection: every call in the batch failed
            for *_, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), reply in zip(pending, replies, strict=True):
            if isinstance(reply, NoScriptError) and script is not None and not future.done():
                try:  # load the script, then run it
                    await self.client.script_load(
                        getattr(script, "text", None) or getattr(script, "script", "")
                    )
                    reply = await self.client.evalsha(script.sha, len(keys), *keys, *args)
                except Exception as exc:
                    reply = exc
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self) -> None:
        """Give the batch's connection back (calls still in flight fail)."""
        await self.shared.aclose()

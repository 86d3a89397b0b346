"""Lua script calls made in one turn of the event loop, sent to Redis in one pipeline.

On a direct-execution worker every event claims itself (the begin script) and stores its
result (the finish script) from the process's event loop. Events delivered together reach
those calls in the same turn of the loop; here they wait for the end of that turn and go out
as one pipeline of EVALSHAs: one round trip and one pass through redis-py for the lot
instead of one each. Each caller gets its own reply or its own error; a script Redis has
forgotten (``SCRIPT FLUSH``, a restarted Redis) is loaded again and run on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoScriptError


class ScriptBatch:
    """Collects script calls on one event loop and runs each turn's calls together."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._pending: list[tuple[Script, list[Any], list[Any], asyncio.Future[Any]]] = []

    def call(self, script: Script, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """The script's reply, once this turn's batch has run (await it on the loop)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args, _ in pending:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection: every call in the batch failed
            for *_, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), reply in zip(pending, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, NoScriptError):
                try:
                    reply = script(keys=keys, args=args)  # loads the script, then runs it
                except Exception as exc:
                    future.set_exception(exc)
                    continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

"""Request batching: concurrent embedding requests in one process coalesce into one call.

``[performance] enable_request_batching`` turns it on; a batch is sent when it holds
`batch_size` texts or `batch_timeout` after its first request arrived, whichever is first.
A single request is never split (a request of more than `batch_size` texts goes alone,
together with whatever was waiting). Requests for different models batch separately. Each
caller gets back exactly its own vectors, in order; if the upstream call fails, every caller
in the batch gets the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agentflow.metrics import get_metrics

EmbedCall = Callable[[list[str], str | None, str | None], Awaitable[list[list[float]]]]
_Item = tuple[list[str], str | None, "asyncio.Future[list[list[float]]]"]


@dataclass
class _Pending:
    items: list[_Item] = field(default_factory=list)
    texts: int = 0
    timer: asyncio.TimerHandle | None = None


class EmbedBatcher:
    """Collects embed requests on the process's event loop and sends them in batches."""

    def __init__(self, call: EmbedCall, batch_size: int, batch_timeout: float) -> None:
        self.call = call
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self._pending: dict[str | None, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def embed(
        self, texts: list[str], model: str | None, agent: str | None = None
    ) -> list[list[float]]:
        """Queue `texts`; return their vectors once the batch holding them is answered.

        `agent` is passed on for usage accounting when every request of a batch shares it.
        """
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        pending = self._pending.setdefault(model, _Pending())
        pending.items.append((list(texts), agent, future))
        pending.texts += len(texts)
        if pending.texts >= self.batch_size:
            self._flush(model)
        elif pending.timer is None:
            pending.timer = loop.call_later(self.batch_timeout, self._flush, model)
        return await future

    def _flush(self, model: str | None) -> None:
        pending = self._pending.pop(model, None)
        if pending is None or not pending.items:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.ensure_future(self._send(model, pending.items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, model: str | None, items: list[_Item]) -> None:
        texts = [t for chunk, _, _ in items for t in chunk]
        agents = {agent for _, agent, _ in items}
        agent = agents.pop() if len(agents) == 1 else None
        metrics = get_metrics()
        metrics.incr("llm.batch.calls")
        metrics.incr("llm.batch.requests", len(items))
        try:
            vectors = await self.call(texts, model, agent)
            if len(vectors) != len(texts):
                raise ValueError(f"provider returned {len(vectors)} vectors for {len(texts)} texts")
        except asyncio.CancelledError:
            for _, _, future in items:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for chunk, _, future in items:
            if not future.done():
                future.set_result(vectors[start : start + len(chunk)])
            start += len(chunk)

    async def aclose(self) -> None:
        """Send what is waiting and wait for batches in flight."""
        for model in list(self._pending):
            self._flush(model)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

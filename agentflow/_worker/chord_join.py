"""A tool call's result joins its chord from the worker's event loop.

Celery's Redis backend joins a chord member with ``on_chord_part_return``: one script for
every member; then, for the member that completes the chord, a GET, a ZRANGE, a claim
extension, the continuation's publish and a cleanup script, each a blocking round trip.
AgentFlow ran that on a helper thread, where it took 19 % of a W2 worker's Python time
(py-spy, ``--gil``). Here the same steps run on the loop's script batch:

1. Celery's own join script (``CHORD_PART_RETURN_LUA``, registered by the backend) with
   Celery's arguments: the member's result joins ``.j`` once, and the member that completes
   the chord takes the dispatch claim ``.c``;
2. the claimer reads the joined results and decodes them as Celery does;
3. ``lua/chord_send.lua`` pushes the continuation and clears the chord's keys in one step,
   only while the claim is still the member's (Celery extends the claim, publishes, then
   cleans up: three steps).

A member killed between 1 and 3 is redelivered; it joins again (counted once) and
:func:`agentflow._worker.trace._chord_dispatched` sends the continuation through Celery's
backend once the claim has run out, as before.

Only for what :func:`joins_here` accepts: a chord of AgentFlow's fan-out (its continuation
a :class:`~agentflow.tools.fanout.ResumeSignature` that pushes its own message), results in
the broker's Redis database, messages Celery would send the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from celery import states
from celery.app.task import Context
from celery.exceptions import ChordError

from agentflow._redis import publish
from agentflow._redis.doorbell import QUEUES_KEY, WAKE_LIMIT, wake_key
from agentflow._redis.scripts import Script
from agentflow._worker.runner import get_runner
from agentflow.tools import fanout

_SEND = Script("chord_send")


def joins_here(backend: Any, ctx: Context) -> bool:
    """Whether `ctx`, a tool call's request, joins its chord here (else Celery's backend
    joins it): it is a member of a fan-out's chord, and nothing Celery's path does would
    differ (cheap: only the request's fields are read)."""
    body = ctx.chord
    if not (ctx.group and ctx.id and isinstance(body, dict)):
        return False
    options = body.get("options") or {}
    return bool(
        body.get("subtask_type") == fanout.RESUME_TYPE
        and options.get("queue")
        and {k for k, v in options.items() if v is not None} <= fanout.DIRECT_OPTIONS
        and getattr(backend, "_chord_zset", False)
        and publish.direct_publish_ok(backend.app)
    )


_claims: dict[int, tuple[int, int]] = {}


def _claim_seconds(app: Any) -> tuple[int, int]:
    """Celery's dispatch claim and 'done' marker lifetimes (``on_chord_part_return``), read
    once per app: a worker's settings are fixed once it runs."""
    seconds = _claims.get(id(app))
    if seconds is None:
        claim = max(5, int((app.conf.result_chord_join_timeout or 5.0) * 2))
        seconds = _claims[id(app)] = (claim, int(max(claim * 2, 300)))
    return seconds


async def join(backend: Any, ctx: Context, result: Any) -> bool:
    """Join `result` (tool call `ctx`'s) to its chord; the member that completes it sends the
    continuation. True when this call sent it."""
    app = backend.app
    gid, tid = ctx.group, ctx.id
    index = "+inf" if ctx.group_index is None else ctx.group_index
    keys = [backend.get_key_for_group(gid, suffix) for suffix in (".j", ".t", ".s", ".d")]
    keys += [backend.get_key_for_group(gid), backend.get_key_for_group(gid, ".c")]
    encoded = backend.encode([1, tid, states.SUCCESS,
                              backend.encode_result(result, states.SUCCESS)])  # fmt: skip
    claim, done_for = _claim_seconds(app)
    token = uuid.uuid4().hex
    batch = get_runner().batch()
    ready, diff, size, claimed = await batch.call(
        backend._chord_part_return_script, keys,
        [tid, encoded, 1, index, backend.chord_expires or 0, backend._chord_result_expires,
         claim, token],
    )  # fmt: skip
    if ready == -1 or not size or not claimed or int(ready) != int(size) + int(diff or 0):
        return False  # not the last (or a late copy of a member of a sent chord)
    jkey, tkey, skey, dkey, _, ckey = keys
    raw = await batch.command("ZRANGE", jkey, 0, -1)
    body = fanout.ResumeSignature.from_dict(ctx.chord, app=app)
    try:
        results = [backend._unpack_chord_result(item, backend.decode) for item in raw]
    except ChordError as exc:  # a member failed (stored by Celery's path): as Celery does
        try:
            await asyncio.to_thread(backend.chord_error_from_stack, body, exc)
        except Exception:  # as Celery's: the errbacks ran once, even if one of them raised
            await batch.command("DEL", skey)
            raise
        # Not on cancellation (a shutdown): the errbacks may still be running on their
        # thread, and a redelivered member runs them again rather than never.
        await batch.command("DEL", skey)
        return False
    message = body.direct_message((results,))
    if message is None:  # joins_here said it would not be: leave it to Celery's path
        raise RuntimeError(f"chord {gid}: its continuation needs Celery's publish")
    sent = await batch.call(
        _SEND, [ckey, jkey, tkey, skey, dkey, message.queue, wake_key(message.queue), QUEUES_KEY],
        [token, done_for, message.item, message.queue, WAKE_LIMIT],
    )  # fmt: skip
    if sent:
        publish.published([message])
    return bool(sent)

"""Workers SIGKILLed at random points under load lose nothing and apply nothing twice.

Three real workers drain a stream of events — session updates (``ledger``), fan-outs
whose tool calls run as chord members (``fanout``) and chains of routed results
(``relay``, three hops) — while one of them is SIGKILLed at a
random moment at least 50 times, each time replaced by a fresh one. Then every event must
have exactly one result, every session total must count each event once, every chord must
hand its continuation each member's result exactly once, every chain must end with one
event per hop (a next event is emitted once), and nothing may be left queued,
unacked or dead-lettered.
"""

from __future__ import annotations

import random
import time

import pytest

from agentflow import Client, load_settings
from agentflow.state import StateStore
from tests.conftest import TEST_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

KILLS = 50
ENV = {
    "AGENTFLOW_RUNNER__VISIBILITY_TIMEOUT": "10s",
    "AGENTFLOW_RUNNER__EVENT_TIMEOUT": "10s",
    "AGENTFLOW_RUNNER__MAX_REDELIVERIES": "1000",
}


def test_random_sigkills_lose_nothing_and_apply_nothing_twice(start_worker, redis_client):
    rng = random.Random(20261127)
    settings = load_settings(runner={"max_concurrent_events": 100_000,
                                     "event_buffer_size": 100_000})  # fmt: skip
    client = Client(settings=settings)
    live = [start_worker(concurrency=20, env=ENV) for _ in range(3)]
    sessions: dict[str, int] = {}
    ledgers, fanouts, chains = [], [], []
    kills = 0
    started = time.monotonic()
    try:
        while kills < KILLS:
            batch = []
            for i in range(120):
                session = f"s{rng.randrange(20)}"
                n = rng.randrange(1, 5)
                sessions[session] = sessions.get(session, 0) + n
                batch.append({"type": "t", "agent": "ledger", "session_id": session,
                              "data": {"n": n, "i": i}})  # fmt: skip
            calls = [rng.randrange(1, 6) for _ in range(20)]
            handles = client.emit_many(batch + [
                {"type": "t", "agent": "fanout", "data": {"calls": c, "seconds": 0.05}}
                for c in calls])  # fmt: skip
            ledgers += handles[: len(batch)]
            fanouts += list(zip(handles[len(batch) :], calls, strict=True))
            chains += client.emit_many({"type": "t", "agent": "relay", "data": {"until": 2}}
                                       for _ in range(5))  # fmt: skip
            time.sleep(rng.uniform(0.0, 0.4))  # the workers are draining a backlog now
            victim = rng.choice(live)
            victim.kill()  # SIGKILL, wherever it is
            kills += 1
            live.remove(victim)
            live.append(start_worker(concurrency=20, env=ENV, wait=False))
        for worker in live:
            worker.wait_ready(120)
        results, chords = {}, {}
        deadline = time.monotonic() + 180
        for h in ledgers:
            results[h.id] = h.result(timeout=max(1.0, deadline - time.monotonic()))
        for h, calls in fanouts:
            chords[h.id] = (h.result(timeout=max(1.0, deadline - time.monotonic())), calls)
        ends = {h.id: h.result(timeout=max(1.0, deadline - time.monotonic()), follow=True)
                for h in chains}  # fmt: skip
    except Exception:
        _explain([h for h in ledgers if h.id not in results]
                 + [h for h, _ in fanouts if h.id not in chords], redis_client)  # fmt: skip
        raise
    finally:
        client.close()
    elapsed = time.monotonic() - started

    events = len(ledgers) + len(fanouts)
    assert len(results) + len(chords) == events  # none lost
    store = StateStore(redis_client, prefix=TEST_PREFIX)
    for session, total in sessions.items():
        assert store.load(session)["total"] == total, session  # each delta applied once
    for event_id, (result, calls) in chords.items():
        assert result.output == {"indices": list(range(calls)), "errors": []}, event_id
    for root, end in ends.items():
        assert end.output["hop"] == 2 and end.output["root"] == root
        for hop in range(3):  # each next event emitted once, whatever was killed when
            assert redis_client.scard(f"{TEST_PREFIX}:test:relay:{root}:{hop}") == 1, root
    reruns = sum(max(0, redis_client.llen(f"{TEST_PREFIX}:test:runs:{h.id}") - 1)
                 for h in ledgers)  # fmt: skip
    deadline = time.monotonic() + 30
    while redis_client.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert redis_client.hlen("unacked") == 0
    assert redis_client.llen(f"{TEST_PREFIX}:dlq") == 0
    print(f"\nkills={kills} events={events} (ledger {len(ledgers)}, fan-outs {len(fanouts)} "
          f"with {sum(c for _, c in fanouts)} tool calls, chains {len(chains)}) lost=0 "
          f"applied-twice=0 "
          f"re-run after a kill={reruns} in {elapsed:.0f}s")  # fmt: skip


def _explain(missing: list, redis_client) -> None:
    """Where the events without a result are (printed when the test fails)."""
    import json

    unacked = {json.loads(v)[0]["headers"].get("id"): k
               for k, v in redis_client.hgetall("unacked").items()}  # fmt: skip
    queued = set()
    for queue in ("agentflow.agent.ledger", "agentflow.agent.fanout", "agentflow.tools"):
        for item in redis_client.lrange(queue, 0, -1):
            queued.add(json.loads(item)["headers"].get("id"))
    print(f"\n{len(missing)} events without a result")
    for key in redis_client.scan_iter(match="*.s"):
        group = key.decode()[:-2]
        print(
            "open chord",
            group,
            "size",
            redis_client.get(key),
            "claim",
            redis_client.get(group + ".c"),
            redis_client.ttl(group + ".c"),
            "members",
            redis_client.smembers(group + ".d"),
            "joined",
            redis_client.zcard(group + ".j"),
            [m[:160] for m in redis_client.zrange(group + ".j", 0, -1)],
        )
    print(
        "unacked",
        len(unacked),
        "tools queued",
        redis_client.llen("agentflow.tools"),
        "malformed",
        redis_client.hlen("unacked.malformed"),
    )
    for h in missing[:3]:
        print(
            h.id,
            "unacked" if h.id in unacked else "",
            "queued" if h.id in queued else "",
            redis_client.get(f"{TEST_PREFIX}:claim:{h.id}"),
            redis_client.exists(f"{TEST_PREFIX}:done:{h.id}"),
            redis_client.lrange(f"{TEST_PREFIX}:test:runs:{h.id}", 0, -1),
            redis_client.lrange(f"{TEST_PREFIX}:test:toolruns:{h.id}", 0, -1),
            (redis_client.get(f"celery-task-meta-{h.id}") or b"")[:60],
            redis_client.get(f"{TEST_PREFIX}:done:{h.id}") is not None,
        )

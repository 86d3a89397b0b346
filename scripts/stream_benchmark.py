"""Streaming benchmark: a tool streams N items through Redis Streams to the producer.

Brings up a local cluster (embedded Redis unless --redis-url, one worker), emits one `tools`
event whose `count` tool yields N items (sent in batches of `[tools] stream_batch_size`),
and reads them as ``handle.stream()`` does (XREAD, trimming what was read). Reports items/s
from the first item to the last, and the latency of each batch: the time between the writer's
XADD (the entry id's millisecond timestamp, Redis's clock, same machine) and the moment the
reader has it.

    python scripts/stream_benchmark.py --items 200000
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, cast

import redis

from agentflow.bench.local import LocalOptions, local_cluster
from agentflow.bench.stats import percentile
from agentflow.streams import stream_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--redis-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    opts = LocalOptions(workers=1, concurrency=8, redis_url=args.redis_url, mock_llm=False,
                        env={"AGENTFLOW_TOOLS__STREAM_BATCH_SIZE": str(args.batch_size)})  # fmt: skip
    with local_cluster(opts) as (_cluster, client):
        r: redis.Redis = client.redis
        handle = client.emit({"type": "bench.stream", "agent": "tools", "data": {
            "calls": [{"name": "count", "args": {"n": args.items}}]}})  # fmt: skip
        key = stream_key(handle.id, client.settings.broker.key_prefix)
        last = b"0-0"
        got = 0
        first_at = last_at = 0.0
        batch_latency_ms: list[float] = []
        expected = 0
        while got < args.items:
            reply = cast(list[Any], r.xread({key: last}, count=10_000, block=5000))
            if not reply:
                raise SystemExit(f"stalled after {got} items")
            now = time.time()
            entries = reply[0][1]
            r.xtrim(key, minid=entries[-1][0], approximate=False)
            seen_ms: set[int] = set()
            for entry_id, fields in entries:
                last = entry_id
                if b"d" not in fields:
                    continue
                item = json.loads(fields[b"d"])
                if item["i"] != expected:
                    raise SystemExit(f"out of order: got {item['i']}, expected {expected}")
                expected += 1
                got += 1
                ms = int(entry_id.split(b"-")[0])
                if ms not in seen_ms:  # one sample per writer batch (same XADD millisecond)
                    seen_ms.add(ms)
                    batch_latency_ms.append(max(0.0, now * 1000 - ms))
            if not first_at:
                first_at = now
            last_at = now
        handle.result(timeout=60)
    seconds = max(last_at - first_at, 1e-6)
    report = {
        "items": got,
        "batch_size": args.batch_size,
        "seconds": round(seconds, 3),
        "items_per_second": round(got / seconds),
        "batch_latency_ms": {q: round(percentile(batch_latency_ms, q), 2) for q in (50, 95, 99)},
        "in_order": True,
    }
    if args.json:
        print(json.dumps(report))
    else:
        lat = report["batch_latency_ms"]
        print(f"stream: {got} items in {seconds:.2f}s = {report['items_per_second']} items/s, "
              f"batch latency p50 {lat[50]} / p95 {lat[95]} / p99 {lat[99]} ms, in order")  # fmt: skip


if __name__ == "__main__":
    main()

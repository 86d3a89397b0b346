"""`--local`: bring up Redis, the mock LLM and worker processes for a benchmark, then stop them.

Redis is the one given (``--redis-url``), else a private embedded one. The producer in this
process is pointed at the same Redis and key prefix as the workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from agentflow.client import Client
from agentflow.local_cluster import ClusterSpec, LocalCluster


@dataclass
class LocalOptions:
    """How the local cluster is shaped."""

    workers: int = 1
    concurrency: int = 200
    pool: str | None = None
    redis_url: str | None = None
    mock_latency: str = "50ms"
    mock_llm: bool = True
    key_prefix: str = "agentflow-bench"
    max_in_flight: int = 1000
    env: dict[str, str] = field(default_factory=dict)


def client_for_env(env: dict[str, str]) -> Client:
    """Point this process's settings, Redis connections and Celery app at `env`; a Client."""
    os.environ.update(env)
    from agentflow._redis import connection
    from agentflow.celery_app import app
    from agentflow.config import get_settings, reset_settings

    reset_settings()
    connection.reset()
    url = env.get("AGENTFLOW_BROKER__URL")
    if url:
        app.conf.broker_url = url
        app.conf.result_backend = url
    return Client(app=app, settings=get_settings())


@contextmanager
def local_cluster(opts: LocalOptions) -> Iterator[tuple[LocalCluster, Client]]:
    """A started cluster and a Client on it; everything stops on exit."""
    bound = str(max(opts.max_in_flight, 100))
    env = {
        "AGENTFLOW_RUNNER__MAX_CONCURRENT_EVENTS": bound,
        "AGENTFLOW_RUNNER__EVENT_BUFFER_SIZE": bound,
        # One pooled connection per event a worker may run at once: LLM calls never queue
        # for a connection (the default pool, 30, is sized for a production provider's quota).
        "AGENTFLOW_LLM__OPENAI__MAX_CONNECTIONS": str(max(opts.concurrency, 1)),
        # The same for tools' HTTP calls (agentflow.http, workload W2http).
        "AGENTFLOW_HTTP__MAX_CONNECTIONS": str(max(opts.concurrency, 1)),
        **opts.env,
    }
    spec = ClusterSpec(
        workers=opts.workers, concurrency=opts.concurrency, pool=opts.pool,
        redis_url=opts.redis_url, mock_llm=opts.mock_llm, mock_latency=opts.mock_latency,
        key_prefix=opts.key_prefix, env=env,
    )  # fmt: skip
    with LocalCluster(spec) as cluster:
        client = client_for_env(cluster.env)
        try:
            yield cluster, client
        finally:
            client.close()

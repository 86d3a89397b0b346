"""Where the ``stint`` agent (scripts/netns_agents.py) records its runs, and the readers the
cluster harnesses count them with (no agent is registered by importing this)."""

from __future__ import annotations

from typing import Any

from agentflow.state import StateStore


def runs_key(prefix: str, event_id: str) -> str:
    """The list of runs ``stint`` recorded for one event."""
    return f"{prefix}:netns:runs:{event_id}"


def read_runs(client: Any, prefix: str, event_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Each event's runs as ``stint`` recorded them: (host, unix time), in start order."""
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.lrange(runs_key(prefix, event_id), 0, -1)
    out = {}
    for event_id, items in zip(event_ids, pipe.execute(), strict=True):
        runs = [item.decode().split() for item in items]
        out[event_id] = [(host, float(t)) for host, _pid, t in runs]
    return out


def read_totals(client: Any, prefix: str, sessions: list[str]) -> dict[str, int]:
    """Each session's ``total``: how many times its events' deltas were applied."""
    store = StateStore(client, prefix=prefix)
    return {s: int(store.load(s).get("total", 0)) for s in sessions}

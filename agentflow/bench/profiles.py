"""Collect worker profiles during a benchmark through the workers' profiling endpoints.

Workers started with ``[monitoring] enable_profiling`` register their endpoint's URL in the
Redis hash ``<prefix>:profilers`` (see :mod:`agentflow._worker.profiling`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import httpx
import redis


def profiler_urls(client: redis.Redis, prefix: str) -> dict[str, str]:
    """worker id → base URL of its profiling endpoint."""
    raw = cast(dict[bytes, bytes], client.hgetall(f"{prefix}:profilers"))
    return {k.decode(): v.decode() for k, v in raw.items()}


class CpuProfileCollector:
    """Ask every worker for a CPU profile of `seconds`, in the background; merge the results."""

    def __init__(self, urls: dict[str, str], seconds: float) -> None:
        self.urls = urls
        self.seconds = seconds
        self.results: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    def _fetch(self, worker: str, url: str) -> None:
        try:
            resp = httpx.get(f"{url}/debug/profile", params={"seconds": self.seconds},
                             timeout=self.seconds + 30)  # fmt: skip
            resp.raise_for_status()
            self.results[worker] = resp.text
        except httpx.HTTPError as exc:
            self.errors[worker] = str(exc)

    def start(self) -> None:
        """Start one request per worker."""
        for worker, url in self.urls.items():
            t = threading.Thread(target=self._fetch, args=(worker, url), daemon=True)
            t.start()
            self._threads.append(t)

    def finish(self, output: Path) -> dict[str, Any]:
        """Wait for the profiles and write them as one collapsed-stack file (worker as root)."""
        for t in self._threads:
            t.join(self.seconds + 35)
        lines: list[str] = []
        for worker, text in sorted(self.results.items()):
            safe = worker.replace(";", "_").replace(" ", "_")
            lines += [f"{safe};{line}" for line in text.splitlines() if line.strip()]
        output.write_text("\n".join(lines) + ("\n" if lines else ""))
        return {"workers": sorted(self.results), "errors": self.errors, "stacks": len(lines)}


def heap_snapshot(urls: dict[str, str], output: Path, limit: int = 40) -> dict[str, Any]:
    """Each worker's top heap allocations (tracemalloc), one section per worker, to `output`."""
    parts: list[str] = []
    errors: dict[str, str] = {}
    for worker, url in sorted(urls.items()):
        try:
            resp = httpx.get(f"{url}/debug/heap", params={"limit": limit}, timeout=30)
            resp.raise_for_status()
            parts.append(f"# worker {worker} ({url})\n{resp.text}")
        except httpx.HTTPError as exc:
            errors[worker] = str(exc)
    output.write_text("\n\n".join(parts))
    return {"workers": sorted(urls), "errors": errors}

"""The worker's liveness beat, for ``agentflow health`` (Kubernetes probes, compose checks).

The beat is written by the parts that must keep turning, not by a task: kombu's hub (the
consumer's loop, which takes messages and runs request callbacks) writes the file on its own
turns, at most once a second, and the asyncio loop that runs events records its own turn
beside it. A worker busy with long events still beats; one whose consumer or event loop is
stuck stops, and ``agentflow health --liveness`` fails once the beat is older than its
``--max-age``. (``celery inspect ping`` goes through the broker and the worker's control
thread, costs seconds of CPU per probe, and fails on busy workers.)

The file (``[monitoring] health_file``) is JSON: ``pid``, ``hub`` and ``loop`` (epoch
seconds of the last turn of each; ``loop`` null where no loop runs events, as in a prefork
parent) and ``consuming`` (the consumer is connected and has its task queues).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("agentflow.liveness")

BEAT_EVERY = 1.0
"""Seconds between writes of the beat file (and between the loop's own turns)."""


def health_file(configured: str = "") -> Path:
    """The beat file: `configured`, else ``agentflow-worker.health`` in the temp folder."""
    return (
        Path(configured) if configured else Path(tempfile.gettempdir()) / "agentflow-worker.health"
    )


class Liveness:
    """Writes one worker's beat file from its hub, with its event loop's last turn."""

    def __init__(self, consumer: Any, path: Path) -> None:
        self.consumer = consumer
        self.path = path
        self.loop_at: float | None = None
        self._written = 0.0
        self._stopped = False

    def start(self, event_loop: Any = None) -> None:
        """Beat on every turn of the consumer's hub; watch `event_loop` too, if given."""
        hub = getattr(self.consumer, "hub", None)
        if hub is None:
            log.warning("this worker has no event hub: `agentflow health` cannot watch it")
            return
        if event_loop is not None:
            self.loop_at = time.time()
            event_loop.call_soon_threadsafe(self._loop_turn, event_loop)
        hub.on_tick.add(self.on_tick)
        self.write()

    def _loop_turn(self, event_loop: Any) -> None:
        self.loop_at = time.time()
        if not self._stopped:
            event_loop.call_later(BEAT_EVERY, self._loop_turn, event_loop)

    def on_tick(self) -> None:
        """A turn of the hub: write the beat if the last one is a second old."""
        if time.monotonic() - self._written >= BEAT_EVERY:
            self.write()

    def consuming(self) -> bool:
        """Whether the consumer is connected and takes messages from its queues."""
        consumer = self.consumer
        connection = getattr(consumer, "connection", None)
        task_consumer = getattr(consumer, "task_consumer", None)
        return bool(connection is not None and getattr(connection, "connected", False)
                    and task_consumer is not None and task_consumer.queues)  # fmt: skip

    def write(self) -> None:
        """Write the beat file (atomically: a probe never reads half of it)."""
        self._written = time.monotonic()
        beat = {"pid": os.getpid(), "hub": time.time(), "loop": self.loop_at,
                "consuming": self.consuming()}  # fmt: skip
        try:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(beat))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not write the liveness beat %s: %s", self.path, exc)

    def stop(self) -> None:
        """Stop beating and remove the file (the worker is going away)."""
        self._stopped = True
        hub = getattr(self.consumer, "hub", None)
        if hub is not None:
            hub.on_tick.discard(self.on_tick)
        with contextlib.suppress(OSError):
            self.path.unlink()


def check(path: Path, *, max_age: float, readiness: bool) -> str | None:
    """Why the worker writing `path` is not alive (or, with `readiness`, not ready), else
    None."""
    try:
        beat = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no beat file at {path}: the worker is not running (or writes elsewhere)"
    except (OSError, ValueError) as exc:
        return f"cannot read the beat file {path}: {exc}"
    now = time.time()
    for part, what in (("hub", "consumer loop"), ("loop", "event loop")):
        at = beat.get(part)
        if part == "loop" and at is None:
            continue
        if not isinstance(at, int | float):
            return f"beat file {path} has no {part!r} time"
        if now - at > max_age:
            return f"the worker's {what} has not turned for {now - at:.1f}s (max {max_age:g}s)"
    if readiness and not beat.get("consuming"):
        return "the worker is not consuming (its broker connection or task queues are not up)"
    return None


_liveness: Liveness | None = None


def start(consumer: Any, event_loop: Any = None) -> None:
    """Start this worker's beat (once)."""
    global _liveness
    from agentflow.config import get_settings

    if _liveness is None:
        _liveness = Liveness(consumer, health_file(get_settings().monitoring.health_file))
        _liveness.start(event_loop)


def stop() -> None:
    """Stop this worker's beat."""
    global _liveness
    if _liveness is not None:
        _liveness.stop()
        _liveness = None

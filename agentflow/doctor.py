"""`agentflow doctor`: is the Redis AgentFlow uses set up so that nothing is lost?

Each check gives OK, WARN or FAIL with one line of detail. Settings are read with
``CONFIG GET`` where Redis allows it; a managed Redis that refuses CONFIG is read through
``INFO`` instead, and a check that neither answers says it could not be checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import redis

from agentflow._redis.connection import open_redis
from agentflow.config import Settings, mask_url

Status = Literal["OK", "WARN", "FAIL"]
MIN_VERSION = (6, 2)
"""RPOP with a count (the worker's fetch script) arrived in Redis 6.2."""
MEMORY_WARN = 0.8


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        """The check as JSON-ready data."""
        return asdict(self)


def find_url(settings: Settings) -> str | None:
    """The Redis URL AgentFlow would use, without starting the embedded one (None: none)."""
    from agentflow._redis.embedded import DEFAULT_URL, ping, running_url

    if settings.broker.url:
        return settings.broker.url
    if ping(DEFAULT_URL):
        return DEFAULT_URL
    runtime = Path(settings.broker.embedded_dir) if settings.broker.embedded_dir else None
    return running_url(runtime)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Doctor:
    """The checks, run against one Redis client."""

    def __init__(self, client: redis.Redis, url: str, key_prefix: str) -> None:
        self.client = client
        self.url = mask_url(url) or url
        self.key_prefix = key_prefix
        self.config_refused: str | None = None
        self._info: dict[str, dict[str, Any] | None] = {}

    # -- reading Redis ---------------------------------------------------------------------
    def config(self, name: str) -> str | None:
        """``CONFIG GET name``, or None when Redis refuses CONFIG (managed Redis, ACL)."""
        if self.config_refused is not None:
            return None
        try:
            reply = cast(dict[str, Any], self.client.config_get(name))
        except redis.ResponseError as exc:
            self.config_refused = str(exc)
            return None
        value = reply.get(name)
        return None if value is None else _text(value)

    def info(self, section: str) -> dict[str, Any] | None:
        """``INFO section`` as a dict, or None when refused."""
        if section not in self._info:
            try:
                self._info[section] = dict(cast(dict[str, Any], self.client.info(section)))
            except redis.ResponseError:
                self._info[section] = None
        return self._info[section]

    def _source(self, what: str) -> str:
        if self.config_refused is None:
            return ""
        return f" (read from INFO {what}: CONFIG refused)"

    def _unchecked(self, name: str, what: str, config: bool = True) -> Check:
        refused = f"CONFIG GET and INFO {what}" if config else f"INFO {what}"
        return Check(name, "WARN", f"could not be checked: Redis refuses {refused} to this user")

    # -- the checks ------------------------------------------------------------------------
    def reachable(self) -> Check:
        """Redis answers, and is recent enough."""
        self.client.ping()
        version = None
        server = self.info("server")
        if server and "redis_version" in server:
            version = str(server["redis_version"])
        else:
            try:
                hello = self.client.execute_command("HELLO")
                pairs = dict(zip(hello[::2], hello[1::2], strict=True))
                version = _text(pairs.get(b"version") or pairs.get("version") or "") or None
            except redis.ResponseError:
                version = None
        if version is None:
            return Check("reachable", "WARN", f"Redis at {self.url} answers; its version could "
                                              "not be read (INFO and HELLO refused)")  # fmt: skip
        need = ".".join(map(str, MIN_VERSION))
        if _version(version) < MIN_VERSION:
            return Check("reachable", "FAIL", f"Redis {version} at {self.url}: AgentFlow needs "
                                              f"{need} or later (RPOP with a count)")  # fmt: skip
        return Check("reachable", "OK", f"Redis {version} at {self.url}")

    def appendonly(self) -> Check:
        """Persistence: without the AOF a restart loses what is queued."""
        name = "appendonly"
        value = self.config("appendonly")
        if value is None:
            persistence = self.info("persistence")
            if persistence is None or "aof_enabled" not in persistence:
                return self._unchecked(name, "persistence")
            value = "yes" if int(persistence["aof_enabled"]) else "no"
        source = self._source("persistence")
        if value == "yes":
            fsync = self.config("appendfsync")
            extra = f", appendfsync {fsync}" if fsync else ""
            return Check(name, "OK", f"appendonly yes{extra}{source}")
        return Check(name, "WARN", f"appendonly {value}: a restart loses queued events, results "
                                   f"and state{source}")  # fmt: skip

    def eviction(self) -> Check:
        """The eviction policy: anything but noeviction may drop queued messages."""
        name = "maxmemory-policy"
        value = self.config("maxmemory-policy")
        if value is None:
            memory = self.info("memory")
            if memory is None or "maxmemory_policy" not in memory:
                return self._unchecked(name, "memory")
            value = str(memory["maxmemory_policy"])
        source = self._source("memory")
        if value == "noeviction":
            return Check(name, "OK", f"noeviction{source}")
        return Check(name, "FAIL", f"{value}: Redis may evict queued messages, results and "
                                   f"state under memory pressure; set noeviction{source}")  # fmt: skip

    def memory(self) -> Check:
        """Headroom between used memory and maxmemory."""
        name = "memory"
        info = self.info("memory")
        if info is None or "used_memory" not in info:
            return self._unchecked(name, "memory", config=False)
        used = int(info["used_memory"])
        limit_text = self.config("maxmemory")
        limit = int(limit_text) if limit_text is not None else int(info.get("maxmemory", 0))
        if limit == 0:
            return Check(name, "OK", f"used {_size(used)}; no limit (maxmemory 0)")
        share = used / limit
        detail = f"used {_size(used)} of maxmemory {_size(limit)} ({share:.0%})"
        if share > MEMORY_WARN:
            return Check(name, "WARN", f"{detail}: above {MEMORY_WARN:.0%}; when full, "
                                       "producers and workers get OOM errors")  # fmt: skip
        return Check(name, "OK", detail)

    def epoch(self) -> Check:
        """AgentFlow's epoch key: present once a worker or producer has used this Redis."""
        key = f"{self.key_prefix}:epoch"
        try:
            value = self.client.get(key)
        except redis.ResponseError as exc:
            return Check("epoch", "WARN", f"could not read {key}: {exc}")
        if value is None:
            return Check("epoch", "WARN", f"{key} absent: no AgentFlow worker or producer has "
                                          "run against this Redis yet (or its data was lost)")  # fmt: skip
        return Check("epoch", "OK", f"{key} = {_text(value)}")

    def run(self) -> list[Check]:
        """Every Redis check; a Redis that cannot be reached ends the list at once."""
        try:
            checks = [self.reachable()]
        except (redis.RedisError, OSError) as exc:
            return [Check("reachable", "FAIL", f"cannot reach Redis at {self.url}: {exc}")]
        steps: list[tuple[str, Callable[[], Check]]] = [
            ("appendonly", self.appendonly),
            ("maxmemory-policy", self.eviction),
            ("memory", self.memory),
            ("epoch", self.epoch),
        ]
        for name, step in steps:
            try:
                checks.append(step())
            except (redis.RedisError, OSError) as exc:
                checks.append(Check(name, "FAIL", f"Redis error: {exc}"))
        return checks


def keyprefix_check(conf: Mapping[str, Any]) -> Check:
    """kombu's ``global_keyprefix`` must be unset: AgentFlow writes queue keys by name."""
    found = {
        setting: (conf.get(setting) or {}).get("global_keyprefix")
        for setting in ("broker_transport_options", "result_backend_transport_options")
    }
    found = {k: v for k, v in found.items() if v}
    if not found:
        return Check("global_keyprefix", "OK", "not set")
    where = ", ".join(f"{k}={v!r}" for k, v in found.items())
    return Check("global_keyprefix", "FAIL", f"set ({where}): AgentFlow's producers and "
                                             "scripts write keys by their plain names; give "
                                             "each tenant its own Redis database")  # fmt: skip


def diagnose(settings: Settings) -> tuple[str | None, list[Check]]:
    """The URL checked (masked) and every check's outcome."""
    url = find_url(settings)
    if url is None:
        return None, [Check("reachable", "FAIL", "no Redis: no [broker] url is configured, "
                                                 "nothing answers at the default URL and the "
                                                 "embedded Redis is not running (AgentFlow "
                                                 "starts it on first use)")]  # fmt: skip
    client = open_redis(url, settings, max_connections=4, socket_connect_timeout=5,
                        socket_timeout=5)  # fmt: skip
    try:
        checks = Doctor(client, url, settings.broker.key_prefix).run()
    finally:
        client.close()
    return mask_url(url), [*checks, _celery_check()]


def _celery_check() -> Check:
    """The key-prefix check on the Celery configuration the workers load."""
    try:
        from agentflow.celery_app import app

        conf = {k: app.conf.get(k) for k in ("broker_transport_options",
                                             "result_backend_transport_options")}  # fmt: skip
    except Exception as exc:
        return Check("global_keyprefix", "WARN", f"could not be checked: the Celery "
                                                 f"configuration does not load: {exc}")  # fmt: skip
    return keyprefix_check(conf)

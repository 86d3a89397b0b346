"""API keys: stored as SHA-256 hashes, scoped to agents, rate-limited per key.

A request presents its key as ``Authorization: Bearer <key>`` (or ``X-API-Key``). The key is
hashed and looked up; the stored hashes come from ``[gateway] keys`` (or
``AGENTFLOW_GATEWAY__KEYS``). Keys are long random strings (`agentflow gateway hash-key
--new`), so one unsalted SHA-256 is enough: nothing can be guessed from the hash.

The rate limit is a token bucket per key held in this process: with several gateway
processes each enforces it on its own (a key's total rate is the sum).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from agentflow.config import GatewayKeyConfig

HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex digest>``."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return "af_" + secrets.token_urlsafe(32)


@dataclass
class ApiKey:
    """One configured key: its scope and its token bucket."""

    name: str
    agents: frozenset[str]
    rate: float
    burst: float
    tokens: float = field(default=0.0)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def allows(self, agent: str) -> bool:
        """True when this key may use `agent`."""
        return "*" in self.agents or agent in self.agents

    def take(self) -> float:
        """Spend one token: 0.0 when the request may go on, else the seconds to wait."""
        if math.isinf(self.rate):
            return 0.0
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class KeyRing:
    """The gateway's keys, by hash. `open_access` (the insecure dev flag) lets any request
    in as an unlimited key for every agent."""

    def __init__(self, keys: Iterable[GatewayKeyConfig], open_access: bool = False) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        for i, conf in enumerate(keys):
            burst = float(conf.burst if conf.burst is not None else max(1.0, conf.rate))
            self._by_hash[conf.hash] = ApiKey(conf.name or f"key{i}", frozenset(conf.agents),
                                              conf.rate, burst)  # fmt: skip
        self.open_access = open_access
        self._open_key = ApiKey("insecure-dev", frozenset({"*"}), math.inf, math.inf)
        self._known: dict[str, ApiKey] = {}
        """Presented keys already found (valid ones only, so it holds at most one entry per
        configured key): each is hashed once."""

    def __len__(self) -> int:
        return len(self._by_hash)

    def find(self, presented: str | None) -> ApiKey | None:
        """The key a request presented, or None when it is missing or unknown."""
        if self.open_access:
            return self._open_key
        if not presented:
            return None
        key = self._known.get(presented)
        if key is None:
            key = self._by_hash.get(hash_key(presented))
            if key is not None:
                self._known[presented] = key
        return key


def presented_key(authorization: str | None, api_key_header: str | None) -> str | None:
    """The key from ``Authorization: Bearer …`` or ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key_header.strip() if api_key_header else None

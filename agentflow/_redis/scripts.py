"""AgentFlow's Lua scripts, one file each in ``agentflow/_redis/lua/``, loaded by name.

Every script that makes a multi-key step atomic lives there: the transport's fetch, the
producer's admission, an event's begin and finish. ``source("fetch")`` reads a script once
per process; :class:`Script` runs one by SHA and loads it again when Redis has forgotten
it (after ``SCRIPT FLUSH`` or a restart).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError


@functools.cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files("agentflow._redis").joinpath("lua", f"{name}.lua").read_text()


class Script:
    """One Lua script, run with EVALSHA on any redis-py client or pipeline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = source(name)
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()

    def __call__(self, client: Any, keys: list[Any], args: list[Any]) -> Any:
        """Run the script on `client` (loading it first if Redis does not know it)."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.text)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def run_async(self, client: Any, keys: list[Any], args: list[Any]) -> Any:
        """:meth:`__call__` on a ``redis.asyncio`` client."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def command(self, keys: list[Any], args: list[Any]) -> list[Any]:
        """The EVALSHA command's arguments, for sending on a raw connection or pipeline."""
        return ["EVALSHA", self.sha, len(keys), *keys, *args]

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"

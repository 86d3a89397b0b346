"""`[performance] event_loop` picks the worker's loop: uvloop by default, asyncio on request."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from agentflow import _aio
from agentflow.config import reset_settings
from agentflow.errors import ConfigError


def test_auto_and_uvloop_give_uvloop_asyncio_gives_asyncio() -> None:
    for kind, expected in (("auto", uvloop.Loop), ("uvloop", uvloop.Loop),
                           ("asyncio", asyncio.BaseEventLoop)):  # fmt: skip
        loop = _aio.new_loop(kind)
        try:
            assert isinstance(loop, expected), kind
            assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
        finally:
            loop.close()
    asyncio_loop = _aio.new_loop("asyncio")
    assert not isinstance(asyncio_loop, uvloop.Loop)
    asyncio_loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    loop = _aio.new_loop("auto")
    assert not isinstance(loop, uvloop.Loop)
    loop.close()
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        _aio.new_loop("uvloop")


def test_the_setting_is_read_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_PERFORMANCE__EVENT_LOOP", "asyncio")
    reset_settings()
    try:
        loop = _aio.new_loop()
        assert not isinstance(loop, uvloop.Loop)
        loop.close()
    finally:
        monkeypatch.delenv("AGENTFLOW_PERFORMANCE__EVENT_LOOP")
        reset_settings()

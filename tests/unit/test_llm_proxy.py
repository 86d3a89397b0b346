"""The LLM client honours HTTP(S)_PROXY / NO_PROXY as httpx's own client does."""

from __future__ import annotations

import pytest

from agentflow.llm.client import _proxied

_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_no_proxy_in_the_environment_means_a_direct_connection() -> None:
    assert not _proxied("https://api.openai.com/v1")


def test_a_proxy_applies_by_scheme_and_no_proxy_excludes_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "llm.internal")
    assert _proxied("https://api.openai.com/v1")
    assert not _proxied("https://llm.internal/v1")
    assert not _proxied("http://api.openai.com/v1")  # only https is proxied here

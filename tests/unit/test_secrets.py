"""No URL AgentFlow prints shows a password, whatever form the URL gives it in."""

from __future__ import annotations

import pytest

from agentflow.config import load_settings, mask_url

MASK = "********"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:secret@host:6379/0", f"redis://:{MASK}@host:6379/0"),
        ("redis://user:secret@host:6379/0", f"redis://user:{MASK}@host:6379/0"),
        ("rediss://user:secret@host", f"rediss://user:{MASK}@host"),
        (
            "rediss://default:secret@redis.example.com:6380/1?ssl_cert_reqs=required",
            f"rediss://default:{MASK}@redis.example.com:6380/1?ssl_cert_reqs=required",
        ),
        ("redis://host:6379/0?password=secret", f"redis://host:6379/0?password={MASK}"),
        (
            "redis://host/0?db=2&PASS=secret&socket_timeout=5",
            f"redis://host/0?db=2&PASS={MASK}&socket_timeout=5",
        ),
        ("redis://host/0?passwd=secret", f"redis://host/0?passwd={MASK}"),
        ("redis://host/0?auth=secret", f"redis://host/0?auth={MASK}"),
        (
            "redis://host/0?sentinel_password=secret",
            f"redis://host/0?sentinel_password={MASK}",
        ),
        ("unix:///run/redis.sock?password=secret", f"unix:///run/redis.sock?password={MASK}"),
        (
            "unix://user:secret@/run/redis.sock?db=0",
            f"unix://user:{MASK}@/run/redis.sock?db=0",
        ),
        (
            "sentinel://:secret@h1:26379;sentinel://:secret@h2:26379",
            f"sentinel://:{MASK}@h1:26379;sentinel://:{MASK}@h2:26379",
        ),
        (
            "sentinel://u:secret@h1:26379/0;sentinel://h2:26379/0?password=secret",
            f"sentinel://u:{MASK}@h1:26379/0;sentinel://h2:26379/0?password={MASK}",
        ),
        # Percent-encoded and raw reserved characters in the password.
        ("redis://:p%40ss%2Fword@host/0", f"redis://:{MASK}@host/0"),
        ("redis://:p@ss/word@host/0", f"redis://:{MASK}@host/0"),
        # Both places at once.
        ("redis://:a@host/0?password=b", f"redis://:{MASK}@host/0?password={MASK}"),
    ],
)
def test_mask_url_hides_every_password_form(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "secret" not in str(mask_url(url))


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://user@host:6379/0",  # a user name alone is no secret
        "redis://user:@host/0",  # an empty password neither
        "unix:///run/redis.sock?db=3",
        "redis://host/0?ssl_cert_reqs=required&socket_timeout=5",
        "sentinel://h1:26379;sentinel://h2:26379",
    ],
)
def test_mask_url_keeps_urls_without_password(url: str) -> None:
    assert mask_url(url) == url


def test_mask_url_passes_none_and_empty_through() -> None:
    assert mask_url(None) is None
    assert mask_url("") == ""


def test_config_show_data_masks_broker_and_result_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_BROKER__URL", "redis://h:6379/0?password=secret1")
    monkeypatch.setenv("AGENTFLOW_BROKER__RESULT_URL", "rediss://u:secret2@h:6380/1")
    data = load_settings().public_dict()
    assert data["broker"]["url"] == f"redis://h:6379/0?password={MASK}"
    assert data["broker"]["result_url"] == f"rediss://u:{MASK}@h:6380/1"

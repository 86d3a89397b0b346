"""Sentinel URLs and settings: what a user writes becomes the right Celery, kombu and
redis-py configuration (no server needed)."""

from __future__ import annotations

import pytest

from agentflow import load_settings
from agentflow._redis.celery_settings import build_celery_config
from agentflow._redis.connection import is_sentinel, open_redis
from agentflow._redis.sentinel import parse
from agentflow.errors import ConfigError

URL = "sentinel://:s%40cret@10.0.0.1:26379/3;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def test_a_sentinel_url_names_every_sentinel_and_the_masters_db_and_password() -> None:
    hosts, master = parse(URL)
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert master == {"db": 3, "password": "s@cret"}
    assert is_sentinel(URL) and not is_sentinel("redis://127.0.0.1:6379/0")


@pytest.mark.parametrize("bad", ["sentinel://", "redis://h:1;sentinel://h:2", "sentinel://h/x"])
def test_a_bad_sentinel_url_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse(bad)


def test_workers_get_the_sentinel_transport_and_backend_options() -> None:
    settings = load_settings(broker={"url": URL, "sentinel_master": "mymaster",
                                     "sentinel_password": "sentinel-pw"})  # fmt: skip
    config = build_celery_config(settings)
    assert config["broker_url"] == URL and config["result_backend"] == URL
    assert config["broker_transport"] == "agentflow._redis.transport:SentinelTransport"
    for options in (config["broker_transport_options"],
                    config["result_backend_transport_options"]):  # fmt: skip
        assert options["master_name"] == "mymaster"
        assert options["sentinel_kwargs"] == {"password": "sentinel-pw"}
        assert options["visibility_timeout"] >= 10


def test_a_sentinel_url_without_a_master_name_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="sentinel_master"):
        build_celery_config(load_settings(broker={"url": URL}))


def test_the_sentinel_password_is_masked_when_settings_are_shown() -> None:
    settings = load_settings(broker={"url": URL, "sentinel_master": "m",
                                     "sentinel_password": "sentinel-pw"})  # fmt: skip
    shown = settings.public_dict()["broker"]
    assert shown["sentinel_password"] == "********"
    assert "s%40cret" not in shown["url"] and "sentinel-pw" not in str(shown)


def test_agentflows_own_clients_ask_the_sentinels_for_the_master() -> None:
    settings = load_settings(broker={"url": URL, "sentinel_master": "mymaster"})
    client = open_redis(URL, settings, max_connections=7)
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    assert pool.max_connections == 7
    assert pool.connection_kwargs["password"] == "s@cret" and pool.connection_kwargs["db"] == 3
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"],
             s.connection_pool.connection_kwargs["port"]) for s in sentinels] == parse(URL)[0]  # fmt: skip
    client.close()

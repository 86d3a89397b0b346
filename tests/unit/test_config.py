"""agentflow.toml + environment: every seed key, durations, clear errors, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow._redis.celery_settings import build_celery_config
from agentflow.config import load_settings
from agentflow.durations import format_duration, parse_duration
from agentflow.errors import ConfigError

SEED_TOML = """
[runner]
max_concurrent_events = 200
event_buffer_size = 5000
worker_pool_size = 64
event_timeout = "45s"

[memory]
state_cache_size = 2000
state_cache_ttl = "2h"
enable_state_compression = false

[performance]
enable_request_batching = true
batch_size = 16
batch_timeout = "100ms"

[monitoring]
enable_metrics = true
metrics_interval = "15s"

[llm.openai]
max_connections = 100
min_connections = 10
connection_timeout = "10s"
idle_timeout = "5m"
max_connection_lifetime = "1h"
request_timeout = "60s"
retry_max_attempts = 4
retry_initial_interval = "500ms"
api_key = "sk-very-secret"
model = "gpt-4o-mini"

[llm.azure]
endpoint = "https://example.openai.azure.com"
api_key = "azure-secret"
deployment = "gpt4"
max_connections = 50
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("AGENTFLOW_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentflow.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("100ms", 0.1), ("1h", 3600), ("1m30s", 90), ("2.5", 2.5), (7, 7.0)],
)
def test_durations_read_like_the_seed(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["30 parsecs", "-1", "", "s", True])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_durations_render_back() -> None:
    assert [format_duration(x) for x in (30, 0.1, 3600, 90)] == ["30s", "100ms", "1h", "90s"]


def test_the_seeds_profiling_keys_are_accepted_with_a_warning(
    tmp_path: Path, clean_env: None
) -> None:
    seed = "[monitoring]\nenable_profiling = true\nprofile_port = 6061\n"
    with pytest.warns(FutureWarning, match="enable_profiling, profile_port no longer"):
        s = load_settings(write(tmp_path, seed))
    assert "enable_profiling" not in s.monitoring.model_dump()


def test_every_seed_key_is_read(tmp_path: Path, clean_env: None) -> None:
    s = load_settings(write(tmp_path, SEED_TOML))
    assert (s.runner.max_concurrent_events, s.runner.event_buffer_size) == (200, 5000)
    assert (s.runner.worker_pool_size, s.runner.event_timeout) == (64, 45.0)
    assert (s.memory.state_cache_size, s.memory.state_cache_ttl) == (2000, 7200.0)
    assert s.memory.enable_state_compression is False
    assert (s.performance.batch_size, s.performance.batch_timeout) == (16, 0.1)
    assert s.monitoring.metrics_interval == 15.0
    o = s.llm.openai
    assert (o.max_connections, o.min_connections, o.idle_timeout) == (100, 10, 300.0)
    assert (o.max_connection_lifetime, o.request_timeout, o.retry_initial_interval) == (
        3600.0, 60.0, 0.5,
    )  # fmt: skip
    assert o.api_key is not None and o.api_key.get_secret_value() == "sk-very-secret"
    assert s.llm.azure.deployment == "gpt4"


def test_environment_overrides_the_file(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_RUNNER__WORKER_POOL_SIZE", "12")
    monkeypatch.setenv("AGENTFLOW_LLM__OPENAI__REQUEST_TIMEOUT", "2s")
    s = load_settings(write(tmp_path, SEED_TOML))
    assert s.runner.worker_pool_size == 12
    assert s.llm.openai.request_timeout == 2.0
    assert s.runner.event_timeout == 45.0


def test_unknown_key_names_key_and_file(tmp_path: Path, clean_env: None) -> None:
    path = write(tmp_path, "[runner]\nworker_pool_sise = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value) and "runner.worker_pool_sise" in str(info.value)


def test_bad_value_names_key_and_file(tmp_path: Path, clean_env: None) -> None:
    path = write(tmp_path, '[runner]\nevent_timeout = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message and "runner.event_timeout" in message and "soon" in message


def test_bad_environment_value_is_named(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_RUNNER__MAX_CONCURRENT_EVENTS", "many")
    with pytest.raises(ConfigError, match=r"environment.*runner.max_concurrent_events"):
        load_settings()


def test_public_dict_masks_secrets(tmp_path: Path, clean_env: None) -> None:
    text = SEED_TOML + '\n[broker]\nurl = "redis://:hunter2@redis.internal:6379/0"\n'
    data = load_settings(write(tmp_path, text)).public_dict()
    dumped = repr(data)
    assert "sk-very-secret" not in dumped and "azure-secret" not in dumped
    assert "hunter2" not in dumped
    assert data["llm"]["openai"]["api_key"] == "********"
    assert data["runner"]["event_timeout"] == "45s"


def test_celeryconfig_maps_seed_keys_onto_celery(tmp_path: Path, clean_env: None) -> None:
    text = SEED_TOML + '\n[broker]\nurl = "redis://127.0.0.1:6379/9"\n'
    conf = build_celery_config(load_settings(write(tmp_path, text)))
    assert conf["worker_concurrency"] == 64
    # AgentFlow's own timeout (45 s) fires first; Celery's limits are prefork's backstop.
    assert 45.0 < conf["task_soft_time_limit"] < conf["task_time_limit"]
    # Held messages are renewed while they run: the visibility timeout is only how long a
    # dead worker's messages take to come back, whatever the time limits.
    assert conf["broker_transport_options"]["visibility_timeout"] == 60
    assert "worker_pool" not in conf  # -P on the command line must win (see choose_pool)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["broker_url"] == "redis://127.0.0.1:6379/9"
    assert conf["worker_prefetch_multiplier"] >= 1


@pytest.mark.parametrize(
    ("toml", "pool"),
    [('execution = "pool"\n', "threads"), ('execution = "direct"\n', "asyncio"),
     ('execution = "pool"\npool = "prefork"\n', "prefork"), ("", "asyncio")],
)  # fmt: skip
def test_the_retired_execution_key_still_picks_the_same_pool(
    tmp_path: Path, clean_env: None, toml: str, pool: str
) -> None:
    if "execution" in toml:
        with pytest.warns(FutureWarning, match="execution is retired"):
            s = load_settings(write(tmp_path, "[runner]\n" + toml))
    else:
        s = load_settings(write(tmp_path, "[runner]\n" + toml))
    assert s.runner.pool == pool


def test_a_bad_retired_execution_value_is_refused(tmp_path: Path, clean_env: None) -> None:
    with pytest.raises(ConfigError, match="execution must be 'direct' or 'pool'"):
        load_settings(write(tmp_path, '[runner]\nexecution = "drect"\n'))


def test_pool_threads_warns_that_it_now_means_celerys_thread_pool(
    tmp_path: Path, clean_env: None
) -> None:
    with pytest.warns(FutureWarning, match="pool = 'asyncio'"):
        assert load_settings(write(tmp_path, '[runner]\npool = "threads"\n')).runner.pool == (
            "threads"
        )

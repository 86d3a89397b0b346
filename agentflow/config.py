"""`agentflow.toml` plus environment variables, read into typed settings (pydantic-settings).

Lookup order, later wins: built-in defaults, the TOML file (``$AGENTFLOW_CONFIG`` or
``./agentflow.toml``), environment variables ``AGENTFLOW_<SECTION>__<KEY>`` (for example
``AGENTFLOW_RUNNER__WORKER_POOL_SIZE=64``), then keyword overrides in code.
An unknown key or a bad value raises :class:`~agentflow.errors.ConfigError` naming both the
key and the file.
"""

from __future__ import annotations

import json
import os
import tomllib
import warnings
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agentflow.durations import Duration
from agentflow.errors import ConfigError

CONFIG_ENV = "AGENTFLOW_CONFIG"
_FILE: ContextVar[Path | None] = ContextVar("agentflow_config_file", default=None)
DEFAULT_CONFIG_FILE = "agentflow.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class BrokerConfig(_Section):
    """Where Redis is: broker, result backend and AgentFlow's own keys share it."""

    url: str | None = Field(
        default=None,
        description="Redis URL; unset means redis://127.0.0.1:6379/0, else an embedded Redis.",
    )
    result_url: str | None = Field(default=None, description="Result backend URL; default: url.")
    embedded: bool = Field(default=True, description="Start an embedded Redis when none answers.")
    embedded_dir: str | None = Field(
        default=None, description="Where the embedded Redis keeps its socket, pid and port files."
    )
    key_prefix: str = Field(default="agentflow", description="Prefix of AgentFlow's own keys.")
    result_expires: Duration = Field(default=86400.0, description="How long results are kept.")
    producer_connections: int = Field(
        default=64,
        ge=1,
        description="Redis connections one Client may hold; more callers wait for one.",
    )
    sentinel_master: str | None = Field(
        default=None,
        description="With a sentinel:// URL: the master's name in Sentinel (as given to "
        "`sentinel monitor`). The Redis password goes in the URL.",
    )
    sentinel_password: str | None = Field(
        default=None, description="With a sentinel:// URL: the sentinels' own password."
    )
    wait_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas that must have an emitted event before emit returns, and a "
        "finished event's result before its worker counts it done (Redis WAIT, one per "
        "pipeline). 0: do not wait. Narrows what a failover can lose; see docs/deploy.md.",
    )
    wait_timeout: Duration = Field(
        default=1.0,
        gt=0,
        le=10.0,
        description="Longest WAIT for those replicas (at most 10 s: a reply later than a "
        "connection's reply timeout, 30 s, counts as a lost connection). A write they did "
        "not all confirm in time is not undone: it is logged and counted "
        "(replication.unconfirmed), and pipelines skip the WAIT for 5 s before trying again.",
    )


class RunnerConfig(_Section):
    """The seed's `[runner]`: how many events run at once and for how long."""

    max_concurrent_events: int = Field(default=100, ge=1)
    event_buffer_size: int = Field(default=1000, ge=1)
    worker_pool_size: int = Field(default=50, ge=1)
    event_timeout: Duration = 30.0
    pool: Literal["asyncio", "threads", "prefork", "solo"] = Field(
        default="asyncio",
        description="The worker pool when `celery worker` is given no -P: asyncio "
        "(AgentFlow's: every event a Celery request on one event loop), or one of Celery's "
        "pools (threads, prefork for CPU-bound agents, solo). gevent/eventlet are refused: "
        "the per-process asyncio loop that carries LLM calls cannot run under their "
        "monkey-patching.",
    )
    prefetch_multiplier: int = Field(default=4, ge=1)
    backpressure: Literal["block", "error"] = "block"
    backpressure_timeout: Duration = 30.0
    visibility_timeout: Duration = Field(
        default=60.0,
        gt=0,
        description="How long after its worker died an unacked message is redelivered. A "
        "live worker renews its messages every quarter of it, however long they run.",
    )
    claim_lease: Duration | None = Field(
        default=None,
        description="Lease of a running event's claim, renewed every third of it while the "
        "event runs; default: half the visibility timeout.",
    )
    max_stuck_threads: int = Field(
        default=16,
        ge=1,
        description="Timed-out sync agents whose threads stay stuck in blocking calls before "
        "the worker restarts itself gracefully.",
    )
    unserved_timeout: Duration = Field(
        default=600.0,
        gt=0,
        description="A queue of an agent no live worker has announced for this long is "
        "drained into the dead-letter queue.",
    )
    scheduler_interval: Duration = Field(
        default=1.0,
        gt=0,
        description="How often each worker moves due delayed events and wait timeouts to "
        "their queues (every worker does; each entry moves once).",
    )
    max_event_bytes: int = Field(default=1_048_576, ge=256)
    max_redeliveries: int = Field(default=5, ge=1)
    max_hops: int = Field(
        default=16, ge=1,
        description="How many events a chain of routed results may run (AgentResult.route): "
        "the event past it is dead-lettered, so a cycle cannot run forever.",
    )  # fmt: skip
    routes: dict[str, str] = Field(default_factory=dict, description="event type → agent name")
    default_agent: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _map_retired_execution(cls, data: Any) -> Any:
        """Read the retired ``execution`` key into ``pool``, and say what changed (a
        FutureWarning: Python shows those to users)."""
        if not isinstance(data, dict):
            return data
        if "execution" in data:
            data = dict(data)
            execution = data.pop("execution")
            if execution not in ("direct", "pool"):
                raise ValueError(f"execution must be 'direct' or 'pool', got {execution!r}")
            if data.get("pool", "threads") == "threads":
                data["pool"] = "threads" if execution == "pool" else "asyncio"
            warnings.warn(f"[runner] execution is retired: use pool = {data['pool']!r}",
                          FutureWarning, stacklevel=2)  # fmt: skip
        elif data.get("pool") == "threads":
            warnings.warn("[runner] pool = 'threads' is Celery's thread pool; AgentFlow's "
                          "asyncio pool, which 'threads' meant before, is pool = 'asyncio'",
                          FutureWarning, stacklevel=2)  # fmt: skip
        return data

    @property
    def hard_time_limit(self) -> float:
        """Celery's hard limit for an event: event_timeout plus a grace period for cleanup
        (AgentFlow's own timeout fires first; this is prefork's backstop)."""
        return self.event_timeout + max(5.0, self.event_timeout * 0.1)

    @property
    def claim_ttl(self) -> float:
        """The claim lease in seconds."""
        if self.claim_lease is not None:
            return self.claim_lease
        return max(5.0, self.visibility_timeout / 2)


class MemoryConfig(_Section):
    """The seed's `[memory]`: session state in Redis with a bounded local cache."""

    state_cache_size: int = Field(default=10000, ge=0)
    state_cache_ttl: Duration = 3600.0
    enable_state_compression: bool = True
    compression_threshold: int = Field(default=512, ge=0)


class PerformanceConfig(_Section):
    """The seed's `[performance]`: request batching and connection pooling."""

    enable_request_batching: bool = True
    batch_size: int = Field(default=10, ge=1)
    batch_timeout: Duration = 0.1
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """The worker's event loop (LLM calls, async agents and tools): uvloop where installed
    (``auto``), or always uvloop, or asyncio's own."""


class MonitoringConfig(_Section):
    """The seed's `[monitoring]`: statsd metrics and Celery's task events."""

    enable_metrics: bool = True
    metrics_interval: Duration = 10.0

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, data: Any) -> Any:
        """Accept the retired profiling keys with a warning (py-spy replaced the endpoint)."""
        if isinstance(data, dict):
            retired = [k for k in ("enable_profiling", "profile_port") if k in data]
            if retired:
                warnings.warn(f"[monitoring] {', '.join(retired)} no longer does anything: "
                              "profile workers with py-spy (docs/performance.md)",
                              FutureWarning, stacklevel=2)  # fmt: skip
                data = {k: v for k, v in data.items() if k not in retired}
        return data

    statsd_host: str = "127.0.0.1"
    statsd_port: int = Field(default=8125, ge=1, le=65535)
    statsd_prefix: str = "agentflow"
    task_events: bool = False
    trace: bool = Field(
        default=False,
        description="Record each event's steps in Redis for `agentflow trace` (docs/agents.md).",
    )
    trace_ttl: Duration = Field(default=86400.0, description="How long traces are kept.")
    health_file: str = Field(
        default="",
        description="Where a worker writes its liveness beat for `agentflow health` (empty: "
        "agentflow-worker.health in the temporary directory). One file per worker.",
    )


class LLMProviderConfig(_Section):
    """One LLM provider's pool, timeouts, retries and credentials (`[llm.openai]`, …)."""

    endpoint: str | None = None
    api_key: SecretStr | None = None
    deployment: str | None = None
    model: str | None = None
    api_version: str | None = None
    max_connections: int = Field(default=30, ge=1)
    min_connections: int = Field(default=0, ge=0)
    connection_timeout: Duration = 10.0
    idle_timeout: Duration = 300.0
    max_connection_lifetime: Duration = 3600.0
    request_timeout: Duration = 30.0
    retry_max_attempts: int = Field(default=3, ge=1)
    retry_initial_interval: Duration = 1.0
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    breaker_max_failures: int = Field(default=5, ge=1)
    breaker_timeout: Duration = 30.0
    rate_limit_max_wait: Duration = Field(
        default=30.0, description="Longest wait for a rate-limit slot before RateLimited."
    )
    embedding_model: str | None = Field(
        default=None, description="Model for embed() calls; default: model."
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> LLMProviderConfig:
        if self.min_connections > self.max_connections:
            raise ValueError("min_connections cannot exceed max_connections")
        return self


class OpenAIConfig(LLMProviderConfig):
    """`[llm.openai]` with OpenAI's public endpoint as the default."""

    endpoint: str | None = "https://api.openai.com/v1"
    model: str | None = "gpt-4o-mini"
    embedding_model: str | None = "text-embedding-3-small"


class AzureConfig(LLMProviderConfig):
    """`[llm.azure]`: endpoint, deployment and api-version of an Azure OpenAI resource."""

    max_connections: int = Field(default=50, ge=1)
    min_connections: int = Field(default=5, ge=0)
    api_version: str | None = "2024-06-01"


class OllamaConfig(LLMProviderConfig):
    """`[llm.ollama]`: a local Ollama server."""

    endpoint: str | None = "http://127.0.0.1:11434"
    model: str | None = "llama3.1"


class LLMConfig(_Section):
    """`[llm]`: the default provider and one table per provider."""

    provider: Literal["openai", "azure", "ollama", "mock"] = "openai"
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    azure: AzureConfig = Field(default_factory=AzureConfig)
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)
    cache_enabled: bool = True
    cache_ttl_factual: Duration = 86400.0
    cache_ttl_creative: Duration = 300.0
    cache_ttl_default: Duration = 3600.0
    agent_cache_ttl: dict[str, Duration] = Field(
        default_factory=dict, description="agent name → cache TTL overriding the kind's TTL"
    )
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="model → (input, output) USD per 1M tokens, over the built-in table",
    )


class ToolsConfig(_Section):
    """`[tools]`: how tool calls fan out and run."""

    timeout: Duration = Field(
        default=30.0, description="Per-call time limit unless the tool sets one."
    )
    queue_per_tool: bool = Field(
        default=False,
        description="true: each tool on `agentflow.tool.<name>`; else `agentflow.tools`.",
    )
    cache_ttl: Duration = Field(default=3600.0, description="TTL of cacheable tools' results.")
    stream_batch_size: int = Field(default=100, ge=1, description="Items per streamed batch.")
    max_steps: int = Field(default=8, ge=1, description="LLM → tools rounds an agent may take.")


class HTTPConfig(_Section):
    """`[http]`: the pooled HTTP client tools use (`agentflow.http`), per worker process."""

    max_connections: int = Field(
        default=200, ge=1, description="Connections the process may hold open, all hosts."
    )
    max_connections_per_host: int = Field(
        default=0, ge=0, description="Connections to one host and port (0: no limit of its own)."
    )
    connect_timeout: Duration = Field(
        default=10.0, description="Seconds to open a connection (or wait for a free one)."
    )
    timeout: Duration = Field(
        default=30.0, description="Seconds to wait for each part of a reply (per read)."
    )
    idle_timeout: Duration = Field(
        default=60.0, description="An idle kept-alive connection is closed after this."
    )
    retries: int = Field(
        default=2,
        ge=0,
        description="Extra attempts of an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) "
        "after a connection error or a 502/503/504.",
    )
    retry_backoff: Duration = Field(
        default=0.1, description="First retry's delay; doubled each time, with jitter."
    )
    user_agent: str | None = Field(
        default=None, description="User-Agent header (default: agentflow/<version>)."
    )


class MCPServerConfig(_Section):
    """`[mcp.servers.<name>]`: one MCP server whose tools agents may call."""

    transport: Literal["stdio", "http"] = "stdio"
    command: str | None = Field(default=None, description="stdio: the server's executable.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = Field(default=None, description="http: the streamable-HTTP endpoint.")
    pool_size: int = Field(default=2, ge=1, le=64)
    connect_timeout: Duration = 10.0
    call_timeout: Duration = 30.0
    health_interval: Duration = 30.0
    tools_ttl: Duration = 300.0


class MCPConfig(_Section):
    """`[mcp]`: MCP servers; their tools are named ``<server>__<tool>``."""

    servers: dict[str, MCPServerConfig] = Field(default_factory=dict)


ErrorCategory = Literal[
    "validation", "timeout", "llm_unavailable", "rate_limited", "tool_error", "agent_error"
]


_RETRIED: list[ErrorCategory] = ["llm_unavailable", "rate_limited"]


class RetryPolicy(_Section):
    """`[agents.<name>.retry]`: how often a failed run of the agent runs again, and on what."""

    attempts: int = Field(default=3, ge=1, description="Runs in all, the first included.")
    backoff: Duration = Field(default=1.0, description="Wait before the second run; doubles.")
    max_backoff: Duration = Field(default=60.0, description="The longest wait between runs.")
    on: list[ErrorCategory] = Field(
        default_factory=lambda: list(_RETRIED),
        description="Error categories that are retried; others fail at once.",
    )

    @field_validator("on", mode="before")
    @classmethod
    def _from_env(cls, value: Any) -> Any:
        """From the environment, a JSON list or comma-separated names."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else \
                [v.strip() for v in text.split(",") if v.strip()]  # fmt: skip
        return value

    def wait(self, runs: int) -> float:
        """Seconds to wait after the run numbered `runs` (1 for the first) failed."""
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, runs - 1)))


class AgentPolicy(_Section):
    """`[agents.<name>]`: one agent's policy; unset fields keep the global settings."""

    timeout: Duration | None = Field(default=None, description="Replaces event_timeout.")
    retry: RetryPolicy | None = None
    rate_limit: float | None = Field(
        default=None, gt=0, description="Events per second started, across every worker."
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Events of the agent in flight across every worker."
    )
    llm_provider: Literal["openai", "azure", "ollama", "mock"] | None = None
    llm_model: str | None = None
    cache: bool | None = Field(default=None, description="Cache the agent's LLM calls.")
    cache_ttl: Duration | None = None


class AgentsConfig(_Section):
    """`[agents]`: modules imported at start-up so their agents and tools register, and
    `[agents.<name>]` tables: each agent's policy (:class:`AgentPolicy`)."""

    modules: list[str] = Field(default_factory=list)
    policies: dict[str, AgentPolicy] = Field(
        default_factory=dict, description="Written as [agents.<name>] tables."
    )

    @model_validator(mode="before")
    @classmethod
    def _tables_are_policies(cls, data: Any) -> Any:
        """``[agents.chat]`` (or ``AGENTFLOW_AGENTS__CHAT__TIMEOUT``) is chat's policy."""
        if isinstance(data, dict):
            tables = {k: v for k, v in data.items() if k not in ("modules", "policies")}
            if tables:
                data = {k: v for k, v in data.items() if k in ("modules", "policies")}
                data["policies"] = {**dict(data.get("policies") or {}), **tables}
        return data

    @field_validator("policies")
    @classmethod
    def _names(cls, value: dict[str, AgentPolicy]) -> dict[str, AgentPolicy]:
        for name in value:
            if not name or not set(name) <= _AGENT_NAME_CHARS:
                raise ValueError(f"[agents.{name}]: not an agent name (letters, digits, _ - . :)")
        return value

    def policy(self, name: str) -> AgentPolicy:
        """Agent `name`'s policy (every field unset when it has none)."""
        return self.policies.get(name) or _NO_POLICY


class ErrorRoutingConfig(_Section):
    """`[error_routing]`: the handler agent of each error category. A failed event whose
    category names a handler is sent to it, with the failure attached, instead of to the
    dead-letter queue; unrouted failures are dead-lettered (docs/agents.md)."""

    validation: str | None = Field(default=None, description="Invalid events, unknown agents.")
    timeout: str | None = Field(default=None, description="Agents that ran out of time.")
    llm_unavailable: str | None = Field(default=None, description="LLM down after retries.")
    rate_limited: str | None = Field(default=None, description="LLM rate-limited after retries.")
    tool_error: str | None = Field(default=None, description="Agents that raised ToolError.")
    agent_error: str | None = Field(default=None, description="Agents that raised otherwise.")

    @field_validator("*")
    @classmethod
    def _agent_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or not set(value) <= _AGENT_NAME_CHARS):
            raise ValueError(f"{value!r} is not an agent name (letters, digits, _ - . :)")
        return value

    def handler(self, category: str | None) -> str | None:
        """The handler agent of `category`, or None (the failure is dead-lettered)."""
        return getattr(self, category, None) if category in type(self).model_fields else None


_AGENT_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


class TenantsConfig(_Section):
    """`[tenants]`: fairness between tenants (``Event.tenant``)."""

    max_in_flight: int | None = Field(
        default=None, ge=1,
        description="Events of one tenant in flight (queued or running) across the cluster; "
        "more wait in the tenant's own list, so others' events pass them. None: no cap.",
    )  # fmt: skip
    limits: dict[str, int] = Field(
        default_factory=dict, description="Per-tenant caps that replace max_in_flight."
    )

    def limit(self, tenant: str) -> int | None:
        """The cap of `tenant`'s events in flight, or None."""
        return self.limits.get(tenant, self.max_in_flight)


_NO_POLICY = AgentPolicy()


class GatewayKeyConfig(_Section):
    """One API key of the gateway: its hash, the agents it may use, its request rate."""

    hash: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="`agentflow gateway hash-key` prints it; the key itself is never stored.",
    )
    name: str = Field(default="", max_length=64, description="Shown in logs and metrics.")
    agents: list[str] = Field(
        default_factory=lambda: ["*"], description='Agents this key may use; ["*"] for all.'
    )
    rate: float = Field(default=50.0, gt=0, description="Requests per second (token bucket).")
    burst: int | None = Field(default=None, ge=1, description="Bucket size; default: rate.")


class GatewayConfig(_Section):
    """`[gateway]`: the HTTP front door (`agentflow gateway`, docs/gateway.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    keys: list[GatewayKeyConfig] = Field(
        default_factory=list,
        description="API keys (hashed); the gateway refuses to start without one.",
    )
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Larger bodies: 413.")
    max_wait: Duration = Field(default=60.0, description="The longest `?wait=` honoured.")
    stream_timeout: Duration = Field(
        default=3600.0, description="An SSE stream with nothing new for this long ends."
    )


class Settings(BaseSettings):
    """The whole effective configuration."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTFLOW_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    http: HTTPConfig = Field(default_factory=HTTPConfig)
    mcp: MCPConfig = Field(default_factory=MCPConfig)
    error_routing: ErrorRoutingConfig = Field(default_factory=ErrorRoutingConfig)
    tenants: TenantsConfig = Field(default_factory=TenantsConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _FILE.get()
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data with every secret masked."""
        data = self.model_dump(mode="json")
        for provider in ("openai", "azure", "ollama"):
            key = data["llm"][provider].get("api_key")
            if key:
                data["llm"][provider]["api_key"] = "********"
        for section, field in (("broker", "url"), ("broker", "result_url")):
            data[section][field] = mask_url(data[section][field])
        if data["broker"].get("sentinel_password"):
            data["broker"]["sentinel_password"] = "********"
        return data


def mask_url(url: str | None) -> str | None:
    """A URL fit to print: every password in it replaced by ``********``.

    Masks the password of the user info (``redis://:secret@host``,
    ``rediss://user:secret@host``; the user name is kept), secret query parameters
    (``password``, ``pass``, ``passwd``, ``auth`` and any ``*password``, as in
    ``unix:///run/redis.sock?password=secret``), and each URL of a ``;``-separated list
    (``sentinel://:pw@h1:26379;sentinel://:pw@h2:26379``). The rest is kept as given.
    Characters that URLs reserve (``/ ? # @``) must be percent-encoded in a password, as for
    any URL; a raw ``@`` or ``/`` in one is still masked.
    """
    import re
    from urllib.parse import unquote_plus

    mask = "********"

    def secret_key(key: str) -> bool:
        name = unquote_plus(key).strip().lower()
        return name in ("password", "pass", "passwd", "auth") or name.endswith("password")

    def one(part: str) -> str:
        head, qmark, query = part.partition("?")
        scheme, sep, rest = head.partition("://")
        at = rest.rfind("@")
        if sep and at >= 0:
            user, colon, password = rest[:at].partition(":")
            if colon and password:
                head = f"{scheme}://{user}:{mask}@{rest[at + 1 :]}"
        if qmark:
            params = query.split("&")
            for i, param in enumerate(params):
                key, eq, _ = param.partition("=")
                if eq and secret_key(key):
                    params[i] = f"{key}={mask}"
            query = "&".join(params)
        return head + qmark + query

    if not url:
        return url
    return ";".join(one(p) for p in re.split(r";(?=[A-Za-z][A-Za-z0-9+.\-]*://)", url))


def config_path() -> Path | None:
    """The config file in use: $AGENTFLOW_CONFIG, else ./agentflow.toml if it exists."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={explicit}: no such file")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: bad value for '{key}': {err['msg']}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the config file (if any) and the environment into :class:`Settings`."""
    file = Path(path) if path is not None else config_path()
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc}") from exc
        try:
            # Validate the file alone first, so an error names the file rather than the env.
            Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, str(file))) from exc
    token = _FILE.set(file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        source = f"{file} + environment (AGENTFLOW_*)" if file else "environment (AGENTFLOW_*)"
        raise ConfigError(_format_errors(exc, source)) from exc
    finally:
        _FILE.reset(token)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests, or after changing the environment)."""
    get_settings.cache_clear()

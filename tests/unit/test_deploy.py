"""deploy/: the Dockerfile, the compose stack and the kustomize manifests say what AgentFlow does.

Offline: no Docker daemon, no cluster. Every command a service or a probe runs goes through
AgentFlow's and Celery's own command-line parsers (a renamed flag fails here), every queue a
worker takes exists in AgentFlow's routes, grace periods outlast the time limits the shipped
agentflow.toml gives, the rendered Kubernetes objects pass the 1.32 schemas, and every metric
the dashboard or the autoscaler reads is one the statsd exporter's mapping produces from a
metric AgentFlow sends.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from dockerfile_parse import DockerfileParser

from agentflow.config import Settings
from agentflow.durations import parse_duration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.32.0"
GRACE_MARGIN = 10.0
"""Seconds a stopping worker needs beyond its last run: store the result, ack, exit."""


# -- what AgentFlow has --------------------------------------------------------------------
@cache
def builtin_agents() -> tuple[str, ...]:
    """The agents AgentFlow ships for production use (the benchmark's own left out)."""
    from agentflow.agents.registry import agent_names, load_modules

    load_modules(
        ["agentflow.agents.builtin", "agentflow.agents.tooling", "agentflow.tools.builtin"]
    )
    return tuple(n for n in agent_names() if not n.startswith("bench"))


@cache
def known_queues() -> frozenset[str]:
    """Every queue AgentFlow declares for its built-in agents: agents, tools, default."""
    from agentflow._redis.queues import all_queues

    return frozenset(q.name for q in all_queues(builtin_agents()))


def hard_limit(settings: Settings) -> float:
    """The longest time Celery lets one run take under `settings`: the longest of
    event_timeout, the built-in agents' own timeouts, [tools] timeout and the built-in tools'
    own, plus Celery's grace (celery_settings.py: max(5 s, 10 %))."""
    from agentflow.agents.registry import get_agent
    from agentflow.tools.registry import get_tool, tool_names

    builtin_agents()
    agents = [get_agent(n).timeout or 0.0 for n in builtin_agents()]
    tools = [get_tool(n).timeout or 0.0 for n in tool_names()
             if get_tool(n).fn.__module__.startswith("agentflow.")]  # fmt: skip
    longest = max(settings.runner.event_timeout, settings.tools.timeout, *agents, *tools)
    return longest + max(5.0, longest * 0.1)


def shutdown_time(settings: Settings) -> float:
    """How long a warm shutdown may take: the worker runs every event it holds to the end,
    up to prefetch_multiplier rounds of its slots, each at most the hard limit."""
    return settings.runner.prefetch_multiplier * hard_limit(settings) + GRACE_MARGIN


def file_settings(text: str) -> Settings:
    """The settings an agentflow.toml gives, without this process's AGENTFLOW_* variables."""
    return Settings.model_validate(tomllib.loads(text))


def queues_of(argv: list[str]) -> list[str]:
    """The queues a `celery ... worker` command line takes (-Q / --queues)."""
    for i, arg in enumerate(argv):
        if arg in ("-Q", "--queues"):
            return argv[i + 1].split(",")
        if arg.startswith("--queues="):
            return arg.split("=", 1)[1].split(",")
    return []


_CHECK_CELERY = r"""
import contextlib, io, json, sys
import click
from celery.bin.celery import celery
problems = []
for argv in json.loads(sys.argv[1]):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = celery.main(args=argv[1:] + ["--help"], prog_name="celery",
                               standalone_mode=False)
        if code:
            problems.append(f"{argv}: exit {code}")
        if argv[3] == "flower":  # Flower's own options go to tornado's parser
            import flower.options  # noqa: F401  (defines them)
            from tornado.options import options
            options.parse_command_line(["flower", *argv[4:]], final=False)
    except (click.UsageError, Exception) as exc:
        problems.append(f"{argv}: {exc}")
print(json.dumps(problems))
"""


def celery_problems(commands: list[list[str]]) -> list[str]:
    """What Celery's (and Flower's) parsers say about `celery -A agentflow ...` commands."""
    for argv in commands:
        assert argv[:3] == ["celery", "-A", "agentflow"], argv
    unique = [json.loads(c) for c in dict.fromkeys(json.dumps(c) for c in commands)]
    done = subprocess.run([sys.executable, "-c", _CHECK_CELERY, json.dumps(unique)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def agentflow_problem(argv: list[str]) -> str | None:
    """What the `agentflow` command's parser says about `argv` (None: it parses)."""
    from agentflow.cli import main

    assert argv[0] == "agentflow", argv
    result = CliRunner().invoke(main, [*argv[1:], "--help"])
    return None if result.exit_code == 0 else f"{argv}: {result.output.strip()}"


# -- the statsd exporter's mapping ---------------------------------------------------------
def mapping(path: Path) -> dict[str, Any]:
    """The parsed statsd-exporter mapping file."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def produced_metrics(path: Path) -> dict[str, set[str]]:
    """Prometheus metric names the mapping produces → their label names (histograms add
    _bucket, _sum and _count)."""
    data = mapping(path)
    default_type = data.get("defaults", {}).get("observer_type", "histogram")
    out: dict[str, set[str]] = {}
    for rule in data["mappings"]:
        name, labels = rule["name"], set(rule.get("labels", {}))
        names = [name]
        if name.endswith("_seconds"):  # a timer
            kind = rule.get("observer_type", default_type)
            names += [name + "_sum", name + "_count"]
            names += [name + "_bucket"] if kind == "histogram" else []
            labels = labels | ({"le"} if kind == "histogram" else {"quantile"})
        for n in names:
            out.setdefault(n, set()).update(labels)
    return out


def glob_matches(pattern: str, name: str) -> bool:
    """statsd-exporter's glob match: `*` stands for one dot-free part of the name."""
    regex = "".join("[^.]+" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


def emitted_stats() -> set[str]:
    """Every stat AgentFlow sends, read from its source (`{...}` parts become `x`), with the
    default prefix."""
    found: set[str] = set()
    call = re.compile(r"""\.(?:incr|timing|gauge)\(\s*f?["']([^"']+)["']""")
    for path in (ROOT / "agentflow").rglob("*.py"):
        if path.name == "metrics.py" or "bench" in path.parts or "mock_llm" in path.parts:
            continue
        for stat in call.findall(path.read_text()):
            found.add("agentflow." + re.sub(r"\{[^}]*\}", "x", stat))
    return found


PROMQL_METRIC = re.compile(r"\b(agentflow_[a-z0-9_]+)\b")


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """deploy/compose/compose.yaml, parsed (YAML merge keys resolved)."""
    data = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run `celery -A agentflow worker`."""
    return {name: s for name, s in compose["services"].items()
            if s.get("command", [])[:4] == ["celery", "-A", "agentflow", "worker"]}  # fmt: skip


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s`, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render deploy/k8s with kustomize")
    done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def of_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Rendered objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def worker_deployments(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rendered Deployments whose container runs `celery -A agentflow worker`."""
    out = {}
    for name, dep in of_kind(objs, "Deployment").items():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        if container.get("args", [])[:4] == ["celery", "-A", "agentflow", "worker"]:
            out[name] = dep
    return out


def rendered_settings(objs: list[dict[str, Any]]) -> Settings:
    """The settings the rendered agentflow-config ConfigMap gives the workers."""
    maps = [o for n, o in of_kind(objs, "ConfigMap").items() if n.startswith("agentflow-config")]
    assert len(maps) == 1
    return file_settings(maps[0]["data"]["agentflow.toml"])


# -- Dockerfile ------------------------------------------------------------------------------
def readme_worker_command() -> list[str]:
    """The README's documented worker command (the one that serves every agent)."""
    match = re.search(r"^(celery -A agentflow worker)\s+# serves every registered agent",
                      (ROOT / "README.md").read_text(), re.M)  # fmt: skip
    assert match, "README no longer documents `celery -A agentflow worker`"
    return match.group(1).split()


def dockerfile() -> DockerfileParser:
    """deploy/Dockerfile, parsed."""
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    return parser


def exec_form(instruction: str) -> list[str]:
    """The last `instruction` (CMD, ENTRYPOINT) of the Dockerfile, which must be JSON."""
    values = [i["value"] for i in dockerfile().structure if i["instruction"] == instruction]
    assert values, f"the Dockerfile has no {instruction}"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list)
    return [str(x) for x in parsed]


def test_the_image_runs_the_readme_worker_command() -> None:
    assert exec_form("CMD") == readme_worker_command()


def test_the_image_runs_as_a_non_root_user_under_an_init_that_forwards_signals() -> None:
    users = [i["value"].strip() for i in dockerfile().structure if i["instruction"] == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    entry = exec_form("ENTRYPOINT")
    init = Path(entry[0]).name
    assert init in ("tini", "dumb-init"), entry
    assert "-g" not in entry and "--single-child" not in entry  # SIGTERM to Celery's main only
    runs = " ".join(i["value"] for i in dockerfile().structure if i["instruction"] == "RUN")
    assert re.search(rf"apt-get install[^&]*\b{init}\b", runs), f"{init} is not installed"


def test_the_image_installs_what_a_worker_and_flower_need() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    extras = re.search(r"ARG EXTRAS=(\S+)", text)
    assert extras and {"flower", "mcp", "otel"} <= set(extras.group(1).split(","))
    assert 'pip install "/tmp/build[${EXTRAS}]"' in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!README.md", "!celeryconfig.py", "!agentflow/"):
        assert needed in ignore  # the build context keeps what the image copies


# -- compose -------------------------------------------------------------------------------
def test_compose_runs_a_worker_per_agent_queue_and_the_tools_queue(compose) -> None:
    taken = [q for s in workers(compose).values() for q in queues_of(s["command"])]
    assert len(taken) == len(set(taken)), "two services take the same queue"
    assert not set(taken) - known_queues(), "a worker takes a queue AgentFlow does not route"
    from agentflow._redis.queues import TOOLS_QUEUE, agent_queue

    assert {agent_queue(a) for a in builtin_agents()} | {TOOLS_QUEUE} <= set(taken)


def test_compose_commands_and_healthchecks_are_real_commands(compose) -> None:
    services = compose["services"]
    celery_cmds = [s["command"] for s in services.values()
                   if s.get("command", [])[:1] == ["celery"]]  # fmt: skip
    assert len(celery_cmds) == len(workers(compose)) + 1  # the workers and Flower
    assert celery_problems(celery_cmds) == []
    for name, service in workers(compose).items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1:3] == ["agentflow", "health"], name
        assert "--liveness" in test or "--readiness" in test
        assert agentflow_problem(test[1:]) is None
        assert "entrypoint" not in service  # tini stays PID 1


def test_compose_grace_period_outlasts_the_longest_run(compose) -> None:
    settings = file_settings((COMPOSE / "agentflow.toml").read_text())
    for name, service in workers(compose).items():
        assert service["stop_signal"] == "SIGTERM"  # Celery's warm shutdown
        grace = parse_duration(service["stop_grace_period"])
        assert grace >= shutdown_time(settings), name


def test_compose_files_it_names_exist(compose) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name}: {source}"
        if "build" in service:
            context = COMPOSE / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file()


def test_compose_grafana_loads_the_dashboard(compose) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = COMPOSE / mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards/agentflow.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert list((COMPOSE / mounts[path]).glob("*.json")), f"nothing mounted at {path}"


def test_compose_redis_keeps_everything(compose) -> None:
    redis = compose["services"]["redis"]
    conf_path = redis["command"][1]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    conf = (COMPOSE / mounted[conf_path]).read_text()
    settings = dict(line.split(None, 1) for line in conf.splitlines()
                    if line.strip() and not line.startswith("#"))  # fmt: skip
    assert settings["appendonly"] == "yes"
    assert settings["maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])  # on a volume


def test_compose_flower_requires_credentials_and_stays_on_loopback(compose) -> None:
    flower = compose["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])
    grafana = compose["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${")
    assert all(p.startswith("127.0.0.1:") for p in grafana["ports"])


def test_compose_workers_send_metrics_to_the_exporter(compose) -> None:
    settings = file_settings((COMPOSE / "agentflow.toml").read_text())
    exporter = compose["services"][settings.monitoring.statsd_host]
    assert exporter["image"].startswith("prom/statsd-exporter:")
    assert f"--statsd.listen-udp=:{settings.monitoring.statsd_port}" in exporter["command"]
    mapped = [v.split(":")[0] for v in exporter["volumes"]]
    assert "./statsd-mapping.yml" in mapped
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]  # fmt: skip
    assert f"{settings.monitoring.statsd_host}:9102" in targets


# -- the statsd mapping and the dashboard ----------------------------------------------------
def test_every_stat_agentflow_sends_is_mapped() -> None:
    stats = emitted_stats()
    assert "agentflow.queue.backlog.x" in stats and "agentflow.dlq.size" in stats
    patterns = [r["match"] for r in mapping(COMPOSE / "statsd-mapping.yml")["mappings"]]
    unmapped = sorted(s for s in stats if not any(glob_matches(p, s) for p in patterns))
    assert unmapped == []


def test_the_mapping_uses_only_statsd_exporter_fields() -> None:
    data = mapping(COMPOSE / "statsd-mapping.yml")
    assert set(data) <= {"defaults", "mappings"}
    allowed = {"match", "name", "labels", "observer_type", "match_type", "action", "ttl",
               "histogram_options", "summary_options", "match_metric_type", "help"}  # fmt: skip
    for rule in data["mappings"]:
        assert set(rule) <= allowed, rule
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["name"]), rule
        captures = {int(n) for v in rule.get("labels", {}).values()
                    for n in re.findall(r"\$(\d)", str(v))}  # fmt: skip
        assert captures <= set(range(1, rule["match"].count("*") + 1)), rule


def test_the_dashboard_reads_only_metrics_the_mapping_produces() -> None:
    dashboard = json.loads((COMPOSE / "grafana/dashboards/agentflow.json").read_text())
    produced = produced_metrics(COMPOSE / "statsd-mapping.yml")
    datasources = yaml.safe_load(
        (COMPOSE / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uids = {d["uid"] for d in datasources["datasources"]}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    named = {m for e in exprs for m in PROMQL_METRIC.findall(e)}
    assert named and named <= set(produced), sorted(named - set(produced))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
        for expr in (t["expr"] for t in panel["targets"]):
            for by in re.findall(r"by \(([^)]*)\)", expr):
                labels = {x.strip() for x in by.split(",")}
                metrics = PROMQL_METRIC.findall(expr)
                assert any(labels <= produced[m] for m in metrics), (expr, labels)
    wanted = ["agentflow_queue_backlog", "agentflow_queue_depth", "agentflow_events_in_flight",
              "agentflow_events_succeeded_total", "agentflow_event_latency_seconds_bucket",
              "agentflow_dlq_size", "agentflow_llm_errors_total", "agentflow_llm_tokens_total",
              "agentflow_llm_cost_microusd_total", "agentflow_llm_breaker_open"]  # fmt: skip
    assert set(wanted) <= named


def test_compose_and_k8s_share_their_config_files() -> None:
    for name in ("agentflow.toml", "statsd-mapping.yml", "redis.conf"):
        assert (COMPOSE / name).read_text() == (K8S / name).read_text(), name


# -- Kubernetes ------------------------------------------------------------------------------
def test_k8s_core_objects_pass_the_schema(rendered) -> None:
    import kubernetes_validate

    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "PodDisruptionBudget", "ConfigMap", "StatefulSet", "Service",
            "ScaledObject"} <= kinds  # fmt: skip
    for obj in rendered:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked field by field below
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_k8s_runs_a_deployment_per_agent_queue_and_the_tools_queue(rendered) -> None:
    from agentflow._redis.queues import TOOLS_QUEUE, agent_queue

    deps = worker_deployments(rendered)
    args = [d["spec"]["template"]["spec"]["containers"][0]["args"] for d in deps.values()]
    taken = [q for a in args for q in queues_of(a)]
    assert len(taken) == len(set(taken))
    assert not set(taken) - known_queues()
    assert {agent_queue(a) for a in builtin_agents()} | {TOOLS_QUEUE} <= set(taken)
    assert celery_problems(args) == []
    for dep in deps.values():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert "command" not in container  # args replace the CMD only: tini stays PID 1


def test_k8s_probes_call_agentflow_health(rendered) -> None:
    for name, dep in worker_deployments(rendered).items():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        for probe, mode in (("startupProbe", "--liveness"), ("livenessProbe", "--liveness"),
                            ("readinessProbe", "--readiness")):  # fmt: skip
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["agentflow", "health"] and mode in command, (name, probe)
            assert agentflow_problem(command) is None
            assert container[probe].get("timeoutSeconds", 1) >= 5  # a Python start-up


def test_k8s_grace_period_outlasts_the_longest_run(rendered, tmp_path) -> None:
    needed = shutdown_time(rendered_settings(rendered))
    for name, dep in worker_deployments(rendered).items():
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= needed, name


def test_k8s_workers_mount_the_config_and_send_metrics_to_the_exporter(rendered, tmp_path):
    settings = rendered_settings(rendered)
    services = of_kind(rendered, "Service")
    assert settings.monitoring.statsd_host in services
    ports = services[settings.monitoring.statsd_host]["spec"]["ports"]
    assert {"port": settings.monitoring.statsd_port, "protocol": "UDP"}.items() <= next(
        p for p in ports if p.get("protocol") == "UDP"
    ).items()
    for name, dep in worker_deployments(rendered).items():
        spec = dep["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
        config = Path(env["AGENTFLOW_CONFIG"])
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        holder = next(n for n, p in mounts.items() if p == str(config.parent))
        assert volumes[holder]["configMap"]["name"].startswith("agentflow-config"), name


def test_k8s_pdb_covers_every_worker(rendered) -> None:
    pdbs = of_kind(rendered, "PodDisruptionBudget").values()
    for name, dep in worker_deployments(rendered).items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs), (
            name
        )


SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback",
                      "advanced", "triggers"}  # fmt: skip
PROMETHEUS_METADATA = {"serverAddress", "query", "threshold", "activationThreshold", "namespace",
                       "customHeaders", "ignoreNullValues", "unsafeSsl", "queryParameters",
                       "authModes"}  # fmt: skip
"""KEDA's documented ScaledObject spec fields and prometheus trigger metadata (keda.sh)."""


def test_k8s_keda_scales_each_queue_on_its_whole_backlog(rendered) -> None:
    scaled = of_kind(rendered, "ScaledObject")
    deps = worker_deployments(rendered)
    services = of_kind(rendered, "Service")
    produced = produced_metrics(K8S / "statsd-mapping.yml")
    slots = rendered_settings(rendered).runner.worker_pool_size
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == set(deps)
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
        assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert set(spec.get("fallback", {})) <= {"failureThreshold", "replicas", "behavior"}
        hpa = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
        assert set(hpa) <= {"name", "behavior"}
        container = deps[spec["scaleTargetRef"]["name"]]["spec"]["template"]["spec"]
        queues = queues_of(container["containers"][0]["args"])
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus"
            assert trigger.get("metricType", "AverageValue") in ("AverageValue", "Value")
            meta = trigger["metadata"]
            assert set(meta) <= PROMETHEUS_METADATA and {
                "serverAddress",
                "query",
                "threshold",
            } <= set(meta)
            assert all(isinstance(v, str) for v in meta.values())  # KEDA's metadata is strings
            assert float(meta["threshold"]) == slots  # a pod's share: its -c events
            host = re.match(r"https?://([^:/]+)", meta["serverAddress"])
            assert host and host.group(1) in services, meta["serverAddress"]
            metrics = PROMQL_METRIC.findall(meta["query"])
            assert metrics and set(metrics) <= set(produced)
            # the backlog (queued + held + running), never the list length alone
            assert set(metrics) <= {"agentflow_queue_backlog", "agentflow_tools_backlog"}
            agent = re.search(r'agent="([^"]+)"', meta["query"])
            if agent:
                from agentflow._redis.queues import agent_queue

                assert agent_queue(agent.group(1)) in queues, (name, queues)
            else:
                assert "agentflow.tools" in queues


def test_k8s_redis_keeps_everything(rendered) -> None:
    maps = [o for n, o in of_kind(rendered, "ConfigMap").items() if n.startswith("redis-config")]
    conf = maps[0]["data"]["redis.conf"]
    assert re.search(r"^appendonly yes$", conf, re.M)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.M)
    redis = of_kind(rendered, "StatefulSet")["redis"]
    assert redis["spec"]["volumeClaimTemplates"]


def _walk(obj: Any) -> Iterator[Any]:
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def test_k8s_pods_run_restricted(rendered) -> None:
    for obj in rendered:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
    assert not any(isinstance(x, dict) and "hostPath" in x for x in _walk(rendered))


def test_prometheus_accepts_the_configs_and_every_query(tmp_path) -> None:
    """promtool (Debian's `prometheus` package) parses the scrape configs and every PromQL
    query of the dashboard and the ScaledObjects, as recording rules."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus): PromQL unchecked")
    for config in (COMPOSE / "prometheus.yml", K8S / "prometheus.yml"):
        done = subprocess.run([promtool, "check", "config", str(config)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    dashboard = json.loads((COMPOSE / "grafana/dashboards/agentflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for doc in yaml.safe_load_all((K8S / "keda.yaml").read_text()):
        if doc:
            exprs += [t["metadata"]["query"] for t in doc["spec"]["triggers"]]
    rules = [{"record": f"agentflow:check_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

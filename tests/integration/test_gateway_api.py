"""`agentflow gateway` over real HTTP: emit, status, wait, cancel, agents, DLQ, auth, limits."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from agentflow.dlq import DeadLetterQueue
from tests.conftest import ROOT, TEST_PREFIX, cli_env
from tests.integration.gateway_server import ALL_KEY, ECHO_KEY, SLOW_KEY, GatewayProcess, auth

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


def _until_finished(gw: GatewayProcess, event_id: str, key: str = ALL_KEY) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = httpx.get(f"{gw.url}/v1/events/{event_id}", headers=auth(key)).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"event {event_id} did not finish: {body}")


def test_an_event_is_accepted_then_its_result_is_read(gateway, start_worker) -> None:
    start_worker()
    r = httpx.post(f"{gateway.url}/v1/events", headers=auth(ALL_KEY),
                   json={"type": "greet", "agent": "echo", "data": {"n": 1}})  # fmt: skip
    assert r.status_code == 202, r.text
    event_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/events/{event_id}"
    body = _until_finished(gateway, event_id)
    assert body["status"] == "succeeded"
    assert body["result"]["output"] == {"echo": {"n": 1}, "type": "greet"}


def test_wait_answers_with_the_result_or_504(gateway, start_worker) -> None:
    start_worker()
    r = httpx.post(f"{gateway.url}/v1/events?wait=30s", headers=auth(ALL_KEY),
                   json={"type": "t", "agent": "echo", "data": {"x": "y"}}, timeout=40)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["result"]["output"]["echo"] == {"x": "y"}

    r = httpx.post(f"{gateway.url}/v1/events?wait=200ms", headers=auth(ALL_KEY),
                   json={"type": "t", "agent": "sleepy", "data": {"seconds": 3}})  # fmt: skip
    assert r.status_code == 504
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["location"] == f"/v1/events/{r.json()['id']}"
    assert _until_finished(gateway, r.json()["id"])["status"] == "succeeded"


def test_a_failing_agent_reads_as_failed_with_its_reason(gateway, start_worker) -> None:
    start_worker()
    r = httpx.post(f"{gateway.url}/v1/events?wait=30s", headers=auth(ALL_KEY),
                   json={"type": "t", "agent": "boom", "data": {"why": "bad input"}},
                   timeout=40)  # fmt: skip
    assert r.status_code == 200
    assert r.json()["status"] == "failed"
    assert "bad input" in r.json()["error"]


def test_delete_cancels_a_running_event(gateway, start_worker, redis_client) -> None:
    start_worker()
    r = httpx.post(f"{gateway.url}/v1/events", headers=auth(ALL_KEY),
                   json={"type": "t", "agent": "sleepy", "data": {"seconds": 20}})  # fmt: skip
    event_id = r.json()["id"]
    started = f"{TEST_PREFIX}:test:started:{event_id}"
    deadline = time.monotonic() + 20
    while not redis_client.exists(started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{gateway.url}/v1/events/{event_id}",
                     headers=auth(ALL_KEY)).json()["status"] == "started"  # fmt: skip
    r = httpx.delete(f"{gateway.url}/v1/events/{event_id}", headers=auth(ALL_KEY))
    assert r.status_code == 202, r.text
    assert _until_finished(gateway, event_id)["status"] == "cancelled"
    again = httpx.delete(f"{gateway.url}/v1/events/{event_id}", headers=auth(ALL_KEY))
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM


def test_keys_are_required_and_scoped(gateway) -> None:
    event = {"type": "t", "agent": "sleepy"}
    missing = httpx.post(f"{gateway.url}/v1/events", json=event)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(f"{gateway.url}/v1/events", json=event, headers=auth("not-a-key"))
    assert wrong.status_code == 401
    assert httpx.get(f"{gateway.url}/v1/agents", headers={"X-API-Key": "nope"}).status_code == 401
    scoped = httpx.post(f"{gateway.url}/v1/events", json=event, headers=auth(ECHO_KEY))
    assert scoped.status_code == 403
    assert scoped.json()["agent"] == "sleepy"
    agents = httpx.get(f"{gateway.url}/v1/agents", headers={"X-API-Key": ECHO_KEY}).json()
    assert [a["name"] for a in agents["agents"]] == ["echo"]
    everything = httpx.get(f"{gateway.url}/v1/agents", headers=auth(ALL_KEY)).json()
    assert {"echo", "narrator", "sleepy"} <= {a["name"] for a in everything["agents"]}
    # An event of an agent outside the key's scope is not readable with it either.
    accepted = httpx.post(f"{gateway.url}/v1/events", json=event, headers=auth(ALL_KEY))
    event_id = accepted.json()["id"]
    assert httpx.get(f"{gateway.url}/v1/events/{event_id}",
                     headers=auth(ECHO_KEY)).status_code == 403  # fmt: skip
    assert httpx.delete(f"{gateway.url}/v1/events/{event_id}",
                        headers=auth(ECHO_KEY)).status_code == 403  # fmt: skip
    unknown = httpx.get(f"{gateway.url}/v1/events/{uuid.uuid4().hex}", headers=auth(ALL_KEY))
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == PROBLEM


def test_validation_errors_name_the_field_and_nothing_is_queued(gateway, redis_client) -> None:
    def post(body: object, **kw: object) -> httpx.Response:
        return httpx.post(f"{gateway.url}/v1/events", headers=auth(ALL_KEY), json=body, **kw)

    for body, field in [
        ({"agent": "echo"}, "type"),
        ({"type": "t", "agent": "echo", "bogus": 1}, "bogus"),
        ({"type": "t", "agent": "echo", "data": [1, 2]}, "data"),
        ({"type": "t", "agent": "echo bad"}, "agent"),
        ({"type": "t", "agent": "nobody-serves-this"}, "agent"),
        ([1, 2, 3], "(body)"),
    ]:
        r = post(body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert field in [e["field"] for e in r.json()["errors"]], (body, r.json())
    nan = httpx.post(f"{gateway.url}/v1/events", headers={**auth(ALL_KEY),
                     "Content-Type": "application/json"},
                     content=b'{"type": "t", "agent": "echo", "data": {"v": NaN}}')  # fmt: skip
    assert nan.status_code == 422
    assert nan.json()["errors"][0]["field"] == "data"
    garbage = httpx.post(f"{gateway.url}/v1/events", headers={**auth(ALL_KEY),
                         "Content-Type": "application/json"}, content=b"{not json")  # fmt: skip
    assert garbage.status_code == 400
    big = post({"type": "t", "agent": "echo", "data": {"blob": "x" * 5000}})
    assert big.status_code == 413
    assert big.headers["content-type"] == PROBLEM
    assert post({"type": "t", "agent": "echo"}, params={"wait": "soon"}).status_code == 422
    assert not [k for k in redis_client.keys("*") if b"agent.echo" in k]  # nothing queued


def test_an_event_id_cannot_be_reused(gateway, start_worker) -> None:
    start_worker()
    event = {"id": "fixed-id-1", "type": "t", "agent": "echo"}
    assert httpx.post(f"{gateway.url}/v1/events", json=event,
                      headers=auth(ALL_KEY)).status_code == 202  # fmt: skip
    again = httpx.post(f"{gateway.url}/v1/events", json=event, headers=auth(ALL_KEY))
    assert again.status_code == 409


def test_the_rate_limit_answers_429_with_retry_after(gateway) -> None:
    answers = [httpx.get(f"{gateway.url}/v1/agents", headers=auth(SLOW_KEY)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1
    assert answers[2].headers["content-type"] == PROBLEM
    # Other keys have buckets of their own.
    assert httpx.get(f"{gateway.url}/v1/agents", headers=auth(ALL_KEY)).status_code == 200


def test_dead_letters_are_listed_in_scope_and_replayed(gateway, start_worker, redis_client):
    start_worker()
    dlq = DeadLetterQueue(redis_client, TEST_PREFIX)
    entry = dlq.push("test: worker refused", event={"id": uuid.uuid4().hex, "type": "t",
                                                    "agent": "echo", "data": {"again": True}})  # fmt: skip
    raw = dlq.push("test: unparseable", raw=b"\x00garbage")
    listed = httpx.get(f"{gateway.url}/v1/dlq", headers=auth(ALL_KEY)).json()
    assert {e["id"] for e in listed["entries"]} == {entry.id, raw.id}
    scoped = httpx.get(f"{gateway.url}/v1/dlq", headers=auth(ECHO_KEY)).json()
    assert [e["id"] for e in scoped["entries"]] == [entry.id]  # raw messages: `*` keys only
    r = httpx.post(f"{gateway.url}/v1/dlq/{entry.id}/replay", headers=auth(ECHO_KEY))
    assert r.status_code == 202, r.text
    body = _until_finished(gateway, r.json()["id"], ECHO_KEY)
    assert body["result"]["output"]["echo"] == {"again": True}
    assert httpx.post(f"{gateway.url}/v1/dlq/{raw.id}/replay",
                      headers=auth(ALL_KEY)).status_code == 409  # fmt: skip
    assert httpx.post(f"{gateway.url}/v1/dlq/nope/replay",
                      headers=auth(ALL_KEY)).status_code == 404  # fmt: skip
    assert [e.id for e in dlq.list()] == [raw.id]


def test_health_metrics_and_a_valid_openapi_document(gateway, start_worker) -> None:
    from openapi_spec_validator import validate

    start_worker()
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    httpx.post(f"{gateway.url}/v1/events?wait=30s", headers=auth(ALL_KEY),
               json={"type": "t", "agent": "echo"}, timeout=40)  # fmt: skip
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    text = httpx.get(f"{gateway.url}/metrics", headers=auth(ALL_KEY)).text
    assert (
        'agentflow_gateway_requests_total{method="POST",route="/v1/events",status="200"} 1.0'
        in text
    )
    assert 'agentflow_gateway_events_total{agent="echo"} 1.0' in text
    doc = httpx.get(f"{gateway.url}/openapi.json").json()
    validate(doc)
    assert {"/v1/events", "/v1/events/{event_id}", "/v1/events/{event_id}/stream",
            "/v1/agents", "/v1/dlq", "/v1/dlq/{entry_id}/replay"} <= set(doc["paths"])  # fmt: skip
    assert "type" in doc["components"]["schemas"]["Event"]["required"]


def test_the_gateway_refuses_to_start_without_keys(tmp_path) -> None:
    env = cli_env(AGENTFLOW_GATEWAY__KEYS="[]")
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", "gateway", "--port", "0"],
                          env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "no API keys" in done.stderr and "hash-key" in done.stderr
    outside = subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "gateway", "--insecure-no-auth-dev-only",
         "--host", "0.0.0.0", "--port", "0"],
        env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert outside.returncode != 0
    assert "loopback" in outside.stderr


def test_the_insecure_dev_flag_serves_without_keys(redis_client, tmp_path) -> None:
    proc = GatewayProcess(tmp_path / "gw.log", env={"AGENTFLOW_GATEWAY__KEYS": "[]"},
                          args=["--insecure-no-auth-dev-only"])  # fmt: skip
    try:
        proc.wait_ready()
        assert httpx.get(f"{proc.url}/v1/agents").status_code == 200
        assert "NO authentication" in proc.log()
    finally:
        proc.stop()


def test_hash_key_prints_a_config_entry() -> None:
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", "gateway", "hash-key",
                           "--agents", "echo,chat", "--rate", "5"], input="s3cret\n",
                          env=cli_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    digest = hashlib.sha256(b"s3cret").hexdigest()
    assert done.stdout.strip() == (f'keys = [{{hash = "sha256:{digest}", '
                                   f'agents = ["echo", "chat"], rate = 5}}]')  # fmt: skip

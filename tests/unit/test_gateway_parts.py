"""The gateway's pure parts: keys and buckets, problem fields, SSE messages, OpenAPI."""

from __future__ import annotations

import json

import pytest

from agentflow.config import GatewayKeyConfig
from agentflow.gateway.auth import KeyRing, hash_key, new_key, presented_key
from agentflow.gateway.hub import parse_id
from agentflow.gateway.problems import field_errors
from agentflow.gateway.sse import item_message


def test_keys_are_found_by_hash_and_scoped() -> None:
    key = new_key()
    ring = KeyRing([GatewayKeyConfig(hash=hash_key(key), agents=["echo"], rate=5)])
    found = ring.find(key)
    assert found is not None and found.allows("echo") and not found.allows("chat")
    assert ring.find("other") is None and ring.find(None) is None
    assert KeyRing([], open_access=True).find(None) is not None


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    ring = KeyRing([GatewayKeyConfig(hash=hash_key("k"), rate=0.5, burst=2)])
    key = ring.find("k")
    assert key is not None
    assert [key.take(), key.take()] == [0.0, 0.0]
    assert 0 < key.take() <= 2.0


def test_a_bad_hash_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError):
        GatewayKeyConfig(hash="plaintext-key")


def test_the_key_comes_from_bearer_or_x_api_key() -> None:
    assert presented_key("Bearer abc", None) == "abc"
    assert presented_key("Basic abc", "xyz") == "xyz"
    assert presented_key(None, None) is None


def test_field_errors_name_the_field_and_point_into_the_body() -> None:
    errors = field_errors([{"loc": ("data", "a/b"), "msg": "bad"}])
    assert errors == [{"field": "data.a/b", "pointer": "#/data/a~1b", "message": "bad"}]


def test_stream_items_become_typed_sse_messages() -> None:
    def parse(raw: bytes) -> dict[str, str]:
        return dict(line.split(": ", 1) for line in raw.decode().strip().split("\n"))

    assert parse(item_message(b"1-0", b'"hi "')) == {"id": "1-0", "event": "token",
                                                      "data": '"hi "'}  # fmt: skip
    call = parse(item_message(b"2-0", json.dumps({"type": "tool_call", "id": "c"}).encode()))
    assert call["event"] == "tool_call"
    assert parse(item_message(b"3-0", b"[1]"))["event"] == "item"
    assert parse(item_message(b"4-0", b'"a\\nb"'))["data"] == '"a\\nb"'  # one data line


def test_stream_ids_compare_as_numbers() -> None:
    assert parse_id(b"10-0") > parse_id("9-5")
    with pytest.raises(ValueError):
        parse_id("end")


def test_the_openapi_document_is_valid() -> None:
    from openapi_spec_validator import validate

    from agentflow.gateway.openapi import openapi_document

    validate(openapi_document("0.0.0"))

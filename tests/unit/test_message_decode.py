"""Task bodies read on the direct path decode exactly as kombu decodes them."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.message import Message
from kombu.utils.json import dumps

from agentflow.broker import messages


def message(body: bytes, content_type: str = "application/json",
            accept: set[str] | None = None) -> Message:  # fmt: skip
    return Message(body=body, content_type=content_type, content_encoding="utf-8",
                   accept=accept)  # fmt: skip


def test_a_plain_json_body_decodes_as_kombu_decodes_it() -> None:
    body = dumps([[{"agent": "chat", "data": {"prompt": "héllo", "n": [1, 2.5, None]}}], {},
                  {"callbacks": None, "chord": None}]).encode()  # fmt: skip
    assert messages.decode(message(body)) == message(body).decode()


def test_tagged_values_are_revived_as_kombu_revives_them() -> None:
    value = {"when": datetime.datetime(2026, 11, 25, 17, 0, tzinfo=datetime.UTC),
             "price": decimal.Decimal("1.25"), "id": uuid.UUID(int=7)}  # fmt: skip
    body = dumps([[value], {}, {}]).encode()
    assert b'"__type__"' in body
    decoded = messages.decode(message(body))
    assert decoded == message(body).decode()
    assert decoded[0][0]["when"] == value["when"]


def test_a_content_type_the_consumer_refuses_is_still_refused() -> None:
    body = b"[[1], {}, {}]"
    with pytest.raises(ContentDisallowed):
        messages.decode(message(body, accept={"application/x-yaml"}))
    yaml = message(b"[1, 2]", content_type="application/x-yaml", accept={"application/json"})
    with pytest.raises(ContentDisallowed):
        messages.decode(yaml)

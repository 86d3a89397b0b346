"""Task bodies read on the asyncio pool decode exactly as kombu decodes them."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.message import Message
from kombu.utils.json import dumps

from agentflow._redis import messages


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


def test_plain_bodies_skip_kombus_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken: kombu's (slower) decode is not called for a plain body."""

    def refuse(self: Message) -> None:
        raise AssertionError("kombu's decoder was used")

    monkeypatch.setattr(Message, "decode", refuse)
    assert messages.decode(message(b'[["e"], {}, {"chord": null}]')) == [["e"], {}, {"chord": None}]


def test_an_application_json_decoder_of_the_apps_own_is_honoured() -> None:
    from kombu.serialization import register, register_json

    def as_decimals(text: str | bytes) -> object:
        import json

        return json.loads(text, parse_float=decimal.Decimal)

    register("json", dumps, as_decimals, content_type="application/json",
             content_encoding="utf-8")  # fmt: skip
    try:
        assert messages.decode(message(b"[[1.5], {}, {}]")) == [[decimal.Decimal("1.5")], {}, {}]
    finally:
        register_json()


def test_a_body_that_is_not_utf8_is_refused_as_kombu_refuses_it() -> None:
    body = '[["é"], {}, {}]'.encode("utf-16")
    with pytest.raises(Exception) as ours:
        messages.decode(message(body))
    with pytest.raises(Exception) as kombus:
        message(body).decode()
    assert type(ours.value) is type(kombus.value)

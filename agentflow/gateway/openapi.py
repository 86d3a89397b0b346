"""The OpenAPI 3.1 document at /openapi.json, its schemas generated from the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from agentflow.gateway.models import (
    AgentList,
    CancelAccepted,
    DeadLetterList,
    EventAccepted,
    EventStatus,
    Health,
    Problem,
)
from agentflow.models import Event

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _ref("Problem")}}}  # fmt: skip


_AUTH_ERRORS = {
    "401": _problem("Missing or unknown API key"),
    "403": _problem("The key may not use this agent"),
    "429": _problem("The key's rate limit is spent (see Retry-After)"),
}
_EVENT_ID = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document(version: str) -> dict[str, Any]:
    """The whole document."""
    _, schemas = models_json_schema(
        [(Event, "validation"), (EventAccepted, "serialization"), (EventStatus, "serialization"),
         (CancelAccepted, "serialization"), (AgentList, "serialization"),
         (DeadLetterList, "serialization"), (Health, "serialization"),
         (Problem, "serialization")],
        ref_template=_REF,
    )  # fmt: skip
    paths: dict[str, Any] = {
        "/v1/events": {
            "post": {
                "summary": "Emit an event",
                "description": "Validated as `Client.emit` validates it. With `?wait=30s` the "
                "answer is the result (200) or 504 when it takes longer.",
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "examples": ["30s"]},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Event")}},
                },
                "responses": {
                    "202": _json("EventAccepted", "Queued; Location names the event"),
                    "200": _json("EventStatus", "Finished (with ?wait=)"),
                    "400": _problem("The body is not JSON"),
                    "409": _problem("The event id is taken"),
                    "413": _problem("The body is too large"),
                    "415": _problem("The body is not JSON"),
                    "422": _problem("Validation failed; `errors` name the fields"),
                    "503": _problem("Backpressure: AgentFlow is at capacity"),
                    "504": _problem("No result within ?wait="),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/v1/events/{event_id}": {
            "parameters": [_EVENT_ID],
            "get": {
                "summary": "An event's status and result",
                "responses": {
                    "200": _json("EventStatus", "Status, result once finished"),
                    "404": _problem("Unknown event"),
                    **_AUTH_ERRORS,
                },
            },
            "delete": {
                "summary": "Cancel an event",
                "responses": {
                    "202": _json("CancelAccepted", "Cancel broadcast"),
                    "404": _problem("Unknown event"),
                    "409": _problem("Already finished"),
                    **_AUTH_ERRORS,
                },
            },
        },
        "/v1/events/{event_id}/stream": {
            "get": {
                "summary": "The event's progress as Server-Sent Events",
                "description": "Messages `token`, `tool_call`, `tool_result`, `item`, then one of "
                "`result`, `failed`, `cancelled` (id `end`). Each `id:` is a Redis "
                "stream entry id: reconnect with `Last-Event-ID` to resume.",
                "parameters": [
                    _EVENT_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "An SSE stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "204": {"description": "Resumed after the final message"},
                    "404": _problem("Unknown event"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/v1/agents": {
            "get": {
                "summary": "Agents this key may use",
                "responses": {"200": _json("AgentList", "Agents"), **_AUTH_ERRORS},
            }
        },
        "/v1/dlq": {
            "get": {
                "summary": "Dead-lettered events",
                "parameters": [
                    {
                        "name": n,
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                    for n in ("limit", "offset")
                ],
                "responses": {"200": _json("DeadLetterList", "Entries"), **_AUTH_ERRORS},
            }
        },
        "/v1/dlq/{entry_id}/replay": {
            "post": {
                "summary": "Re-emit a dead-lettered event",
                "parameters": [
                    {
                        "name": "entry_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "202": _json("EventAccepted", "Emitted again"),
                    "404": _problem("Unknown entry"),
                    "409": _problem("A raw message: not replayable"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and Redis",
                "security": [],
                "responses": {
                    "200": _json("Health", "Up"),
                    "503": _json("Health", "Redis does not answer"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_AUTH_ERRORS,
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AgentFlow gateway",
            "version": version,
            "description": "Events in, results and Server-Sent Events out.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }

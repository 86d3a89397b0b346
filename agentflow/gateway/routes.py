"""The HTTP endpoints: events (emit, status, stream, cancel), agents, the DLQ, health, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agentflow.durations import parse_duration
from agentflow.errors import (
    BackpressureError,
    EventCancelled,
    EventFailed,
    EventRejected,
    EventTimeout,
    InvalidEvent,
    UnknownAgent,
)
from agentflow.gateway import problems
from agentflow.gateway.auth import ApiKey, presented_key
from agentflow.gateway.hub import parse_id
from agentflow.gateway.models import (
    CELERY_STATUS,
    AgentInfo,
    AgentList,
    CancelAccepted,
    DeadLetterInfo,
    DeadLetterList,
    EventAccepted,
    EventStatus,
    Health,
)
from agentflow.gateway.problems import HTTPProblem
from agentflow.gateway.sse import END_ID, event_stream
from agentflow.gateway.state import Gateway

Handler = Callable[[Request, Gateway, ApiKey], Awaitable[Response]]
JSON = "application/json"


def json_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None,
                  ) -> Response:  # fmt: skip
    """A pydantic model as a JSON response."""
    return Response(model.model_dump_json(exclude_none=True), status_code=status,
                    headers=headers, media_type=JSON)  # fmt: skip


def endpoint(route: str, handler: Handler, *, auth: bool = True) -> Callable[[Request], Any]:
    """Wrap a handler: authenticate and rate-limit the key, answer problems, count metrics."""

    async def wrapped(request: Request) -> Response:
        gateway: Gateway = request.app.state.gateway
        started = time.perf_counter()
        try:
            key = authenticate(request, gateway) if auth else gateway.keys.find(None)
            response = await handler(request, gateway, key)  # type: ignore[arg-type]
        except HTTPProblem as problem:
            response = problem.response(request.url.path)
        gateway.metrics.observe(route, request.method, response.status_code,
                                time.perf_counter() - started)  # fmt: skip
        return response

    return wrapped


def header(request: Request, name: bytes) -> str | None:
    """One request header by its lower-case name; the headers are read into a dict once per
    request (Starlette's ``request.headers`` scans the raw list on every lookup, four
    lookups per POST)."""
    scope = request.scope
    found: dict[bytes, bytes] | None = scope.get("agentflow.headers")
    if found is None:
        found = scope["agentflow.headers"] = dict(scope["headers"])
    value = found.get(name)
    return None if value is None else value.decode("latin-1")


def authenticate(request: Request, gateway: Gateway) -> ApiKey:
    """The request's key (401 when missing or unknown), with one token spent (429)."""
    key = gateway.keys.find(presented_key(header(request, b"authorization"),
                                          header(request, b"x-api-key")))  # fmt: skip
    if key is None:
        raise problems.unauthorized("send an API key as 'Authorization: Bearer <key>'")
    wait = key.take()
    if wait > 0:
        raise HTTPProblem(429, "rate-limited", "Too many requests",
                          f"key {key.name!r} is limited to {key.rate:g} requests/s",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})  # fmt: skip
    return key


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON: 413 past `limit` bytes, 415 unless JSON, 400 if malformed."""
    length = header(request, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    ctype = header(request, b"content-type") or ""
    if ctype.split(";")[0].strip().lower() not in ("application/json", ""):
        raise HTTPProblem(415, "unsupported-media-type", "Send JSON",
                          f"Content-Type {ctype!r}; use application/json")  # fmt: skip
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise HTTPProblem(400, "malformed-json", "The body is not JSON", str(exc)) from None


def _too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(413, "too-large", "The body is too large",
                       f"at most {limit} bytes ([gateway] max_body_bytes)")  # fmt: skip


# -- events ----------------------------------------------------------------------------------
async def post_event(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """Validate and emit an event: 202 with its id, or (``?wait=``) 200 with its result."""
    wait = _wait(request, gateway)
    body = await read_json(request, gateway.settings.gateway.max_body_bytes)
    if not isinstance(body, dict):
        raise problems.invalid("the body must be a JSON object (an event)",
                               [{"field": "(body)", "pointer": "#/",
                                 "message": "expected an object"}])  # fmt: skip
    client = gateway.client
    try:
        event, agent = client._resolve(body)
    except InvalidEvent as exc:
        errors = problems.field_errors(exc.errors) or [
            {"field": "agent", "pointer": "#/agent", "message": str(exc)}]  # fmt: skip
        raise problems.invalid(str(exc).split("\n")[0], errors) from None
    if not key.allows(agent):
        raise problems.forbidden(agent)
    if "id" not in body:  # a fresh uuid: recorded in the round trip that admits the event
        gateway.record_with_emit(event.id, agent, event.dedup_key)
    elif not await gateway.record(event.id, agent, event.dedup_key):
        raise HTTPProblem(409, "conflict", "Event id already used",
                          f"an event with id {event.id!r} was already sent")  # fmt: skip
    try:
        handle = await client.emit(event)
    except BaseException as exc:
        await gateway.forget(event.id)
        raise _emit_problem(exc) from None
    gateway.metrics.emitted.labels(agent).inc()
    location = f"/v1/events/{event.id}"
    if wait is None:
        accepted = EventAccepted(id=event.id, agent=agent,
                                 links={"self": location, "stream": location + "/stream"})  # fmt: skip
        return json_response(accepted, 202, {"Location": location})
    try:
        result = await handle.result(timeout=wait)
    except EventTimeout:
        raise HTTPProblem(504, "timeout", "No result in time",
                          f"event {event.id} has no result after {wait:g}s; it goes on: poll "
                          f"{location}", headers={"Location": location},
                          id=event.id) from None  # fmt: skip
    except EventFailed as exc:
        return json_response(_failed(event.id, agent, exc), 200, {"Location": location})
    status = EventStatus(id=event.id, agent=agent, status="succeeded", result=result)
    return json_response(status, 200, {"Location": location})


def _wait(request: Request, gateway: Gateway) -> float | None:
    if not request.scope.get("query_string"):  # most POSTs: no query to parse
        return None
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise problems.invalid(f"wait: {exc}", [{"field": "wait", "pointer": "",
                                                 "message": str(exc)}]) from None  # fmt: skip
    return min(seconds, gateway.settings.gateway.max_wait)


def _emit_problem(exc: BaseException) -> BaseException:
    if isinstance(exc, UnknownAgent):
        return problems.invalid(str(exc), [{"field": "agent", "pointer": "#/agent",
                                            "message": str(exc)}])  # fmt: skip
    if isinstance(exc, BackpressureError):
        return HTTPProblem(503, "backpressure", "AgentFlow is at capacity", str(exc),
                           headers={"Retry-After": "1"})  # fmt: skip
    if isinstance(exc, InvalidEvent):
        return problems.invalid(str(exc), [{"field": "(body)", "pointer": "#/",
                                            "message": str(exc)}])  # fmt: skip
    return exc


def _failed(event_id: str, agent: str, exc: EventFailed) -> EventStatus:
    if isinstance(exc, EventCancelled):
        return EventStatus(id=event_id, agent=agent, status="cancelled")
    return EventStatus(id=event_id, agent=agent, status="failed", error=exc.reason)


async def _owned(request: Request, gateway: Gateway, key: ApiKey) -> tuple[str, dict[str, str]]:
    """The path's event id and its record: 404 unknown, 403 out of the key's scope."""
    event_id = request.path_params["event_id"]
    record = await gateway.recorded(event_id)
    if record is None:
        raise problems.not_found(f"no event {event_id!r} was sent through this gateway "
                                 "(or its record expired)")  # fmt: skip
    if not key.allows(record["agent"]):
        raise problems.forbidden(record["agent"])
    return event_id, record


async def get_event(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """An event's status, and its result once it has one."""
    event_id, record = await _owned(request, gateway, key)
    client = gateway.client
    agent = record["agent"]
    raw = await client.results_redis.get(client._meta_prefix + event_id)
    if raw is None:
        started = await client.redis.exists(client.keys.claim(record.get("dedup", event_id)))
        return json_response(EventStatus(id=event_id, agent=agent,
                                         status="started" if started else "pending"))  # fmt: skip
    meta = json.loads(raw)
    status = CELERY_STATUS.get(str(meta.get("status")), "pending")
    if status not in ("succeeded", "failed", "cancelled"):
        return json_response(EventStatus(id=event_id, agent=agent, status=status))
    try:
        result = client._outcome(event_id, meta)
    except EventFailed as exc:
        return json_response(_failed(event_id, agent, exc))
    return json_response(EventStatus(id=event_id, agent=agent, status="succeeded",
                                     result=result))  # fmt: skip


async def cancel_event(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """Cancel an event: 202, or 409 when it had finished already."""
    event_id, _record = await _owned(request, gateway, key)
    if not await gateway.client.cancel(event_id):
        state = await gateway.client.state(event_id)
        raise HTTPProblem(409, "finished", "The event has finished",
                          f"event {event_id} already finished "
                          f"({CELERY_STATUS.get(state, state.lower())})")  # fmt: skip
    return json_response(CancelAccepted(id=event_id), 202)


async def stream_event(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """Server-Sent Events: what the event streams, then its result (see sse.py)."""
    event_id, _record = await _owned(request, gateway, key)
    last = request.headers.get("last-event-id", "").strip()
    if last == END_ID:
        return Response(status_code=204)
    after = last or "0-0"
    try:
        parse_id(after)
    except ValueError:
        raise problems.invalid("Last-Event-ID is not a stream entry id",
                               [{"field": "Last-Event-ID", "pointer": "",
                                 "message": "expected <ms>-<seq> or 'end'"}]) from None  # fmt: skip
    conf = gateway.settings.gateway
    body = event_stream(gateway.client, gateway.hub, event_id, after.encode(),
                        idle_timeout=conf.stream_timeout,
                        on_open=gateway.metrics.stream_opened)  # fmt: skip
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})  # fmt: skip


# -- agents and the DLQ ------------------------------------------------------------------------
async def list_agents(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """Agents registered here or announced by workers, that this key may use."""
    from agentflow.agents.registry import _agents

    client = gateway.client
    announced: dict[bytes, bytes] = await client.redis.hgetall(client.keys.agents)  # type: ignore[misc]
    seen = {k.decode(): float(v) for k, v in announced.items()}
    names = sorted(set(_agents) | set(seen))
    agents = [AgentInfo(name=n, description=_description(_agents.get(n)), served=n in seen,
                        last_seen=seen.get(n))
              for n in names if key.allows(n)]  # fmt: skip
    return json_response(AgentList(agents=agents))


def _description(agent: Any) -> str:
    if agent is None:
        return ""
    text = agent.description or (agent.__doc__ or "")
    return str(text).strip().split("\n")[0]


async def list_dlq(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """Dead-lettered events of the agents this key may use, oldest first."""
    try:
        limit = max(1, min(int(request.query_params.get("limit", "100")), 1000))
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        raise problems.invalid("limit and offset are integers",
                               [{"field": "limit", "pointer": "",
                                 "message": "expected an integer"}]) from None  # fmt: skip
    dlq = _dlq(gateway)
    entries, total = await asyncio.to_thread(lambda: (dlq.list(limit, offset), len(dlq)))
    visible = [DeadLetterInfo(**{k: v for k, v in vars(e).items() if k != "content_type"})
               for e in entries if key.allows(_entry_agent(e.event))]  # fmt: skip
    return json_response(DeadLetterList(entries=visible, total=total))


async def replay_dlq(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """Re-emit a dead-lettered event; 202 with the event's id."""
    entry_id = request.path_params["entry_id"]
    dlq = _dlq(gateway)
    entry = await asyncio.to_thread(dlq.get, entry_id)
    if entry is None:
        raise problems.not_found(f"no dead letter {entry_id!r}")
    agent = _entry_agent(entry.event)
    if not key.allows(agent):
        raise problems.forbidden(agent)
    client = gateway.sync_client()
    try:
        handle = await asyncio.to_thread(dlq.replay, entry_id, client.emit)
    except (EventRejected, InvalidEvent, UnknownAgent) as exc:
        raise HTTPProblem(409, "not-replayable", "The entry cannot be replayed",
                          str(exc)) from None  # fmt: skip
    except BackpressureError as exc:
        raise _emit_problem(exc) from None
    await gateway.record(handle.id, agent, handle.event.dedup_key, new=False)
    location = f"/v1/events/{handle.id}"
    accepted = EventAccepted(id=handle.id, agent=agent,
                             links={"self": location, "stream": location + "/stream"})  # fmt: skip
    return json_response(accepted, 202, {"Location": location})


def _dlq(gateway: Gateway) -> Any:
    from agentflow.dlq import DeadLetterQueue

    client = gateway.sync_client()
    return DeadLetterQueue(client.redis, gateway.settings.broker.key_prefix)


def _entry_agent(event: dict[str, Any] | None) -> str:
    """The agent of a dead-lettered event ('' for a raw message: only ``*`` keys see it)."""
    if not event:
        return ""
    agent = event.get("agent")
    return str(agent) if agent else ""


# -- operations --------------------------------------------------------------------------------
async def healthz(request: Request, gateway: Gateway, key: ApiKey | None) -> Response:
    """200 while Redis answers, else 503 (no key needed)."""
    try:
        async with asyncio.timeout(2):
            await cast(Any, gateway.client.redis.ping())
    except Exception as exc:
        return json_response(Health(status="unavailable", detail=f"Redis: {exc}"), 503)
    return json_response(Health(status="ok"))


async def metrics(request: Request, gateway: Gateway, key: ApiKey) -> Response:
    """Prometheus text format."""
    return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)


def routes() -> list[Route]:
    """Every API route (the page and /openapi.json are added by the app)."""
    e = endpoint
    return [
        Route("/v1/events", e("/v1/events", post_event), methods=["POST"]),
        Route("/v1/events/{event_id}", e("/v1/events/{id}", get_event), methods=["GET"]),
        Route("/v1/events/{event_id}", e("/v1/events/{id}", cancel_event), methods=["DELETE"]),
        Route(
            "/v1/events/{event_id}/stream",
            e("/v1/events/{id}/stream", stream_event),
            methods=["GET"],
        ),
        Route("/v1/agents", e("/v1/agents", list_agents), methods=["GET"]),
        Route("/v1/dlq", e("/v1/dlq", list_dlq), methods=["GET"]),
        Route("/v1/dlq/{entry_id}/replay", e("/v1/dlq/{id}/replay", replay_dlq), methods=["POST"]),
        Route("/healthz", e("/healthz", healthz, auth=False), methods=["GET"]),
        Route("/metrics", e("/metrics", metrics), methods=["GET"]),
    ]

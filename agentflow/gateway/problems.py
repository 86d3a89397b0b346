"""RFC 9457 problem documents (``application/problem+json``): every error the gateway answers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import Response

PROBLEM_TYPE = "application/problem+json"
_BASE = "urn:agentflow:problem:"


class HTTPProblem(Exception):
    """Raised by a handler: answered as a problem document with `status`."""

    def __init__(self, status: int, slug: str, title: str, detail: str | None = None, *,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:  # fmt: skip
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self, instance: str | None = None) -> Response:
        """The problem as an HTTP response."""
        body: dict[str, Any] = {"type": _BASE + self.slug, "title": self.title,
                                "status": self.status}  # fmt: skip
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return Response(json.dumps(body, default=str), status_code=self.status,
                        headers=self.headers, media_type=PROBLEM_TYPE)  # fmt: skip


def field_errors(errors: Iterable[Mapping[str, Any]], root: str = "") -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "pointer", "message"}``: which field, as a dotted name
    and as a JSON pointer into the body."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if root:
            loc = [root, *loc]
        out.append({"field": ".".join(loc) or "(body)",
                    "pointer": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1")
                                               for p in loc),
                    "message": str(err.get("msg", "invalid"))})  # fmt: skip
    return out


def invalid(detail: str, errors: list[dict[str, str]]) -> HTTPProblem:
    """422: the request's content failed validation; `errors` name the fields at fault."""
    return HTTPProblem(422, "validation", "The request failed validation", detail, errors=errors)


def unauthorized(detail: str) -> HTTPProblem:
    """401 with the challenge a client needs."""
    return HTTPProblem(401, "unauthorized", "Missing or unknown API key", detail,
                       headers={"WWW-Authenticate": 'Bearer realm="agentflow"'})  # fmt: skip


def forbidden(agent: str) -> HTTPProblem:
    """403: the key is valid but not for this agent."""
    return HTTPProblem(403, "forbidden", "The API key may not use this agent",
                       f"this key's scope does not include agent {agent!r}", agent=agent)  # fmt: skip


def not_found(what: str) -> HTTPProblem:
    """404 for an event or entry the gateway does not know."""
    return HTTPProblem(404, "not-found", "Not found", what)

"""What a call of :mod:`agentflow.http` gives back: the whole reply, read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Response:
    """A reply read to its end: status, headers (case-insensitive) and body.

    The names are httpx's (``status_code``, ``headers``, ``content``, ``text``, ``json()``,
    ``is_success``, ``raise_for_status()``), so tool code reads the same either way.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    method: str
    url: str

    @property
    def is_success(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body as text, in the charset the ``content-type`` names (else UTF-8)."""
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body decoded as JSON (``json.JSONDecodeError`` if it is not JSON)."""
        return json.loads(self.content)

    def raise_for_status(self) -> Response:
        """Raise :class:`HTTPStatusError` for a 4xx or 5xx status; else return self."""
        if self.status_code >= 400:
            raise HTTPStatusError(self)
        return self


class HTTPStatusError(httpx.HTTPError):
    """A reply with a 4xx or 5xx status, from :meth:`Response.raise_for_status`.

    A subclass of ``httpx.HTTPError``, so ``except httpx.HTTPError`` catches it with every
    transport error the client raises.
    """

    def __init__(self, response: Response) -> None:
        detail = response.text[:200]
        super().__init__(
            f"{response.status_code} from {response.method} {response.url}"
            + (f": {detail}" if detail else "")
        )
        self.response = response

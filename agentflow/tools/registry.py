"""Tools: typed functions an agent (or an LLM) calls; registered with ``@tool``.

A tool's parameters are a pydantic model — either the function's single parameter annotated
with a ``BaseModel`` subclass, or one built from the function's annotated parameters — so
every tool has a JSON schema for LLM function calling (:meth:`Tool.schema`) and every call's
arguments are validated before the function runs.

A tool may be sync or async; a generator (sync or async) is a *streaming* tool whose items go
to the event's stream in batches (see :mod:`agentflow.tools.execute`).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentflow._redis.queues import TOOLS_QUEUE
from agentflow.errors import ConfigError, ToolError

F = TypeVar("F", bound=Callable[..., Any])
_lock = threading.Lock()
_tools: dict[str, Tool] = {}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Tool:
    """A registered tool."""

    name: str
    fn: Callable[..., Any]
    params: type[BaseModel]
    description: str = ""
    timeout: float | None = None
    """Seconds a call may run; None means `[tools] timeout`."""
    cacheable: bool = False
    """Store successful results in Redis; an identical later call skips the task."""
    cache_ttl: float | None = None
    queue: str | None = None
    """A queue of its own (e.g. for a tool that needs special workers)."""
    model_arg: bool = False
    """True when `fn` takes the params model itself rather than keyword arguments."""
    json_schema: dict[str, Any] | None = None
    """A schema given as JSON (MCP tools): `fn` then takes the arguments as one dict."""

    @property
    def is_async(self) -> bool:
        """True for ``async def`` tools (streaming or not)."""
        return inspect.iscoroutinefunction(self.fn) or inspect.isasyncgenfunction(self.fn)

    @property
    def is_streaming(self) -> bool:
        """True for generator tools: their items are streamed, their result is the count."""
        return inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn)

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling schema of this tool."""
        if self.json_schema is not None:
            parameters = dict(self.json_schema)
        else:
            parameters = self.params.model_json_schema()
        parameters.pop("title", None)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }

    def validate(self, args: dict[str, Any] | None) -> BaseModel:
        """Validated arguments; raises ToolError naming the bad fields."""
        try:
            return self.params.model_validate(args or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolError(f"tool {self.name!r}: invalid arguments: {problems}") from None

    def call(self, args: dict[str, Any] | None) -> Any:
        """Validate and call the function (its return value, coroutine or generator)."""
        if self.json_schema is not None:
            given = dict(args or {})
            missing = [k for k in self.json_schema.get("required") or [] if k not in given]
            if missing:
                raise ToolError(f"tool {self.name!r}: invalid arguments: missing {missing}")
            return self.fn(given)
        model = self.validate(args)
        if self.model_arg:
            return self.fn(model)
        return self.fn(**{k: getattr(model, k) for k in type(model).model_fields})

    def queue_name(self, per_tool: bool) -> str:
        """The queue this tool's calls go to."""
        if self.queue:
            return self.queue
        return f"agentflow.tool.{self.name}" if per_tool else TOOLS_QUEUE


def _params_model(name: str, fn: Callable[..., Any]) -> tuple[type[BaseModel], bool]:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    hints = inspect.get_annotations(fn, eval_str=True)
    if len(params) == 1:
        annotation = hints.get(params[0].name)
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            return annotation, True
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigError(f"tool {name!r}: *args/**kwargs cannot be described to an LLM")
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, default)
    model = create_model(f"{name}_params", __base__=_Strict, **fields)
    return model, False


def register_tool(tool_obj: Tool, *, replace: bool = False) -> Tool:
    """Add a tool under its name."""
    with _lock:
        existing = _tools.get(tool_obj.name)
        if existing is not None and not replace and existing.fn is not tool_obj.fn:
            same = getattr(existing.fn, "__qualname__", None) == getattr(
                tool_obj.fn, "__qualname__", None
            )
            if not same:
                raise ConfigError(f"tool {tool_obj.name!r} is already registered")
        _tools[tool_obj.name] = tool_obj
    return tool_obj


@overload
def tool(name: F) -> F: ...
@overload
def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    timeout: float | None = None,
    cacheable: bool = False,
    cache_ttl: float | None = None,
    queue: str | None = None,
) -> Callable[[F], F]: ...
def tool(
    name: Any = None,
    *,
    description: str | None = None,
    timeout: float | None = None,
    cacheable: bool = False,
    cache_ttl: float | None = None,
    queue: str | None = None,
) -> Any:
    """Register a function as a tool: ``@tool`` or ``@tool("name", timeout=5, cacheable=True)``."""

    def decorate(fn: F, tool_name: str) -> F:
        params, model_arg = _params_model(tool_name, fn)
        register_tool(Tool(
            name=tool_name, fn=fn, params=params,
            description=description if description is not None else (fn.__doc__ or "").strip(),
            timeout=timeout, cacheable=cacheable, cache_ttl=cache_ttl, queue=queue,
            model_arg=model_arg,
        ))  # fmt: skip
        return fn

    if callable(name):
        return decorate(name, name.__name__)
    return lambda fn: decorate(fn, name or fn.__name__)


_resolvers: list[Callable[[str], Tool | None]] = []


def add_resolver(resolve: Callable[[str], Tool | None]) -> None:
    """Let `resolve` supply tools not registered by name (MCP's ``<server>__<tool>``)."""
    if resolve not in _resolvers:
        _resolvers.append(resolve)


def get_tool(name: str) -> Tool:
    """The tool registered as `name` (or an MCP server's ``<server>__<tool>``), or ToolError."""
    found = _tools.get(name)
    if found is not None:
        return found
    for resolve in _resolvers:
        resolved = resolve(name)
        if resolved is not None:
            return resolved
    raise ToolError(f"no tool named {name!r} (registered: {sorted(_tools)})")


def tool_names() -> list[str]:
    """Every registered tool's name, sorted."""
    return sorted(_tools)


def tool_schemas(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Function-calling schemas of the named tools (all when None)."""
    return [get_tool(n).schema() for n in (names if names is not None else tool_names())]

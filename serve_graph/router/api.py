"""OpenAI wire format helpers: the error shape, request parsing, model listing, SSE framing.

Request bodies are validated with vLLM's own protocol models (what the engine consumes), but
every failure is an `InvalidRequest` naming the offending field as `param`, rendered in OpenAI's
error shape by `APIError`, so a client never sees a 500 or FastAPI's native 422 for bad input.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from serve_graph.config import AUTO_MODEL, ResolvedProfile
from serve_graph.router.errors import InvalidRequest, ServeGraphError, error_kind

M = TypeVar("M", bound=BaseModel)


class APIError(Exception):
    """An answer in OpenAI's error shape. Built from a typed error through the one table
    (`APIError.of`, `serve_graph.router.errors.ERRORS`), or directly for HTTP-level errors
    (unknown path, wrong method) that never reach the request path."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    @classmethod
    def of(cls, exc: BaseException) -> APIError:
        """Any exception of the request path, as the client sees it (a bug is a 500 that names
        only the exception's class)."""
        if isinstance(exc, APIError):
            return exc
        kind = error_kind(exc)
        if isinstance(exc, ServeGraphError):
            return cls(kind.status, exc.message, param=exc.param, code=kind.code, type=kind.type)
        return cls(kind.status, f"internal error: {type(exc).__name__}", code=kind.code, type=kind.type)

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(status_code=self.status, content=self.body(), headers=headers)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    raw = await request.body()
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object", code="invalid_json")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    return data


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _client_errors() -> tuple[type[Exception], ...]:
    """vLLM's protocol validators raise VLLMClientError (not a ValueError) for bad values."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # an engine-less install (e.g. docs tooling)
        return (ValueError, TypeError)
    return (ValueError, TypeError, VLLMClientError)


_CLIENT_ERRORS = _client_errors()


def parse_request(model: type[M], data: dict[str, Any]) -> M:
    """Validate with the engine's protocol model; pydantic errors become a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = _loc_to_param(tuple(first["loc"]))
        msg = first["msg"].removeprefix("Value error, ")
        where = f"{param}: " if param else ""
        raise InvalidRequest(f"{where}{msg}", param=param) from None
    except _CLIENT_ERRORS as err:  # validators that raise outside pydantic's wrapping
        param = getattr(err, "parameter", None)
        raise InvalidRequest(str(err), param=param) from None


def model_list(profile: ResolvedProfile) -> dict[str, Any]:
    """`/v1/models`: the catalog plus the routed pseudo-model `auto`."""
    created = int(time.time())
    data = [
        {
            "id": AUTO_MODEL,
            "object": "model",
            "created": created,
            "owned_by": "serve_graph",
            "metadata": {"routed": True, "default_route": profile.default_route},
        }
    ]
    for m in profile.models:
        data.append(
            {
                "id": m.id,
                "object": "model",
                "created": created,
                "owned_by": "serve_graph",
                "max_model_len": m.max_model_len,
                "metadata": {
                    "family": m.family,
                    "tier": m.tier,
                    "source": m.source,
                    "context_length": m.context_length,
                    "capabilities": m.capabilities.model_dump(),
                },
            }
        )
    return {"object": "list", "data": data}


def sse_packet(item: Any) -> str:
    """Frame whatever the LLMServer yields for a stream (SSE strings, batches of them, or
    protocol objects) as SSE text."""
    if isinstance(item, str):
        return item
    if isinstance(item, list):
        return "".join(sse_packet(i) for i in item)
    if isinstance(item, BaseModel):
        return f"data: {item.model_dump_json()}\n\n"
    if isinstance(item, dict):
        return f"data: {json.dumps(item)}\n\n"
    raise TypeError(f"unexpected stream item {type(item).__name__}")

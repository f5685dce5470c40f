"""The real Router request path in-process, with fake model handles (no Ray, no vLLM engine).

Used by `bench/router_latency.py` (router overhead, tracing off vs on) and by unit tests of the
router. Only the engine is fake: parsing, classification, budget, routing, spans, metrics and
response building are the production code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request

from serve_graph.config import load_config
from serve_graph.metrics import RouterMetrics

REPO = Path(__file__).resolve().parents[1]


class _Counter:
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        pass


class _Histogram:
    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass


class NullMetrics:
    """A metrics backend that drops everything (Ray's needs a Ray worker to export)."""

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Counter:
        return _Counter()

    def histogram(self, name: str, description: str, boundaries: list[float], tag_keys: tuple[str, ...]) -> _Histogram:
        return _Histogram()


def fake_chat_response(model: str, body: Any) -> dict[str, Any]:
    """What vLLM returns for a 4-token answer after a budget-capped think block."""
    budget = getattr(body, "thinking_token_budget", None) or 0
    reasoning = max(budget - 1, 0)
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fake", "reasoning": "x" * reasoning},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": reasoning + 4, "total_tokens": reasoning + 16,
                  "completion_tokens_details": {"reasoning_tokens": reasoning}},
    }


class _Response:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def model_dump(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))


class _Method:
    def __init__(self, model: str, calls: list[tuple[str, Any, Any]]) -> None:
        self._model = model
        self._calls = calls

    def remote(self, body: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        self._calls.append((self._model, body, raw_request_info))
        return self._stream(body)

    async def _stream(self, body: Any) -> AsyncIterator[Any]:
        data = fake_chat_response(self._model, body)
        if not getattr(body, "stream", False):
            yield _Response(data)
            return
        chunk = {"id": data["id"], "object": "chat.completion.chunk", "model": self._model,
                 "choices": [{"index": 0, "delta": {"content": "fake"}, "finish_reason": "length"}]}
        yield [f"data: {json.dumps(chunk)}\n\n"]
        yield [f"data: {json.dumps({**chunk, 'choices': [], 'usage': data['usage']})}\n\n"]


class FakeHandle:
    """Quacks like `DeploymentHandle.options(stream=True)` for `.chat` / `.completions`."""

    def __init__(self, model: str, calls: list[tuple[str, Any, Any]]) -> None:
        self.deployment_name = f"LLMServer:{model}"
        self.chat = _Method(model, calls)
        self.completions = _Method(model, calls)

    def options(self, **_: Any) -> FakeHandle:
        return self


def make_router(profile: str = "local", config: Path = REPO / "models.yaml") -> tuple[Any, list[Any]]:
    """A Router instance (the production class) over fake handles; returns it and its call log."""
    from serve_graph.router.ingress import Router

    prof = load_config(config).resolve(profile)
    calls: list[tuple[str, Any, Any]] = []
    handles = {m.id: FakeHandle(m.id, calls) for m in prof.models}
    healthy = {h.deployment_name: ("HEALTHY", 1) for h in handles.values()}
    cls = Router.func_or_class
    router = cls.__new__(cls)
    router._setup(prof.model_dump(mode="json"), handles, lambda: healthy, RouterMetrics(NullMetrics()))
    return router, calls


def make_request(body: dict[str, Any], headers: dict[str, str] | None = None) -> Request:
    raw = json.dumps(body).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    hdrs = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in (headers or {}).items())]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": hdrs, "query_string": b""}
    return Request(scope, receive)


async def post_chat(router: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """One request through Router._handle; returns the Starlette response (body fully built)."""
    if not router.health.healthy:
        await router.health.refresh()
    return await router._handle(make_request(body, headers), "chat")

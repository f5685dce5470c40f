"""Fake model handles for the Router: no Ray, no engine.

`FakeHandle` quacks like `DeploymentHandle.options(stream=True)` for `.chat` / `.completions` and
answers what vLLM would for a short answer after a budget-capped think block. Every call is logged
as `(model, body, raw_request_info)` in the list the handle was given. A handle can be told to
fail (`Behaviour`: raise before the first item, answer an engine 5xx first, raise mid-stream, hang
as if no replica took the call) and what Serve knows of its replicas (`FakeServeView`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


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


class _Recorder:
    def __init__(self, records: list[tuple[float, dict[str, str]]]) -> None:
        self._records = records

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self._records.append((value, dict(tags or {})))

    observe = inc


class RecordingMetrics:
    """A metrics backend that keeps every record: `records[name]` is a list of (value, tags)."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[float, dict[str, str]]]] = {}

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Recorder:
        return _Recorder(self.records.setdefault(name, []))

    def histogram(self, name: str, description: str, boundaries: list[float], tag_keys: tuple[str, ...]) -> _Recorder:
        return _Recorder(self.records.setdefault(name, []))


def fake_chat_response(model: str, body: Any) -> dict[str, Any]:
    """What vLLM returns for a 4-token answer after a budget-capped think block.

    vLLM counts the newline after a pre-opened `<think>` and forces `</think>` at position
    budget - 1, so a budget b yields b - 1 reasoning tokens.
    """
    budget = getattr(body, "thinking_token_budget", None) or 0
    reasoning = max(budget - 1, 0)
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fake", "reasoning": "x" * reasoning},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": reasoning + 4, "total_tokens": reasoning + 16,
                  "completion_tokens_details": {"reasoning_tokens": reasoning}},
    }


class FakeResponse:
    """A pydantic-like response object (what LLMServer yields for non-streaming calls)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def model_dump(self, **_: Any) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(self._data))
        return copy


Call = tuple[str, Any, Any]


@dataclass
class Behaviour:
    """How a FakeHandle's calls go wrong (every call, until changed)."""

    raise_first: BaseException | None = None  # the call raises before its first item
    error_first: int | None = None  # the first item is an engine ErrorResponse with this HTTP status
    raise_after: int | None = None  # streams: raise RuntimeError after this many items
    hang: bool = False  # no replica takes the call: it never answers, and the handle's replica set empties
    queued: bool = False  # all replicas busy: the call waits `latency_s` before a replica takes it
    latency_s: float = 0.0  # before the first item


@dataclass
class FakeEngineError:
    """What Ray's ErrorResponse.error looks like to the router."""

    message: str
    code: int
    type: str = "InternalServerError"
    param: str | None = None


@dataclass
class FakeErrorResponse:
    error: FakeEngineError


class FakeStream:
    """What `.remote()` returns: an async iterator with `cancel()`, like DeploymentResponseGenerator."""

    def __init__(self, assigned: bool) -> None:
        self.items: AsyncIterator[Any] | None = None
        self.assigned = assigned  # handed to a replica (what FakeServeView.assigned reports)
        self.cancelled = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Any:
        assert self.items is not None
        return await self.items.__anext__()

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    def __init__(self, handle: FakeHandle, calls: list[Call]) -> None:
        self._handle = handle
        self._calls = calls

    def remote(self, body: Any, raw_request_info: Any = None) -> FakeStream:
        h = self._handle
        self._calls.append((h.model, body, raw_request_info))
        b = h.behaviour
        stream = FakeStream(assigned=not (b.hang or b.queued))
        stream.items = self._stream(body, b, stream)
        h.streams.append(stream)
        if b.hang and h.replicas is not None:
            h.replicas = 0  # Serve drops the replica it found dead; none is left
        return stream

    async def _stream(self, body: Any, b: Behaviour, stream: FakeStream) -> AsyncIterator[Any]:
        model = self._handle.model
        if b.hang:
            await asyncio.Event().wait()
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        stream.assigned = True
        if b.raise_first is not None:
            raise b.raise_first
        if b.error_first is not None:
            error = FakeErrorResponse(FakeEngineError(f"engine error {b.error_first}", b.error_first))
            yield [error] if getattr(body, "stream", False) else error
            return
        data = fake_chat_response(model, body)
        if not getattr(body, "stream", False):
            yield FakeResponse(data)
            return
        chunk = {"id": data["id"], "object": "chat.completion.chunk", "model": model,
                 "choices": [{"index": 0, "delta": {"content": "fake"}, "finish_reason": None}]}
        last = {"index": 0, "delta": {"content": " answer"}, "finish_reason": "length"}
        items = [chunk, {**chunk, "choices": [last]}, {**chunk, "choices": [], "usage": data["usage"]}]
        for i, item in enumerate(items):
            if b.raise_after is not None and i >= b.raise_after:
                raise RuntimeError(f"{model} failed mid-stream")
            yield [f"data: {json.dumps(item)}\n\n"]


class _Unary:
    """`handle.check_health.remote()`: awaitable (the wake-up call of a model scaled to zero)."""

    def __init__(self, handle: FakeHandle) -> None:
        self._handle = handle

    def remote(self) -> Any:
        self._handle.wakes += 1
        delay = self._handle.wake_latency_s

        async def done() -> None:
            await asyncio.sleep(delay)

        return _Awaitable(done())


class _Awaitable:
    def __init__(self, coro: Any) -> None:
        self._coro = coro

    def __await__(self) -> Any:
        return self._coro.__await__()

    def cancel(self) -> None:
        self._coro.close()


class FakeHandle:
    """Quacks like `DeploymentHandle.options(stream=True)` for `.chat` / `.completions`.

    `replicas` is the handle's own replica set as Serve keeps it (None: not exposed, so the router
    falls back to the health poll and a controller read); `running` is what Serve's controller
    reports (the health poll's probe, the controller read); `behaviour` makes calls fail.
    """

    def __init__(self, model: str, calls: list[Call], *, replicas: int | None = None, running: int = 1) -> None:
        self.model = model
        self.deployment_name = f"LLMServer:{model}"
        self.replicas = replicas
        self.running = running
        self.behaviour = Behaviour()
        self.streams: list[FakeStream] = []
        self.wakes = 0  # wake-up calls received (`check_health`)
        self.wake_latency_s = 0.0
        self.chat = _Method(self, calls)
        self.completions = _Method(self, calls)
        self.check_health = _Unary(self)

    def options(self, **_: Any) -> FakeHandle:
        return self


class FakeServeView:
    """The router's `ServeView` over FakeHandles."""

    def __init__(self, handles: dict[str, FakeHandle]) -> None:
        self._handles = handles

    def live_replicas(self, model: str) -> int | None:
        return self._handles[model].replicas

    def assigned(self, response: Any) -> bool | None:
        return getattr(response, "assigned", None)

    async def running(self, model: str) -> int | None:
        return self._handles[model].running


def fake_probe(handles: dict[str, FakeHandle]) -> Any:
    """The health poll's probe over FakeHandles: deployment -> (status, running)."""
    return lambda: {h.deployment_name: ("HEALTHY", h.running) for h in handles.values()}

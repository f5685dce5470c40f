"""Fake model handles for the Router: no Ray, no engine.

`FakeHandle` quacks like `DeploymentHandle.options(stream=True)` for `.chat` / `.completions` and
answers what vLLM would for a short answer after a budget-capped think block. Every call is logged
as `(model, body, raw_request_info)` in the list the handle was given.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
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


class _Method:
    def __init__(self, model: str, calls: list[Call]) -> None:
        self._model = model
        self._calls = calls

    def remote(self, body: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        self._calls.append((self._model, body, raw_request_info))
        return self._stream(body)

    async def _stream(self, body: Any) -> AsyncIterator[Any]:
        data = fake_chat_response(self._model, body)
        if not getattr(body, "stream", False):
            yield FakeResponse(data)
            return
        chunk = {"id": data["id"], "object": "chat.completion.chunk", "model": self._model,
                 "choices": [{"index": 0, "delta": {"content": "fake"}, "finish_reason": "length"}]}
        yield [f"data: {json.dumps(chunk)}\n\n"]
        yield [f"data: {json.dumps({**chunk, 'choices': [], 'usage': data['usage']})}\n\n"]


class FakeHandle:
    """Quacks like `DeploymentHandle.options(stream=True)` for `.chat` / `.completions`."""

    def __init__(self, model: str, calls: list[Call]) -> None:
        self.deployment_name = f"LLMServer:{model}"
        self.chat = _Method(model, calls)
        self.completions = _Method(model, calls)

    def options(self, **_: Any) -> FakeHandle:
        return self

"""FakeEngine on its own (no Ray cluster): vLLM's shapes and the thinking-budget arithmetic that
the fake-engine tier (test_fake_app.py) relies on."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from serve_graph.testing.fake_engine import FakeEngine


def _engine(thinking: bool = True, **settings: Any) -> FakeEngine:
    cfg = SimpleNamespace(
        model_id="m",
        engine_kwargs={"max_model_len": 256, **({"reasoning_parser": "qwen3"} if thinking else {})},
        experimental_configs={"fake_engine": settings},
    )
    engine = FakeEngine(cfg)
    asyncio.run(engine.start())
    return engine


def _request(**fields: Any) -> Any:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hello there"}], **fields)


def _items(engine: FakeEngine, request: Any) -> list[Any]:
    async def collect() -> list[Any]:
        return [item async for item in engine.chat(request)]

    return asyncio.run(collect())


def _one(engine: FakeEngine, request: Any) -> dict[str, Any]:
    (item,) = _items(engine, request)
    dumped: dict[str, Any] = item.model_dump()
    return dumped


@pytest.mark.parametrize("budget", [1, 5, 20])
def test_budget_gives_budget_minus_one_reasoning_tokens(budget: int) -> None:
    out = _one(_engine(), _request(thinking_token_budget=budget, max_tokens=100))
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == budget - 1
    reasoning = out["choices"][0]["message"]["reasoning"]
    assert len((reasoning or "").split()) == budget - 1


def test_thinking_switched_off_or_not_a_thinking_model() -> None:
    off = _one(_engine(), _request(chat_template_kwargs={"enable_thinking": False}))
    assert off["choices"][0]["message"]["reasoning"] is None
    assert off["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    instruct = _one(_engine(thinking=False), _request(thinking_token_budget=9))
    assert instruct["choices"][0]["message"]["reasoning"] is None


def test_thinking_only_model_ignores_enable_thinking() -> None:
    out = _one(_engine(always_thinks=True), _request(chat_template_kwargs={"enable_thinking": False},
                                                      thinking_token_budget=4))
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


def test_max_tokens_cuts_reasoning_then_answer() -> None:
    out = _one(_engine(think_tokens=8), _request(max_tokens=5))
    choice = out["choices"][0]
    assert out["usage"]["completion_tokens"] == 5 and choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None


def test_context_overflow_is_an_error_item() -> None:
    out = _one(_engine(), _request(max_tokens=10_000))
    assert out["error"]["code"] == 400 and "maximum context length" in out["error"]["message"]


def test_include_reasoning_false_hides_but_counts() -> None:
    out = _one(_engine(), _request(thinking_token_budget=4, include_reasoning=False))
    assert out["choices"][0]["message"]["reasoning"] is None
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


def test_stream_shape() -> None:
    items = _items(_engine(), _request(stream=True, stream_options={"include_usage": True}, thinking_token_budget=3))
    assert all(isinstance(i, str) and i.startswith("data: ") and i.endswith("\n\n") for i in items)
    assert items[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(i[6:]) for i in items[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks if c["choices"]) == "think0 think1"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ValueError, match="latency"):
        _engine(latncy_ms=5)

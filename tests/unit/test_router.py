"""The Router's request path without Ray: production code, fake model handles (serve_graph/testing).
Checks what the engine is sent (the budget in the form each family understands) and what the
client gets back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from serve_graph.testing.router import make_router, post_chat

MATH = [{"role": "user", "content": "Solve for x: 3x + 7 = 22. Show the steps."}]
CHAT = [{"role": "user", "content": "What's a good way to spend a rainy Sunday afternoon?"}]


@pytest.fixture(scope="module")
def router() -> tuple[Any, list[Any]]:
    return make_router()


def _post(router: tuple[Any, list[Any]], body: dict[str, Any]) -> tuple[Any, Any]:
    r, calls = router
    calls.clear()
    resp = asyncio.run(post_chat(r, body))
    sent = calls[-1][1] if calls else None
    return resp, sent


def test_hybrid_model_gets_enable_thinking_and_a_top_level_budget(router: Any) -> None:
    resp, sent = _post(router, {"model": "qwen3-tiny-small", "messages": CHAT, "thinking_token_budget": 40,
                                "max_tokens": 100})
    assert resp.status_code == 200
    assert sent.thinking_token_budget == 40
    assert sent.chat_template_kwargs["enable_thinking"] is True
    assert resp.headers["x-serve-graph-thinking-budget"] == "40"


def test_budget_zero_switches_the_template_off(router: Any) -> None:
    resp, sent = _post(router, {"model": "auto", "messages": CHAT, "max_tokens": 30})  # chat default: 0
    assert resp.headers["x-serve-graph-thinking-budget"] == "0"
    assert sent.chat_template_kwargs["enable_thinking"] is False and sent.thinking_token_budget is None
    body = json.loads(resp.body)
    assert body["serve_graph"]["thinking_truncated"] is False


def test_thinking_only_model_gets_a_budget_even_at_zero(router: Any) -> None:
    resp, sent = _post(router, {"model": "qwen3-tiny-thinking", "messages": CHAT, "max_tokens": 30,
                                "chat_template_kwargs": {"enable_thinking": False}})
    assert resp.status_code == 200
    assert sent.thinking_token_budget == 0  # it cannot be switched off, only cut at once
    assert (sent.chat_template_kwargs or {}).get("enable_thinking") is False  # the client's, untouched


def test_report_and_headers_for_a_routed_math_request(router: Any) -> None:
    resp, sent = _post(router, {"model": "auto", "messages": MATH, "max_tokens": 50})
    h = resp.headers
    assert (h["x-serve-graph-category"], h["x-serve-graph-route"], h["x-serve-graph-model"]) == (
        "math", "math", "qwen3-moe-tiny")
    report = json.loads(resp.body)["serve_graph"]
    assert report["thinking_budget"] == 50 - 16 and report["thinking_budget_capped_by"] == "max_tokens"
    assert report["thinking_truncated"] is True  # the fake engine spends budget - 1, like vLLM does
    assert sent.model == "qwen3-moe-tiny"


def test_stream_usage_chunk_carries_the_report(router: Any) -> None:
    r, _ = router

    async def go() -> list[str]:
        resp = await post_chat(r, {"model": "auto", "messages": CHAT, "stream": True,
                                   "stream_options": {"include_usage": True}})
        return [c if isinstance(c, str) else c.decode() async for c in resp.body_iterator]

    chunks = asyncio.run(go())
    assert chunks[-1] == "data: [DONE]\n\n" and sum("[DONE]" in c for c in chunks) == 1
    usage = json.loads(chunks[-2].strip()[len("data: "):])
    assert usage["serve_graph"]["model"] == "qwen3-tiny-small"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "messages": CHAT}, 404, "model"),
        ({"model": "auto", "messages": CHAT, "thinking_token_budget": "lots"}, 400, "thinking_token_budget"),
        ({"model": "auto", "messages": CHAT, "reasoning_effort": "max"}, 400, "reasoning_effort"),
        ({"model": "auto", "messages": CHAT, "temperature": "hot"}, 400, "temperature"),
        ({"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, "messages"),
    ],
)
def test_bad_input_is_4xx_in_openai_shape(router: Any, body: dict[str, Any], status: int, param: str) -> None:
    resp, sent = _post(router, body)
    assert resp.status_code == status and sent is None
    err = json.loads(resp.body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param

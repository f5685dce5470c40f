"""Thinking budgets end to end on the tiny models, whose template opens <think> and whose random
weights never close it: every </think> seen here was forced by vLLM at the budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_graph.config import load_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LOCAL = load_config(REPO / "models.yaml").resolve("local")
HYBRID = "qwen3-tiny-small"
THINKING_ONLY = next(m.id for m in LOCAL.models if m.always_thinks)
ANSWER = 24  # tokens of answer we ask for after the thinking block
# Random weights emit <|im_end|> now and then (~1/600 per token); vLLM's `ignore_eos` keeps every
# request generating to max_tokens, so "the answer continues after </think>" is deterministic.
NO_EOS = {"ignore_eos": True}
USER = [{"role": "user", "content": "Tell me something nice about the sea."}]
MATH = [{"role": "user", "content": "Solve for x: 3x + 7 = 22. Show the steps and give x."}]


def _chat(client: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("model", HYBRID)
    body.setdefault("messages", USER)
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r


def _stream(client: httpx.Client, **body: Any) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    body.setdefault("model", HYBRID)
    body.setdefault("messages", USER)
    body.update(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, r.read()
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
        headers = r.headers
    assert lines[-1] == "[DONE]"
    return headers, [json.loads(x) for x in lines[:-1]]


@pytest.mark.parametrize("budget", [0, 1, 16, 100])
def test_budget_json(client: httpx.Client, budget: int) -> None:
    r = _chat(client, thinking_token_budget=budget, max_tokens=budget + ANSWER, **NO_EOS)
    body = r.json()
    usage = body["usage"]
    reasoning_tokens = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    msg = body["choices"][0]["message"]
    assert r.headers["x-serve-graph-thinking-budget"] == str(budget)
    assert r.headers["x-serve-graph-thinking-budget-source"] == "explicit"
    assert reasoning_tokens <= budget
    # the answer continues after </think>: content exists and took the rest of max_tokens
    assert msg["content"]
    assert usage["completion_tokens"] - reasoning_tokens >= ANSWER - 2
    report = body["serve_graph"]
    assert report["thinking_budget"] == budget and report["reasoning_tokens"] == reasoning_tokens
    if budget == 0:
        assert not msg.get("reasoning") and reasoning_tokens == 0
        assert report["thinking_truncated"] is False
    else:
        assert report["thinking_truncated"] is True  # random weights never stop thinking alone


@pytest.mark.parametrize("budget", [0, 1, 16, 100])
def test_budget_stream(client: httpx.Client, budget: int) -> None:
    headers, chunks = _stream(client, thinking_token_budget=budget, max_tokens=budget + ANSWER, **NO_EOS)
    assert headers["x-serve-graph-thinking-budget"] == str(budget)
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    reasoning = [d["reasoning"] for d in deltas if d.get("reasoning")]
    content = [d["content"] for d in deltas if d.get("content")]
    assert len(reasoning) <= budget
    assert content, "the answer must continue after the thinking block"
    if budget == 0:
        assert not reasoning
    # the reasoning stream comes first, then the answer: no reasoning after content started
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert not any(d.get("reasoning") for d in deltas[first_content:])
    final = chunks[-1]
    assert final["usage"] and final["serve_graph"]["thinking_budget"] == budget


@pytest.mark.parametrize("effort", ["none", "low", "medium", "high"])
def test_reasoning_effort_maps_to_budget(client: httpx.Client, effort: str) -> None:
    # no max_tokens: only the context caps the budget, so the header shows the mapping
    headers, _ = _stream_headers(client, reasoning_effort=effort)
    category = headers["x-serve-graph-category"]
    expected = LOCAL.budgets.effort_budget(category, effort)
    got = int(headers["x-serve-graph-thinking-budget"])
    assert headers["x-serve-graph-thinking-budget-source"] == "reasoning_effort"
    spec = LOCAL.model(HYBRID)
    assert spec is not None
    assert got == min(expected, got) and (got == expected or got < spec.max_model_len)
    if expected < spec.max_model_len - 100:
        assert got == expected


def _stream_headers(client: httpx.Client, **body: Any) -> tuple[httpx.Headers, None]:
    """Headers arrive with the first chunk; close early instead of generating to the end."""
    body.setdefault("model", HYBRID)
    body.setdefault("messages", USER)
    body["stream"] = True
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, r.read()
        return r.headers, None


@pytest.mark.parametrize(
    ("extra", "messages"),
    [
        ({"chat_template_kwargs": {"enable_thinking": False}}, USER),
        ({}, [{"role": "user", "content": "Tell me something nice about the sea. /no_think"}]),
        ({}, [{"role": "system", "content": "/no_think"}, *USER]),
    ],
)
def test_switches_off_give_zero(client: httpx.Client, extra: dict[str, Any], messages: list[Any]) -> None:
    r = _chat(client, messages=messages, max_tokens=20, **extra)
    body = r.json()
    assert r.headers["x-serve-graph-thinking-budget"] == "0"
    assert not body["choices"][0]["message"].get("reasoning")
    assert ((body["usage"].get("completion_tokens_details") or {}).get("reasoning_tokens") or 0) == 0


@pytest.mark.parametrize(
    ("extra", "budget", "source"),
    [
        ({"thinking_token_budget": 7, "reasoning_effort": "high"}, 7, "explicit"),
        ({"reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": True}}, 0, "reasoning_effort"),
        ({"chat_template_kwargs": {"enable_thinking": True}, "messages": [{"role": "user", "content": "hi /no_think"}]},
         None, "enable_thinking"),
        ({"thinking_token_budget": 5, "messages": [{"role": "user", "content": "hi /no_think"}]}, 5, "explicit"),
    ],
)
def test_precedence(client: httpx.Client, extra: dict[str, Any], budget: int | None, source: str) -> None:
    r = _chat(client, max_tokens=40, **extra)
    assert r.headers["x-serve-graph-thinking-budget-source"] == source
    got = int(r.headers["x-serve-graph-thinking-budget"])
    if budget is not None:
        assert got == budget
    else:
        assert got > 0  # enable_thinking true beats /no_think; capped by max_tokens
    rt = (r.json()["usage"].get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    assert rt <= got


def test_budget_is_capped_by_max_tokens(client: httpx.Client) -> None:
    r = _chat(client, thinking_token_budget=500, max_tokens=40)
    assert r.headers["x-serve-graph-thinking-budget"] == str(40 - LOCAL.budgets.min_answer_tokens)
    assert r.json()["serve_graph"]["thinking_budget_capped_by"] == "max_tokens"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"thinking_token_budget": -1}, "thinking_token_budget"),
        ({"thinking_token_budget": "lots"}, "thinking_token_budget"),
        ({"thinking_token_budget": True}, "thinking_token_budget"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"chat_template_kwargs": {"enable_thinking": "yes"}}, "chat_template_kwargs.enable_thinking"),
    ],
)
def test_invalid_budget_fields_are_400(client: httpx.Client, extra: dict[str, Any], param: str) -> None:
    r = client.post("/v1/chat/completions", json={"model": "auto", "messages": USER, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"


def test_high_effort_math_escalates_to_the_thinking_tier(client: httpx.Client) -> None:
    r = _chat(client, model="auto", messages=MATH, reasoning_effort="high", max_tokens=64)
    assert r.headers["x-serve-graph-category"] == "math"
    assert r.headers["x-serve-graph-model"] == THINKING_ONLY
    budget = int(r.headers["x-serve-graph-thinking-budget"])
    rt = (r.json()["usage"].get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    assert 0 < budget <= 64 and rt <= budget


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking_token_budget": 0, "reasoning_effort": "high"},
        {"reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": False}, "thinking_token_budget": 0},
        {"reasoning_effort": "high", "max_tokens": 10},  # the cap leaves no room to think
    ],
)
def test_budget_zero_never_reaches_the_thinking_only_model(client: httpx.Client, extra: dict[str, Any]) -> None:
    extra.setdefault("max_tokens", 32)
    r = _chat(client, model="auto", messages=MATH, **extra)
    assert r.headers["x-serve-graph-thinking-budget"] == "0"
    assert r.headers["x-serve-graph-model"] != THINKING_ONLY
    assert r.headers["x-serve-graph-category"] == "math"


def test_thinking_only_model_obeys_the_budget(client: httpx.Client) -> None:
    r = _chat(client, model=THINKING_ONLY, thinking_token_budget=12, max_tokens=12 + ANSWER, **NO_EOS)
    rt = (r.json()["usage"].get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    assert 0 < rt <= 12 and r.json()["choices"][0]["message"]["content"]

"""The middle tier: a real Serve app (Router + one LLMServer per catalog model, Serve's proxy,
handles, health) whose LLMServers run `serve_graph.testing.fake_engine.FakeEngine` instead of vLLM.
One app for the module, started in seconds on the session's Ray cluster; it proves routing,
headers, streaming and the error shape without an engine. The engine itself (budget enforcement,
the reasoning parser, engine errors) stays with tests/e2e.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_graph.config import load_config
from serve_graph.testing.otlp import OTLPReceiver
from serve_graph.testing.serve import deployed

pytestmark = pytest.mark.fake

REPO = Path(__file__).resolve().parents[2]
LOCAL = load_config(REPO / "models.yaml").resolve("local")
APP_NAME = "serve_graph_fake"
PREFIX = "/fake"
LATENCY_MS = 20
STARTUP_BUDGET_S = 120  # what "seconds, not minutes" must stay under even on a busy 2-core machine

PROMPTS = {
    "code": "Write a Python function that reverses a singly linked list, with type hints and a unit test.",
    "math": "Solve for x: 3x + 7 = 22. Show your steps.",
    "chat": "What's a good way to spend a rainy Sunday afternoon with friends?",
}
startup: dict[str, float] = {}


TRACING_ENV = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
}


@pytest.fixture(scope="module")
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def client(serve_cluster: str, otlp: OTLPReceiver) -> Iterator[httpx.Client]:
    from serve_graph.app import build_app

    t0 = time.monotonic()
    # Tracing on, configured as an operator does: OTEL_* in the environment of the app builder.
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**TRACING_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.base_url}.items():
            mp.setenv(k, v)
        app = build_app({"config": str(REPO / "models.yaml"), "profile": "local", "engine": "fake",
                         "fake_engine": {"latency_ms": LATENCY_MS}})
    with deployed(app, serve_cluster, APP_NAME, PREFIX, STARTUP_BUDGET_S) as (url, _):
        startup["app_s"] = time.monotonic() - t0
        with httpx.Client(base_url=url, timeout=60) as c:
            yield c


def _chat(client: httpx.Client, content: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}], **extra})


def test_app_starts_in_seconds(client: httpx.Client) -> None:
    print(f"\nfake-engine app: build_app -> /healthz 200 in {startup['app_s']:.1f} s")
    assert startup["app_s"] < STARTUP_BUDGET_S


@pytest.mark.parametrize("category", list(PROMPTS))
def test_auto_routes_by_category(client: httpx.Client, category: str) -> None:
    r = _chat(client, PROMPTS[category], model="auto", max_tokens=32)
    assert r.status_code == 200, r.text
    assert r.headers["x-serve-graph-category"] == category
    assert r.headers["x-serve-graph-route"] == category
    expected = LOCAL.category_routes[category][0]
    body = r.json()
    assert r.headers["x-serve-graph-model"] == expected == body["model"]
    # The answer came from that model's replica, not from the router.
    assert body["choices"][0]["message"]["content"].endswith(f"from {expected}")
    assert body["serve_graph"]["model"] == expected


def test_different_kinds_reach_different_models(client: httpx.Client) -> None:
    served = {_chat(client, text, model="auto", max_tokens=8).headers["x-serve-graph-model"]
              for text in PROMPTS.values()}
    assert len(served) == len(PROMPTS), served


@pytest.mark.parametrize("model_id", [m.id for m in LOCAL.models])
def test_explicit_model_reaches_that_model(client: httpx.Client, model_id: str) -> None:
    r = _chat(client, PROMPTS["chat"], model=model_id, max_tokens=64)
    assert r.status_code == 200, r.text
    assert r.headers["x-serve-graph-model"] == model_id == r.json()["model"]
    assert r.headers["x-serve-graph-route"] == "explicit"


def test_budget_gives_budget_minus_one_reasoning_tokens(client: httpx.Client) -> None:
    r = _chat(client, PROMPTS["chat"], model="qwen3-tiny-small", thinking_token_budget=6, max_tokens=64)
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-serve-graph-thinking-budget"] == "6"
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    assert len(body["choices"][0]["message"]["reasoning"].split()) == 5
    assert body["serve_graph"]["thinking_truncated"] is True


def test_budget_zero_means_no_reasoning(client: httpx.Client) -> None:
    r = _chat(client, PROMPTS["chat"], model="qwen3-tiny-small", thinking_token_budget=0, max_tokens=16)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message.get("reasoning") is None and message["content"]


def _events(r: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]


def test_stream_ends_with_one_done(client: httpx.Client) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPTS["math"]}], "stream": True,
            "stream_options": {"include_usage": True}, "thinking_token_budget": 4, "max_tokens": 64}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        model = r.headers["x-serve-graph-model"]
        events = _events(r)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == model for c in chunks)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks if c["choices"])
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(reasoning.split()) == 3 and content.endswith(f"from {model}")
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    assert usage["serve_graph"]["thinking_budget"] == 4


def test_completions_json_and_stream(client: httpx.Client) -> None:
    body = {"model": "qwen3-tiny-medium", "prompt": "Once upon a time", "max_tokens": 8}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion" and r.json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={"model": "auto", "prompt": "Once upon a time",
                                                        "max_tokens": 8, "stream": True}) as s:
        assert s.status_code == 200
        events = _events(s)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1


def test_unknown_model_is_404_in_openai_shape(client: httpx.Client) -> None:
    r = _chat(client, "hi", model="no-such-model")
    assert r.status_code == 404
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["code"] == "model_not_found" and err["param"] == "model"


def test_context_overflow_is_the_engines_400(client: httpx.Client) -> None:
    r = _chat(client, PROMPTS["chat"], model="qwen3-tiny-small", max_tokens=100_000, thinking_token_budget=0)
    assert r.status_code == 400, r.text
    assert "maximum context length" in r.json()["error"]["message"]


def test_models_lists_catalog_and_auto(client: httpx.Client) -> None:
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert ids == {m.id for m in LOCAL.models} | {"auto"}


def test_fixed_latency_is_applied(client: httpx.Client) -> None:
    t = time.perf_counter()
    _chat(client, PROMPTS["chat"], model="qwen3-tiny-small", max_tokens=8)
    assert time.perf_counter() - t >= LATENCY_MS / 1000


def test_one_trace_from_the_client_to_the_model_replica(client: httpx.Client, otlp: OTLPReceiver) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    model = "qwen3-tiny-medium"
    r = client.post("/v1/chat/completions", headers={"traceparent": f"00-{trace_id}-{parent}-01"},
                    json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    assert r.status_code == 200 and r.headers["x-serve-graph-trace-id"] == trace_id
    needed = {"router.chat", "classify", "route", f"chat {model}", "llm_server.chat"}
    otlp.wait_for(lambda spans: needed <= {s["name"] for s in spans if s["trace_id"] == trace_id}, timeout=30)
    spans = {s["name"]: s for s in otlp.spans() if s["trace_id"] == trace_id}
    router, call, replica = spans["router.chat"], spans[f"chat {model}"], spans["llm_server.chat"]
    assert router["parent_span_id"] == parent
    assert spans["classify"]["parent_span_id"] == spans["route"]["parent_span_id"] == call["parent_span_id"]
    assert call["parent_span_id"] == router["span_id"] and replica["parent_span_id"] == call["span_id"]
    assert router["resource"].get("process.pid") != replica["resource"].get("process.pid")


CACHE_VARS = ("SERVE_GRAPH_CACHE_DIR", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR")


def test_ray_workers_write_caches_under_the_test_dir(client: httpx.Client) -> None:
    """Ray workers (replicas, engine processes) inherit the session's cache variables (tests/conftest.py)."""
    import ray

    @ray.remote(num_cpus=0)
    def worker_env() -> dict[str, str]:
        from serve_graph.classifier.store import cache_dir

        return {**{k: os.environ.get(k, "") for k in CACHE_VARS}, "classifier": str(cache_dir())}

    root = Path(os.environ["SERVE_GRAPH_TEST_CACHE_ROOT"])
    seen = ray.get(worker_env.remote())
    assert {k: seen[k] for k in CACHE_VARS} == {k: os.environ[k] for k in CACHE_VARS}
    assert all(Path(v).is_relative_to(root) for v in seen.values()), seen

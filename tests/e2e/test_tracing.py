"""One trace per request across processes, exported over OTLP/HTTP to a real receiver on loopback.

Chain checked: client span (optional) -> router.chat (SERVER, router process) -> classify, route
(INTERNAL) and `chat <model>` (CLIENT) -> llm_server.chat (SERVER, model replica process)
-> llm_request (vLLM's own span, engine)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from serve_graph.testing.otlp import OTLPReceiver

pytestmark = pytest.mark.e2e

MODEL = "qwen3-tiny-small"
HELLO = [{"role": "user", "content": "Hello there, how are you today?"}]
Spans = list[dict[str, Any]]


@pytest.fixture(scope="module")
def rx(otlp: OTLPReceiver | None, base_url: str) -> OTLPReceiver:
    if otlp is None:
        pytest.skip("the app was not started by this session (SERVE_GRAPH_E2E_URL)")
    return otlp


def _trace(rx: OTLPReceiver, trace_id: str, needed: set[str], timeout: float = 30) -> Spans:
    def have(spans: Spans) -> bool:
        names = {s["name"] for s in spans if s["trace_id"] == trace_id}
        return needed <= names

    rx.wait_for(have, timeout=timeout)
    return [s for s in rx.spans() if s["trace_id"] == trace_id]


def _one(spans: Spans, name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, [s["name"] for s in spans])
    return found[0]


FULL = {"router.chat", "classify", "route", f"chat {MODEL}", "llm_server.chat", "llm_request"}


def _check_chain(spans: Spans) -> dict[str, dict[str, Any]]:
    router, classify, route = _one(spans, "router.chat"), _one(spans, "classify"), _one(spans, "route")
    call, replica, engine = _one(spans, f"chat {MODEL}"), _one(spans, "llm_server.chat"), _one(spans, "llm_request")
    assert router["kind"] == "SERVER" and call["kind"] == "CLIENT" and replica["kind"] == "SERVER"
    assert classify["parent_span_id"] == route["parent_span_id"] == call["parent_span_id"] == router["span_id"]
    assert replica["parent_span_id"] == call["span_id"]
    assert engine["parent_span_id"] == replica["span_id"]
    # three processes: router replica, model replica, engine
    assert router["resource"].get("process.pid") != replica["resource"].get("process.pid")
    return {"router": router, "classify": classify, "route": route, "call": call, "replica": replica}


def test_one_trace_per_request_and_the_full_chain(client: httpx.Client, rx: OTLPReceiver) -> None:
    ids = []
    for _ in range(2):
        r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 6})
        assert r.status_code == 200
        ids.append(r.headers["x-serve-graph-trace-id"])
    assert ids[0] != ids[1]
    for trace_id in ids:
        spans = _trace(rx, trace_id, FULL)
        chain = _check_chain(spans)
        assert chain["router"]["parent_span_id"] == ""  # a new trace: the router span is the root
        assert {s["trace_id"] for s in spans} == {trace_id}


def test_client_traceparent_is_continued(client: httpx.Client, rx: OTLPReceiver) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    r = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 6},
        headers={"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "vendor=1"},
    )
    assert r.status_code == 200 and r.headers["x-serve-graph-trace-id"] == trace_id
    chain = _check_chain(_trace(rx, trace_id, FULL))
    assert chain["router"]["parent_span_id"] == parent


def test_genai_attributes_carry_the_token_counts(client: httpx.Client, rx: OTLPReceiver) -> None:
    r = client.post("/v1/chat/completions", json={
        "model": "auto", "messages": HELLO, "max_tokens": 30, "temperature": 0.5, "top_p": 0.9,
        "thinking_token_budget": 10})
    assert r.status_code == 200
    body = r.json()
    model, usage = body["model"], body["usage"]
    spans = _trace(rx, r.headers["x-serve-graph-trace-id"], {"router.chat", f"chat {model}", "llm_server.chat"})
    call = _one(spans, f"chat {model}")["attributes"]
    assert call["gen_ai.operation.name"] == "chat" and call["gen_ai.provider.name"] == "vllm"
    assert call["gen_ai.request.model"] == model
    assert call["gen_ai.request.max_tokens"] == 30
    assert call["gen_ai.request.temperature"] == pytest.approx(0.5)
    assert call["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert call["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert call["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert call["gen_ai.usage.reasoning.output_tokens"] == usage["completion_tokens_details"]["reasoning_tokens"]
    assert list(call["gen_ai.response.finish_reasons"]) == [body["choices"][0]["finish_reason"]]
    route = _one(spans, "route")["attributes"]
    assert route["serve_graph.model"] == model and route["serve_graph.thinking.budget"] == 10
    classify = _one(spans, "classify")["attributes"]
    assert classify["serve_graph.category"] == r.headers["x-serve-graph-category"]
    assert classify["serve_graph.classifier.latency_ms"] >= 0
    # no prompt or completion text unless content capture is switched on
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output"))
                   for s in spans for k in s["attributes"])


def test_stream_records_time_to_first_chunk(client: httpx.Client, rx: OTLPReceiver) -> None:
    payload = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "stream": True, "ignore_eos": True,
               "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=payload) as r:
        assert r.status_code == 200
        trace_id = r.headers["x-serve-graph-trace-id"]
        r.read()
    spans = _trace(rx, trace_id, FULL)
    call = _one(spans, f"chat {MODEL}")["attributes"]
    assert call["serve_graph.time_to_first_chunk_ms"] > 0
    assert call["gen_ai.usage.output_tokens"] == 8
    assert list(call["gen_ai.response.finish_reasons"]) == ["length"]


def test_errors_are_recorded_on_the_span_that_failed(client: httpx.Client, rx: OTLPReceiver) -> None:
    r = client.post("/v1/chat/completions", json={"model": "no-such-model", "messages": HELLO})
    assert r.status_code == 404
    spans = _trace(rx, r.headers["x-serve-graph-trace-id"], {"router.chat", "route"})
    route, router = _one(spans, "route"), _one(spans, "router.chat")
    assert route["status"] == "ERROR" and route["attributes"]["error.type"].endswith("ModelNotFound")
    assert router["status"] == "ERROR" and router["attributes"]["error.type"] == "404"

    # the engine refuses max_tokens beyond the context: the model call span fails
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 10**6})
    assert r.status_code == 400
    spans = _trace(rx, r.headers["x-serve-graph-trace-id"], {"router.chat", f"chat {MODEL}"})
    call = _one(spans, f"chat {MODEL}")
    assert call["status"] == "ERROR" and call["attributes"]["error.type"]


def test_router_metrics_reach_rays_prometheus_export(client: httpx.Client, rx: OTLPReceiver) -> None:
    """The router's counters are exported by Ray's metrics agent, labelled by category/model/status."""
    import time

    import ray

    port = ray._private.worker._global_node.metrics_export_port
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 2})
    assert r.status_code == 200
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if "serve_graph_router_requests_total" in text and f'model="{MODEL}"' in text:
            break
        time.sleep(3)
    lines = [ln for ln in text.splitlines() if ln.startswith("ray_serve_graph_router_requests_total")]
    assert any(f'model="{MODEL}"' in ln and 'status="200"' in ln for ln in lines), lines[:5]
    assert any(ln.startswith("ray_serve_graph_router_classifier_latency_seconds") for ln in text.splitlines())

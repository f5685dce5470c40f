"""Tracing in-process: span shapes, W3C propagation, streams, errors, content capture, tracing off.

The helpers run against a private SDK provider with an in-memory exporter, swapped into
`serve_graph.tracing.runtime.STATE`; the global OTel provider of the pytest process is never
touched. The real export path (subprocesses + an OTLP receiver) is tests/unit/test_tracing_export.py;
settings and names are tests/unit/test_tracing_settings.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode

from serve_graph import tracing
from serve_graph.tracing import runtime

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"

USAGE = {"prompt_tokens": 11, "completion_tokens": 64, "completion_tokens_details": {"reasoning_tokens": 40}}
RESPONSE = {
    "id": "chatcmpl-1",
    "model": "qwen3-tiny",
    "choices": [{"index": 0, "finish_reason": "length",
                 "message": {"role": "assistant", "content": "SECRET-ANSWER", "reasoning": "SECRET-THOUGHT"}}],
    "usage": USAGE,
}
BODY = {"model": "auto", "messages": [{"role": "user", "content": "SECRET-PROMPT"}], "max_tokens": 64,
        "temperature": 0.6, "top_p": 0.95, "stream": True, "thinking_token_budget": 40}


# ---- in-process harness ------------------------------------------------------------------------


def _install(monkeypatch: pytest.MonkeyPatch, *, capture: bool = False) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    state = runtime.State(configured=True, enabled=True, capture_content=capture,
                          tracer=provider.get_tracer("test"), provider=provider)
    monkeypatch.setattr(runtime, "STATE", state)
    return exporter


@pytest.fixture
def mem(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    return _install(monkeypatch)


@pytest.fixture
def mem_capture(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    return _install(monkeypatch, capture=True)


@pytest.fixture
def off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "STATE", runtime.State())


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


def _all_attribute_text(spans: Any) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans], default=str)


# ---- span shapes (in-process) ------------------------------------------------------------------


def test_server_span_continues_inbound_traceparent(mem: InMemorySpanExporter) -> None:
    headers = {"Traceparent": TRACEPARENT, "tracestate": "vendor=1", "content-type": "application/json"}
    body = SimpleNamespace(**BODY)
    with tracing.server_span("router.chat", headers) as root:
        with tracing.child_span("router.classify"):
            pass
        decision = SimpleNamespace(model="qwen3-tiny", route="math", reason="classified", candidates=("a", "b"),
                                   skipped=("a",))
        classification = SimpleNamespace(category="math", confidence=0.91, latency_ms=0.4)
        budget = SimpleNamespace(tokens=40, source="category_default", capped_by=None)
        tracing.record_decision(root, decision=decision, classification=classification, budget=budget)
        with tracing.client_span("qwen3-tiny", body) as client:
            carrier = tracing.inject()
            tracing.record_response(client, RESPONSE)

    server, classify, call = (_one(mem, n) for n in ("router.chat", "router.classify", "chat qwen3-tiny"))
    assert server.kind == SpanKind.SERVER
    assert _hex(server.context.trace_id, 32) == TRACE_ID
    assert server.parent is not None and server.parent.is_remote and _hex(server.parent.span_id, 16) == CLIENT_SPAN
    assert classify.parent.span_id == server.context.span_id and classify.kind == SpanKind.INTERNAL
    assert call.parent.span_id == server.context.span_id and call.kind == SpanKind.CLIENT
    assert carrier == {"traceparent": f"00-{TRACE_ID}-{_hex(call.context.span_id, 16)}-01", "tracestate": "vendor=1"}

    assert dict(server.attributes) == {
        tracing.SG_CATEGORY: "math", tracing.SG_CONFIDENCE: 0.91, tracing.SG_CLASSIFIER_LATENCY_MS: 0.4,
        tracing.SG_MODEL: "qwen3-tiny", tracing.SG_ROUTE: "math", tracing.SG_REASON: "classified",
        tracing.SG_CANDIDATES: ("a", "b"), tracing.SG_SKIPPED: ("a",), tracing.SG_BUDGET: 40,
        tracing.SG_BUDGET_SOURCE: "category_default"}
    assert dict(call.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "vllm", "gen_ai.request.model": "qwen3-tiny",
        "gen_ai.request.max_tokens": 64, "gen_ai.request.temperature": 0.6, "gen_ai.request.top_p": 0.95,
        tracing.SG_STREAM: True, tracing.SG_BUDGET: 40,
        "gen_ai.response.id": "chatcmpl-1", "gen_ai.response.model": "qwen3-tiny",
        "gen_ai.response.finish_reasons": ("length",), "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 64, "gen_ai.usage.reasoning.output_tokens": 40}
    assert "SECRET" not in _all_attribute_text(mem.get_finished_spans())


def test_server_span_without_traceparent(mem: InMemorySpanExporter) -> None:
    with tracing.server_span("router.chat", {"content-type": "x"}):
        pass
    span = _one(mem, "router.chat")
    assert span.parent is None and span.kind == SpanKind.SERVER
    # no traceparent, but a current span (e.g. Ray Serve's own request span): nest under it
    with tracing.child_span("serve.request") as outer:
        with tracing.server_span("llm_server.chat", {}):
            pass
    assert _one(mem, "llm_server.chat").parent.span_id == outer.get_span_context().span_id


def test_completion_request_attributes(mem: InMemorySpanExporter) -> None:
    body = SimpleNamespace(prompt="p", max_tokens=None, max_completion_tokens=None, temperature=None, top_p=None,
                           stream=False)
    with tracing.client_span("m", body):
        pass
    attrs = dict(_one(mem, "text_completion m").attributes)
    assert attrs == {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "vllm",
                     "gen_ai.request.model": "m", tracing.SG_STREAM: False}


def test_errors_set_status_and_error_type(mem: InMemorySpanExporter) -> None:
    with pytest.raises(TimeoutError):
        with tracing.server_span("router.timeout", {}):
            raise TimeoutError("the model did not answer in time")
    with tracing.server_span("router.rejected", {}) as span:
        tracing.record_error(span, "400", "messages: a non-empty list of messages is required")

    timeout, rejected = _one(mem, "router.timeout"), _one(mem, "router.rejected")
    assert timeout.status.status_code == StatusCode.ERROR
    assert timeout.attributes["error.type"] == "TimeoutError"
    assert [e.name for e in timeout.events] == ["exception"]
    assert rejected.status.status_code == StatusCode.ERROR and rejected.attributes["error.type"] == "400"
    assert rejected.status.description == "messages: a non-empty list of messages is required"


SSE = [
    ['data: {"id":"c1","model":"qwen3-tiny","choices":[{"index":0,"delta":{"reasoning":"SECRET-THOUGHT"},'
     '"finish_reason":null}]}\n\n'],
    ['data: {"id":"c1","model":"qwen3-tiny","choices":[{"index":0,"delta":{"content":"SECRET-ANSWER"},'
     '"finish_reason":"stop"}]}\n\n'],
    ['data: {"id":"c1","model":"qwen3-tiny","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,'
     '"completion_tokens_details":{"reasoning_tokens":3}}}\n\n', "data: [DONE]\n\n"],
]


async def _agen(items: list[Any], *, fail_after: int | None = None,
                log: list[str] | None = None) -> AsyncIterator[Any]:
    try:
        for i, item in enumerate(items):
            if fail_after is not None and i == fail_after:
                raise ValueError("engine exploded")
            yield item
    except asyncio.CancelledError:
        if log is not None:
            log.append("cancelled")
        raise


async def _drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in stream]


def test_stream_records_ttft_finish_reasons_and_usage(mem: InMemorySpanExporter) -> None:
    span = tracing.start_span("chat m", kind=SpanKind.CLIENT)
    out = asyncio.run(_drain(tracing.wrap_stream(span, _agen(SSE))))
    assert out == SSE  # items pass unchanged
    attrs = dict(_one(mem, "chat m").attributes)
    assert attrs[tracing.SG_TIME_TO_FIRST_CHUNK_MS] >= 0
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"],
            attrs["gen_ai.usage.reasoning.output_tokens"]) == (5, 7, 3)
    assert attrs[tracing.SG_CHUNKS] == 3
    assert "SECRET" not in _all_attribute_text(mem.get_finished_spans())


def test_content_is_captured_only_when_on(mem_capture: InMemorySpanExporter) -> None:
    with tracing.client_span("qwen3-tiny", BODY) as span:
        tracing.record_response(span, RESPONSE)
    stream_span = tracing.start_span("stream")
    asyncio.run(_drain(tracing.wrap_stream(stream_span, _agen(SSE))))

    call = dict(_one(mem_capture, "chat qwen3-tiny").attributes)
    assert json.loads(call["gen_ai.input.messages"]) == BODY["messages"]
    assert json.loads(call["gen_ai.output.messages"]) == [
        {"role": "assistant", "content": "SECRET-ANSWER", "reasoning": "SECRET-THOUGHT", "finish_reason": "length"}]
    streamed = dict(_one(mem_capture, "stream").attributes)
    assert json.loads(streamed["gen_ai.output.messages"]) == [
        {"role": "assistant", "content": "SECRET-ANSWER", "reasoning": "SECRET-THOUGHT", "finish_reason": "stop"}]


def test_captured_content_is_truncated(mem_capture: InMemorySpanExporter) -> None:
    with tracing.client_span("m", {"messages": [{"role": "user", "content": "x" * 50_000}]}):
        pass
    value = _one(mem_capture, "chat m").attributes["gen_ai.input.messages"]
    assert len(value) == tracing.CONTENT_LIMIT and value.endswith("...")


def test_stream_error_marks_span(mem: InMemorySpanExporter) -> None:
    span = tracing.start_span("s")
    with pytest.raises(ValueError, match="engine exploded"):
        asyncio.run(_drain(tracing.wrap_stream(span, _agen(SSE, fail_after=1))))
    s = _one(mem, "s")
    assert s.status.status_code == StatusCode.ERROR and s.attributes["error.type"] == "ValueError"


def test_engine_error_item_marks_span(mem: InMemorySpanExporter) -> None:
    err = SimpleNamespace(error=SimpleNamespace(message="max_tokens too large", code=400, type="BadRequestError"))
    span = tracing.start_span("s")
    assert asyncio.run(_drain(tracing.wrap_stream(span, _agen([[err]])))) == [[err]]
    s = _one(mem, "s")
    assert s.status.status_code == StatusCode.ERROR and s.attributes["error.type"] == "BadRequestError"
    assert s.status.description == "max_tokens too large"


def test_cancellation_reaches_the_engine_and_is_not_an_error(mem: InMemorySpanExporter) -> None:
    log: list[str] = []

    async def scenario() -> None:
        wrapped = tracing.wrap_stream(tracing.start_span("s"), _agen(SSE, log=log))
        await wrapped.__anext__()
        with pytest.raises(asyncio.CancelledError):  # what Serve does on client disconnect
            await wrapped.athrow(asyncio.CancelledError())

    asyncio.run(scenario())
    assert log == ["cancelled"]
    s = _one(mem, "s")
    assert s.attributes[tracing.SG_CANCELLED] is True and s.status.status_code == StatusCode.UNSET


def test_traced_call_repoints_headers_at_its_own_span(mem: InMemorySpanExporter) -> None:
    seen: dict[str, str] = {}

    async def engine(headers: dict[str, str]) -> AsyncIterator[Any]:
        seen.update(headers)
        return _agen(SSE)

    async def scenario() -> list[Any]:
        inbound = {"traceparent": TRACEPARENT, "x-request-id": "req-1"}
        stream = await tracing.traced_call("llm_server.chat", inbound, engine,
                                           attributes=lambda: {tracing.GEN_AI_REQUEST_MODEL: "m"})
        assert inspect.isasyncgen(stream)
        assert mem.get_finished_spans() == ()  # open until the stream ends
        return await _drain(stream)

    assert asyncio.run(scenario()) == SSE
    span = _one(mem, "llm_server.chat")
    assert span.kind == SpanKind.SERVER and _hex(span.parent.span_id, 16) == CLIENT_SPAN
    assert seen == {"traceparent": f"00-{TRACE_ID}-{_hex(span.context.span_id, 16)}-01", "x-request-id": "req-1"}
    assert span.attributes[tracing.GEN_AI_REQUEST_MODEL] == "m"
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 3


def test_traced_call_failure_before_streaming(mem: InMemorySpanExporter) -> None:
    async def engine(headers: dict[str, str]) -> AsyncIterator[Any]:
        raise RuntimeError("no engine")

    with pytest.raises(RuntimeError):
        asyncio.run(tracing.traced_call("llm_server.chat", {}, engine))
    assert _one(mem, "llm_server.chat").status.status_code == StatusCode.ERROR


# ---- tracing off -------------------------------------------------------------------------------


def _router_like_request(body: Any) -> dict[str, str]:
    """Every helper the router would call for one request."""
    with tracing.server_span("router.chat", {"traceparent": TRACEPARENT}) as root:
        with tracing.child_span("router.classify"):
            pass
        tracing.record_decision(root, decision=SimpleNamespace(model="m", route="r", reason="x"))
        with tracing.client_span("m", body) as call:
            carrier = tracing.inject()
            tracing.record_response(call, RESPONSE)
    return carrier


def test_off_helpers_are_no_ops(off: None) -> None:
    assert tracing.is_enabled() is False
    with tracing.server_span("x", {"traceparent": TRACEPARENT}) as span:
        assert span is INVALID_SPAN
        assert tracing.inject() == {}
    assert _router_like_request(BODY) == {}
    assert tracing.start_span("x") is INVALID_SPAN
    assert tracing.replace_trace_headers({"traceparent": TRACEPARENT, "a": "b"}) == {"traceparent": TRACEPARENT,
                                                                                     "a": "b"}
    assert tracing.force_flush() is True

    seen: dict[str, str] = {}

    async def engine(headers: dict[str, str]) -> AsyncIterator[Any]:
        seen.update(headers)
        return _agen(SSE)

    stream = asyncio.run(tracing.traced_call("x", {"traceparent": TRACEPARENT}, engine))
    assert seen == {"traceparent": TRACEPARENT}  # the client's context passes through untouched
    assert asyncio.run(_drain(stream)) == SSE


def test_off_costs_microseconds(off: None) -> None:
    body = SimpleNamespace(**BODY)
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        _router_like_request(body)
    per_request_us = (time.perf_counter() - start) / n * 1e6
    # ~3-6 us here on a busy 2-core machine; a request costs milliseconds.
    assert per_request_us < 100, per_request_us


# ---- GenAI request attributes ------------------------------------------------------------------


@pytest.mark.parametrize("effort", ["none", "low", "medium", "high"])
def test_reasoning_effort_becomes_the_reasoning_level(mem: InMemorySpanExporter, effort: str) -> None:
    body = {**BODY, "reasoning_effort": effort}
    assert tracing.request_attributes(body)["gen_ai.request.reasoning.level"] == effort
    with tracing.client_span("m", SimpleNamespace(**body)):
        pass
    assert _one(mem, "chat m").attributes["gen_ai.request.reasoning.level"] == effort


def test_no_reasoning_level_without_reasoning_effort(mem: InMemorySpanExporter) -> None:
    with tracing.client_span("m", BODY):  # a dict without the field
        pass
    with tracing.client_span("n", SimpleNamespace(**BODY, reasoning_effort=None)):  # a request object's None
        pass
    for name in ("chat m", "chat n"):
        assert "gen_ai.request.reasoning.level" not in dict(_one(mem, name).attributes)


def test_request_attributes_of_a_vllm_request_object() -> None:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    body = ChatCompletionRequest(model="tiny", messages=[{"role": "user", "content": "hi"}], reasoning_effort="high",
                                 max_completion_tokens=32, stream=True)
    attrs = tracing.request_attributes(body)
    assert (attrs["gen_ai.request.reasoning.level"], attrs["gen_ai.request.max_tokens"]) == ("high", 32)
    assert (attrs["gen_ai.operation.name"], attrs["gen_ai.request.model"], attrs[tracing.SG_STREAM]) == (
        "chat", "tiny", True)

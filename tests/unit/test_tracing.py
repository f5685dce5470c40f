"""Tracing: configuration precedence, span shapes, W3C propagation and the real OTLP export path.

Two kinds of tests, both without Ray:
- in-process: the helpers run against a private SDK provider with an in-memory exporter swapped
  into `tracing._STATE`; the global OTel provider of the pytest process is never touched;
- subprocess: `setup_tracing` configured from env vars exports over OTLP/HTTP to a real receiver
  (tests/otlp_receiver.py), one process per scenario because a process gets one global provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode
from pydantic import ValidationError

from serve_graph import tracing
from serve_graph.tracing import TracingSettings, env_for_workers, resolve

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.otlp_receiver import OTLPReceiver  # noqa: E402

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
    state = tracing._State(configured=True, enabled=True, capture_content=capture,
                           tracer=provider.get_tracer("test"), provider=provider)
    monkeypatch.setattr(tracing, "_STATE", state)
    return exporter


@pytest.fixture
def mem(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    return _install(monkeypatch)


@pytest.fixture
def mem_capture(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    return _install(monkeypatch, capture=True)


@pytest.fixture
def off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_STATE", tracing._State())


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


def _all_attribute_text(spans: Any) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans], default=str)


# ---- configuration -----------------------------------------------------------------------------


def test_settings_are_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        TracingSettings(endpoint="http://x", sampling=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TracingSettings(sampler_ratio=1.5)
    with pytest.raises(ValidationError):
        TracingSettings(protocol="http/json")  # type: ignore[arg-type]
    s = TracingSettings(endpoint="http://x")
    with pytest.raises(ValidationError):
        s.endpoint = "http://y"  # type: ignore[misc]


def test_off_unless_an_endpoint_is_configured() -> None:
    assert resolve(None, {}).enabled is False
    assert resolve(TracingSettings(), {}).enabled is False
    assert resolve(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}).enabled is True
    assert resolve(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}).enabled is True
    assert resolve(TracingSettings(endpoint="http://c:4318"), {}).enabled is True
    # explicit switches, env before file; the standard kill switches win over everything
    assert resolve(TracingSettings(enabled=False), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}).enabled is False
    assert resolve(TracingSettings(enabled=True), {"SERVE_GRAPH_TRACING_ENABLED": "false"}).enabled is False
    assert resolve(TracingSettings(enabled=False), {"SERVE_GRAPH_TRACING_ENABLED": "1"}).enabled is True
    assert resolve(TracingSettings(enabled=True), {"OTEL_SDK_DISABLED": "true"}).enabled is False
    assert resolve(TracingSettings(enabled=True), {"OTEL_TRACES_EXPORTER": "none"}).enabled is False


def test_env_wins_field_by_field_and_file_fills_in() -> None:
    file = TracingSettings(endpoint="http://file:4318", protocol="grpc", sampler_ratio=0.25,
                           capture_content=True, service_name="from-file")
    r = resolve(file, {})
    assert (r.endpoint, r.protocol, r.sampler, r.sampler_arg, r.capture_content, r.service_name) == (
        "http://file:4318", "grpc", "parentbased_traceidratio", 0.25, True, "from-file")

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "from-env",
           "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"}
    r = resolve(file, env)
    assert (r.endpoint, r.protocol, r.sampler, r.sampler_arg, r.capture_content, r.service_name) == (
        "http://env:4318/v1/traces", "http/protobuf", "parentbased_always_on", None, False, "from-env")

    # the per-signal variables beat the generic ones; a signal endpoint is used as is
    r = resolve(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/x",
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
    assert (r.endpoint, r.protocol) == ("http://b/x", "http/protobuf")
    assert resolve(TracingSettings(endpoint="http://c:4318/v1/traces"), {}).endpoint == "http://c:4318/v1/traces"
    assert resolve(TracingSettings(enabled=True), {}).endpoint == "http://localhost:4318/v1/traces"
    assert resolve(TracingSettings(enabled=True, protocol="grpc"), {}).endpoint == "http://localhost:4317"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, ("parentbased_always_on", None)),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, ("parentbased_traceidratio", 0.1)),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"},
     ("parentbased_traceidratio", 1.0)),
    ({"OTEL_TRACES_SAMPLER": "always_off"}, ("parentbased_always_off", None)),
    ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, ("parentbased_always_on", None)),
])
def test_sampler_is_always_parent_based(env: dict[str, str], expected: tuple[str, float | None]) -> None:
    r = resolve(TracingSettings(enabled=True), env)
    assert (r.sampler, r.sampler_arg) == expected


def test_worker_env_reproduces_the_driver_configuration() -> None:
    file = TracingSettings(endpoint="http://file:4318", sampler_ratio=0.5, capture_content=True)
    driver_env = {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer x", "OTEL_RESOURCE_ATTRIBUTES": "team=ml",
                  "PATH": "/bin"}
    worker_env = env_for_workers(file, driver_env)
    assert worker_env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://file:4318/v1/traces"
    assert worker_env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"  # vLLM defaults to grpc
    assert worker_env["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer x"
    assert worker_env["OTEL_RESOURCE_ATTRIBUTES"] == "team=ml"
    assert "PATH" not in worker_env and "OTEL_SERVICE_NAME" not in worker_env
    # a worker that has only these env vars (no file) resolves exactly what the driver did
    # (except that it is now switched on explicitly)
    assert resolve(None, worker_env) == dataclasses.replace(resolve(file, driver_env), explicit=True)

    assert env_for_workers(None, {}) == {}  # off by default: nothing to propagate
    assert env_for_workers(TracingSettings(enabled=False), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}) == {
        "SERVE_GRAPH_TRACING_ENABLED": "false"}
    named = env_for_workers(TracingSettings(enabled=True, service_name="sg"), {})
    assert named["OTEL_SERVICE_NAME"] == "sg"


def test_engine_kwargs_only_when_on() -> None:
    assert tracing.engine_kwargs_for_tracing(None, {}) == {}
    assert tracing.engine_kwargs_for_tracing(TracingSettings(endpoint="http://c:4318"), {}) == {
        "otlp_traces_endpoint": "http://c:4318/v1/traces"}


def test_grpc_exporter_is_built_without_connecting() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = tracing._build_provider(resolve(TracingSettings(enabled=True, protocol="grpc"), {}), "x")
    processor = provider._active_span_processor._span_processors[0]
    assert isinstance(processor.span_exporter, OTLPSpanExporter)
    provider.shutdown()


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


# ---- the real export path (subprocesses + OTLP receiver) ---------------------------------------


@pytest.fixture
def rx() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


def _run(script: str, env: dict[str, str], timeout: float = 120) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != tracing.ENV_ENABLED}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env={**base, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


ROUTER_SCRIPT = """
    import json, os
    from opentelemetry import trace
    from serve_graph import tracing
    from serve_graph.tracing import record_error, record_response

    assert tracing.setup_tracing(tracing.ROUTER_SERVICE) is True
    assert tracing.setup_tracing("again") is True  # idempotent
    inbound = {"traceparent": os.environ["TEST_TRACEPARENT"]}
    body = json.loads(os.environ["TEST_BODY"])
    with tracing.server_span("router.chat", inbound):
        with tracing.child_span("router.classify"):
            pass
        with tracing.client_span("qwen3-tiny", body) as call:
            carrier = tracing.inject()
            record_response(call, json.loads(os.environ["TEST_RESPONSE"]))
    try:
        with tracing.server_span("router.timeout", inbound):
            raise TimeoutError("the model did not answer in time")
    except TimeoutError:
        pass
    with tracing.server_span("router.rejected", inbound) as span:
        record_error(span, "400", "bad request")
    assert tracing.force_flush()
    print(json.dumps({"carrier": carrier, "global": type(trace.get_tracer_provider()).__module__}))
"""

REPLICA_SCRIPT = """
    import asyncio, json, os
    from opentelemetry import trace
    from serve_graph import tracing

    assert tracing.setup_tracing(tracing.LLM_SERVER_SERVICE) is True
    carrier = json.loads(os.environ["TEST_CARRIER"])
    seen = {}

    async def engine(headers):
        seen.update(headers)

        async def gen():
            # what vLLM does: its own span via the *global* provider, parent from the headers
            ctx = tracing.extract(headers)
            trace.get_tracer("vllm.tracing").start_span("llm_request", context=ctx,
                                                         kind=trace.SpanKind.SERVER).end()
            yield ['data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\\n\\n']
            yield ["data: [DONE]\\n\\n"]

        return gen()

    async def main():
        stream = await tracing.traced_call("llm_server.chat", {**carrier, "x-request-id": "r1"}, engine)
        return [x async for x in stream]

    asyncio.run(main())
    assert tracing.force_flush()
    print(json.dumps(seen))
"""


def _otlp_env(rx: OTLPReceiver, **extra: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.base_url, **extra}


def test_router_and_replica_processes_make_one_trace(rx: OTLPReceiver) -> None:
    out = json.loads(_run(ROUTER_SCRIPT, _otlp_env(rx, TEST_TRACEPARENT=TRACEPARENT, TEST_BODY=json.dumps(BODY),
                                                       TEST_RESPONSE=json.dumps(RESPONSE))))
    assert out["global"].startswith("opentelemetry.sdk")  # installed as the global provider
    seen = json.loads(_run(REPLICA_SCRIPT, _otlp_env(rx, TEST_CARRIER=json.dumps(out["carrier"]))))
    spans = rx.wait_for(lambda s: {"router.rejected", "llm_request"} <= {x["name"] for x in s})
    by_name = {s["name"]: s for s in spans}

    root, call = by_name["router.chat"], by_name["chat qwen3-tiny"]
    replica, engine = by_name["llm_server.chat"], by_name["llm_request"]
    # one trace: client -> router (SERVER) -> model call (CLIENT) -> replica (SERVER) -> engine
    assert {s["trace_id"] for s in (root, call, replica, engine, by_name["router.classify"])} == {TRACE_ID}
    assert root["parent_span_id"] == CLIENT_SPAN and root["kind"] == "SERVER"
    assert by_name["router.classify"]["parent_span_id"] == root["span_id"]
    assert call["parent_span_id"] == root["span_id"] and call["kind"] == "CLIENT"
    assert replica["parent_span_id"] == call["span_id"] and replica["kind"] == "SERVER"
    assert engine["parent_span_id"] == replica["span_id"]
    assert seen == {"traceparent": f"00-{TRACE_ID}-{replica['span_id']}-01", "x-request-id": "r1"}

    assert root["service_name"] == "serve_graph.router" and replica["service_name"] == "serve_graph.llm_server"
    assert engine["service_name"] == "serve_graph.llm_server"  # vLLM's span goes through our provider
    assert root["resource"][tracing.SG_COMPONENT] == "serve_graph.router"

    assert call["attributes"]["gen_ai.usage.reasoning.output_tokens"] == 40
    assert call["attributes"]["gen_ai.request.max_tokens"] == 64
    assert call["attributes"]["gen_ai.response.finish_reasons"] == ["length"]
    assert replica["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert "SECRET" not in json.dumps([s["attributes"] for s in spans])  # content off by default

    timeout, rejected = by_name["router.timeout"], by_name["router.rejected"]
    assert (timeout["status"], timeout["attributes"]["error.type"]) == ("ERROR", "TimeoutError")
    assert (rejected["status"], rejected["attributes"]["error.type"], rejected["status_message"]) == (
        "ERROR", "400", "bad request")


def test_content_capture_over_otlp(rx: OTLPReceiver) -> None:
    _run(ROUTER_SCRIPT, _otlp_env(rx, TEST_TRACEPARENT=TRACEPARENT, TEST_BODY=json.dumps(BODY),
                                  TEST_RESPONSE=json.dumps(RESPONSE),
                                  OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"))
    spans = rx.wait_for(lambda s: any(x["name"] == "chat qwen3-tiny" for x in s))
    attrs = next(s for s in spans if s["name"] == "chat qwen3-tiny")["attributes"]
    assert "SECRET-PROMPT" in attrs["gen_ai.input.messages"]
    assert "SECRET-ANSWER" in attrs["gen_ai.output.messages"]


OFF_SCRIPT = """
    import json
    from opentelemetry import trace
    from serve_graph import tracing

    assert tracing.setup_tracing(tracing.ROUTER_SERVICE) is False
    with tracing.server_span("router.chat", {"traceparent": "%s"}) as span:
        with tracing.client_span("m", {"messages": []}):
            carrier = tracing.inject()
    print(json.dumps({"carrier": carrier, "recording": span.is_recording(),
                      "global": type(trace.get_tracer_provider()).__name__}))
""" % TRACEPARENT


@pytest.mark.parametrize("env", [{}, {"SERVE_GRAPH_TRACING_ENABLED": "false"}, {"OTEL_SDK_DISABLED": "true"}])
def test_tracing_off_exports_nothing(rx: OTLPReceiver, env: dict[str, str]) -> None:
    full_env = env if not env else _otlp_env(rx, **env)  # {} = no endpoint configured at all
    out = json.loads(_run(OFF_SCRIPT, full_env))
    assert out == {"carrier": {}, "recording": False, "global": "ProxyTracerProvider"}  # nothing installed
    time.sleep(0.3)  # the process has exited: anything it exported has arrived
    assert rx.spans() == [] and rx.requests == 0


SAMPLER_SCRIPT = """
    from serve_graph import tracing

    assert tracing.setup_tracing("s") is True
    trace_id = "%s"
    with tracing.server_span("root", {}):
        pass
    with tracing.server_span("sampled-parent", {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}):
        pass
    with tracing.server_span("unsampled-parent", {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"}):
        pass
    tracing.force_flush()
    print("ok")
""" % TRACE_ID


def test_ratio_sampler_still_honours_the_inbound_decision(rx: OTLPReceiver) -> None:
    _run(SAMPLER_SCRIPT, _otlp_env(rx, OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0"))
    time.sleep(0.3)
    assert [s["name"] for s in rx.spans()] == ["sampled-parent"]


def test_grpc_protocol_setting_is_used(rx: OTLPReceiver) -> None:
    """With protocol grpc nothing reaches the HTTP receiver (the exporter speaks gRPC)."""
    script = """
        from serve_graph import tracing
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        assert tracing.setup_tracing("g") is True
        exporter = tracing._STATE.provider._active_span_processor._span_processors[0].span_exporter
        assert isinstance(exporter, OTLPSpanExporter), exporter
        print("ok")
    """
    assert _run(script, _otlp_env(rx, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")) == "ok"


# ---- TracedLLMServer on Ray's real LLMServer + vLLM's tracing code (imports vLLM: ~10-40 s) --------

SERVER_SCRIPT = """
    import asyncio, inspect, json, os
    import ray
    import ray._private.worker

    def no_ray(*a, **k):
        raise RuntimeError("this test must not start or join Ray")

    ray.init = ray._private.worker.init = no_ray

    from opentelemetry import trace
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest, CompletionRequest
    from ray.llm._internal.serve.core.protocol import RawRequestInfo
    from ray.serve.llm import LLMConfig
    from serve_graph import tracing
    from serve_graph.server import TracedLLMServer

    USAGE = ('data: {"id":"c","model":"tiny","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,'
             '"completion_tokens_details":{"reasoning_tokens":1}}}\\n\\n')
    seen = []

    import time
    from vllm.tracing import extract_trace_context, init_tracer, instrument_manual
    from vllm.tracing.utils import extract_trace_headers

    def vllm_llm_request_span(raw_request_info):
        # vLLM's own code path: serving layer -> trace headers -> output processor's span
        headers = extract_trace_headers(raw_request_info.to_starlette_request().headers)
        instrument_manual(span_name="llm_request", start_time=time.time_ns(),
                          attributes={"gen_ai.request.id": "r"}, context=extract_trace_context(headers),
                          kind=trace.SpanKind.SERVER)

    class FakeEngine:
        def __init__(self, cfg):
            # what vLLM's AsyncLLM does at engine start when engine_kwargs has otlp_traces_endpoint
            init_tracer("vllm.llm_engine", tracing.resolve().endpoint)

        async def chat(self, request, raw_request_info=None):
            seen.append(dict(raw_request_info.headers))
            vllm_llm_request_span(raw_request_info)
            if request.stream:
                yield 'data: {"id":"c","model":"tiny","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\\n\\n'
                yield USAGE
                yield "data: [DONE]\\n\\n"
            else:
                yield {"id": "c", "model": "tiny", "choices": [{"index": 0, "finish_reason": "length",
                       "message": {"role": "assistant", "content": "x"}}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2}}

        async def completions(self, request, raw_request_info=None):
            raise ValueError("engine exploded")
            yield  # an async generator, like the real engine

    cfg = LLMConfig(model_loading_config={"model_id": "tiny", "model_source": "/nonexistent"},
                    experimental_configs={"stream_batching_interval_ms": 0},
                    server_cls="serve_graph.server:TracedLLMServer")
    assert cfg.server_cls is TracedLLMServer
    server = TracedLLMServer.sync_init(cfg, engine_cls=FakeEngine)
    assert tracing.is_enabled()  # set up by the constructor, before any engine start
    server.engine = FakeEngine(cfg)  # not server.start(): that reports telemetry through Ray

    async def call(method, *args):
        # exactly what Serve's replica does for handle.options(stream=True) calls
        gen = getattr(server, method)(*args)
        assert inspect.iscoroutine(gen)
        gen = await gen
        assert inspect.isasyncgen(gen)
        return [x async for x in gen]

    async def main():
        msgs = [{"role": "user", "content": "hi"}]
        tp = os.environ["TEST_TRACEPARENT"]
        streamed = await call("chat", ChatCompletionRequest(model="tiny", messages=msgs, stream=True, max_tokens=8),
                              RawRequestInfo(headers={"traceparent": tp, "x-request-id": "r-1"}))
        assert streamed == [[s] for s in (streamed[0][0], USAGE, "data: [DONE]\\n\\n")], streamed
        unary = await call("chat", ChatCompletionRequest(model="tiny", messages=msgs), None)
        assert unary[0]["choices"][0]["finish_reason"] == "length"
        try:
            await call("completions", CompletionRequest(model="tiny", prompt="p"),
                       RawRequestInfo(headers={"traceparent": tp}))
        except ValueError:
            pass
        else:
            raise AssertionError("the engine error must reach the caller")

    asyncio.run(main())
    assert tracing.force_flush()
    print(json.dumps(seen))
"""


def test_traced_llm_server_on_rays_llm_server(rx: OTLPReceiver) -> None:
    # the replica gets exactly what env_for_workers puts into runtime_env (no settings object)
    worker_env = tracing.env_for_workers(TracingSettings(endpoint=rx.base_url), {})
    seen = json.loads(_run(SERVER_SCRIPT, {**worker_env, "TEST_TRACEPARENT": TRACEPARENT}, timeout=400))
    spans = rx.wait_for(lambda s: len([x for x in s if x["name"].startswith("llm_server.")]) == 3
                        and len([x for x in s if x["name"] == "llm_request"]) == 2)
    chats = [s for s in spans if s["name"] == "llm_server.chat"]
    streamed = next(s for s in chats if s["trace_id"] == TRACE_ID)
    unary = next(s for s in chats if s["trace_id"] != TRACE_ID)
    engine_spans = {s["trace_id"]: s for s in spans if s["name"] == "llm_request"}

    assert streamed["parent_span_id"] == CLIENT_SPAN and streamed["kind"] == "SERVER"
    assert engine_spans[TRACE_ID]["parent_span_id"] == streamed["span_id"]
    # vLLM's set_tracer_provider came second and was refused: its span went through ours
    assert {s["service_name"] for s in spans} == {"serve_graph.llm_server"}
    assert not any("vllm.instrumenting_module_name" in s["resource"] for s in spans)
    assert seen[0]["traceparent"] == f"00-{TRACE_ID}-{streamed['span_id']}-01"
    assert seen[0]["x-request-id"]  # Ray's request-id header still reaches the engine
    a = streamed["attributes"]
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"], a["gen_ai.request.max_tokens"]) == (
        "chat", "tiny", 8)
    assert a["gen_ai.response.finish_reasons"] == ["stop"] and a["gen_ai.usage.reasoning.output_tokens"] == 1
    assert a[tracing.SG_TIME_TO_FIRST_CHUNK_MS] >= 0 and a[tracing.SG_STREAM] is True

    assert unary["parent_span_id"] == ""  # no inbound context: the replica starts the trace
    assert engine_spans[unary["trace_id"]]["parent_span_id"] == unary["span_id"]
    assert unary["attributes"]["gen_ai.response.finish_reasons"] == ["length"]

    failed = next(s for s in spans if s["name"] == "llm_server.completions")
    assert failed["status"] == "ERROR" and failed["attributes"]["error.type"] == "ValueError"
    assert failed["attributes"]["gen_ai.operation.name"] == "text_completion"

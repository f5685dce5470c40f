"""RequestScope: opened once, finished once on every exit (JSON, SSE, client hang-up, error,
fallback), one metrics row, every span ended exactly once. In-process spans (a private SDK
provider swapped into serve_graph.tracing.runtime.STATE) and a recording metrics backend."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import StatusCode

from serve_graph import metrics
from serve_graph.metrics import RouterMetrics
from serve_graph.router.errors import ModelNotFound, UpstreamError
from serve_graph.router.failover import Fallback
from serve_graph.router.plan import Plan
from serve_graph.router.policy import Decision
from serve_graph.router.scope import CLIENT_CLOSED, FALLBACK_HEADER, SG_FALLBACK, RequestScope
from serve_graph.testing.handles import RecordingMetrics
from serve_graph.tracing import runtime

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PLAN = Plan(decision=Decision(model="m2", reason="chat route", route="chat", candidates=("m1", "m2")),
            classification=None, budget=None)
BODY = {"model": "m2", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class Ends(SpanProcessor):
    """Counts on_end per span (the SDK calls it once per end() that actually ends the span)."""

    def __init__(self) -> None:
        self.ended: Counter[int] = Counter()
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ended[span.context.span_id] += 1
        self.spans.append(span)

    def by_name(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]


@pytest.fixture
def ends(monkeypatch: pytest.MonkeyPatch) -> Ends:
    processor = Ends()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(processor)
    monkeypatch.setattr(runtime, "STATE", runtime.State(configured=True, enabled=True,
                                                         tracer=provider.get_tracer("test"), provider=provider))
    return processor


@pytest.fixture
def rec() -> RecordingMetrics:
    return RecordingMetrics()


def _scope(rec: RecordingMetrics) -> RequestScope:
    return RequestScope("chat", {"traceparent": TRACEPARENT}, RouterMetrics(rec))


def _route_and_call(scope: RequestScope, *, failed_first: bool = False) -> Any:
    """The spans a routed request opens: route, (a failed call,) the serving call."""
    with scope.active():
        with scope.route_span():
            scope.plan = PLAN
        if failed_first:
            with scope.call_span("m1", BODY) as failed:
                pass
            scope.call_failed(failed, Fallback("m1", "upstream_error"), UpstreamError("m1 failed: 500", model="m1"))
        with scope.call_span("m2", BODY) as call:
            pass
        scope.first_item(call)
        scope.routed(PLAN)
    return call


def _assert_finished_once(scope: RequestScope, ends: Ends, rec: RecordingMetrics, status: int) -> None:
    assert scope.status == status
    scope.finish(200)  # a second finish changes nothing
    assert [tags["status"] for _, tags in rec.records[metrics.REQUESTS]] == [str(status)]
    assert len(rec.records[metrics.REQUEST_DURATION]) == 1
    assert ends.spans and all(n == 1 for n in ends.ended.values()), ends.ended
    assert all(s.end_time is not None for s in ends.spans)
    root = ends.by_name("router.chat")[0]
    assert root.parent is not None and format(root.context.trace_id, "032x") == TRACEPARENT.split("-")[1]


def _sse(chunks: list[dict[str, Any]], fail_after: int | None = None) -> AsyncIterator[Any]:
    async def gen() -> AsyncIterator[Any]:
        for i, c in enumerate(chunks):
            if fail_after is not None and i >= fail_after:
                raise UpstreamError("model m2 failed mid-stream (upstream_error)", model="m2")
            yield [f"data: {json.dumps(c)}\n\n"]

    return gen()


CHUNK = {"id": "c", "object": "chat.completion.chunk", "model": "m2",
         "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}


def test_json(ends: Ends, rec: RecordingMetrics) -> None:
    scope = _scope(rec)
    call = _route_and_call(scope)
    resp = scope.respond_json(call, {"id": "r", "model": "m2", "choices": [], "usage": {"completion_tokens": 1}})
    assert resp.status_code == 200 and json.loads(resp.body)["serve_graph"]["model"] == "m2"
    assert resp.headers["x-serve-graph-model"] == "m2" and FALLBACK_HEADER not in resp.headers
    _assert_finished_once(scope, ends, rec, 200)
    assert rec.records[metrics.TIME_TO_FIRST_CHUNK] == []  # a streaming metric
    assert {s.name for s in ends.spans} == {"router.chat", "route", "chat m2"}


def test_sse_normal_end(ends: Ends, rec: RecordingMetrics) -> None:
    scope = _scope(rec)
    call = _route_and_call(scope)
    cancelled: list[bool] = []

    async def consume() -> list[str]:
        return [p async for p in scope.stream(call, [f"data: {json.dumps(CHUNK)}\n\n"], _sse([CHUNK]),
                                              lambda: cancelled.append(True))]

    packets = asyncio.run(consume())
    assert packets[-1] == "data: [DONE]\n\n" and len(packets) == 3 and not cancelled
    _assert_finished_once(scope, ends, rec, 200)
    assert len(rec.records[metrics.TIME_TO_FIRST_CHUNK]) == 1
    assert ends.by_name("chat m2")[0].attributes["serve_graph.chunks"] == 2


@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_sse_client_hang_up(ends: Ends, rec: RecordingMetrics, how: str) -> None:
    scope = _scope(rec)
    call = _route_and_call(scope)
    cancelled: list[bool] = []
    gate = asyncio.Event

    async def never() -> AsyncIterator[Any]:
        await gate().wait()
        yield "never"

    async def consume() -> None:
        stream = scope.stream(call, [f"data: {json.dumps(CHUNK)}\n\n"], never(), lambda: cancelled.append(True))
        await stream.__anext__()
        if how == "aclose":  # Starlette closes the body iterator when the client goes away
            await stream.aclose()
        else:  # Serve cancels the request task
            task = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(consume())
    assert cancelled == [True]
    _assert_finished_once(scope, ends, rec, CLIENT_CLOSED)
    assert all(s.attributes.get("serve_graph.cancelled") for s in ends.spans if s.name != "route")


def test_sse_mid_stream_failure_ends_with_an_error_event(ends: Ends, rec: RecordingMetrics) -> None:
    scope = _scope(rec)
    call = _route_and_call(scope)

    async def consume() -> list[str]:
        return [p async for p in scope.stream(call, [f"data: {json.dumps(CHUNK)}\n\n"],
                                              _sse([CHUNK, CHUNK], fail_after=1), lambda: None)]

    packets = asyncio.run(consume())
    assert packets[-1] == "data: [DONE]\n\n" and sum("[DONE]" in p for p in packets) == 1
    error = json.loads(packets[-2][len("data: "):])["error"]
    assert error["code"] == "upstream_error" and error["type"] == "server_error" and "mid-stream" in error["message"]
    _assert_finished_once(scope, ends, rec, 502)
    assert ends.by_name("router.chat")[0].status.status_code == StatusCode.ERROR


def test_error_before_routing(ends: Ends, rec: RecordingMetrics) -> None:
    scope = _scope(rec)
    with scope.active():
        with pytest.raises(ModelNotFound), scope.route_span():
            raise ModelNotFound("The model `x` does not exist.", param="model", code="model_not_found")
    resp = scope.fail(ModelNotFound("The model `x` does not exist.", param="model", code="model_not_found"))
    assert resp.status_code == 404
    assert json.loads(resp.body)["error"] == {"message": "The model `x` does not exist.",
                                              "type": "invalid_request_error", "param": "model",
                                              "code": "model_not_found"}
    assert "x-serve-graph-trace-id" in resp.headers and "x-serve-graph-model" not in resp.headers
    _assert_finished_once(scope, ends, rec, 404)
    route, root = ends.by_name("route")[0], ends.by_name("router.chat")[0]
    assert route.attributes["error.type"].endswith("ModelNotFound") and root.attributes["error.type"] == "404"
    assert rec.records[metrics.DECISIONS] == []  # no decision was made


def test_fallback_is_said_everywhere(ends: Ends, rec: RecordingMetrics) -> None:
    scope = _scope(rec)
    scope.skipped((Fallback("m0", "scaled_to_zero"),))
    call = _route_and_call(scope, failed_first=True)
    resp = scope.respond_json(call, {"id": "r", "model": "m2", "choices": []})
    assert resp.headers[FALLBACK_HEADER] == "m0:scaled_to_zero,m1:upstream_error"
    assert json.loads(resp.body)["serve_graph"]["fallback"] == ["m0:scaled_to_zero", "m1:upstream_error"]
    _assert_finished_once(scope, ends, rec, 200)
    route, failed, served = ends.by_name("route")[0], ends.by_name("chat m1")[0], ends.by_name("chat m2")[0]
    assert route.attributes[SG_FALLBACK] == ("m0:scaled_to_zero", "m1:upstream_error")
    assert failed.attributes[SG_FALLBACK] == ("m0:scaled_to_zero", "m1:upstream_error")
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "upstream_error"
    assert served.attributes[SG_FALLBACK] == ("m0:scaled_to_zero", "m1:upstream_error")
    assert served.status.status_code != StatusCode.ERROR
    assert sorted((t["from"], t["to"], t["reason"]) for _, t in rec.records[metrics.FALLBACKS]) == [
        ("m0", "m2", "scaled_to_zero"), ("m1", "m2", "upstream_error")]


def test_a_failure_after_fallbacks_keeps_the_fallback_header(ends: Ends, rec: RecordingMetrics) -> None:
    scope = _scope(rec)
    with scope.active():
        with scope.route_span():
            scope.plan = PLAN
        with scope.call_span("m1", BODY) as call:
            pass
        scope.call_failed(call, Fallback("m1", "no_replica"), UpstreamError("m1 has no running replica"))
    resp = scope.fail(UpstreamError("m1 has no running replica"))
    assert resp.status_code == 502 and resp.headers[FALLBACK_HEADER] == "m1:no_replica"
    _assert_finished_once(scope, ends, rec, 502)
    assert [t["to"] for _, t in rec.records[metrics.FALLBACKS]] == ["none"]


def test_tracing_off_costs_no_spans(monkeypatch: pytest.MonkeyPatch, rec: RecordingMetrics) -> None:
    monkeypatch.setattr(runtime, "STATE", runtime.State())
    scope = _scope(rec)
    call = _route_and_call(scope)
    resp = scope.respond_json(call, {"id": "r", "model": "m2", "choices": []})
    assert resp.status_code == 200 and "x-serve-graph-trace-id" not in resp.headers
    assert len(rec.records[metrics.REQUESTS]) == 1

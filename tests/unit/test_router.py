"""The Router's request path without Ray: production code, fake model handles (serve_graph/testing).
Checks what the engine is sent (the budget in the form each family understands) and what the
client gets back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from serve_graph import metrics
from serve_graph.metrics import RouterMetrics
from serve_graph.testing.handles import Behaviour, FakeHandle, RecordingMetrics
from serve_graph.testing.router import make_router, post, post_chat

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


# ---- failover before the first byte, through the production request path ------------------------
# The chat route of the local profile is [qwen3-tiny-small, qwen3-tiny-medium]; every test builds its
# own router (handles keep their state) with a short replica wait.

SMALL, MEDIUM = "qwen3-tiny-small", "qwen3-tiny-medium"
WAIT_S = 0.05


def _failover_router(**settings: Any) -> tuple[Any, dict[str, FakeHandle], RecordingMetrics]:
    rec = RecordingMetrics()
    r, _ = make_router(metrics=RouterMetrics(rec), router_settings={"replica_wait_s": WAIT_S, **settings})
    return r, dict(r.upstream.handles), rec


def _chat(r: Any, body: dict[str, Any] | None = None) -> Any:
    return asyncio.run(post_chat(r, body or {"model": "auto", "messages": CHAT, "max_tokens": 30}))


def _fallbacks(rec: RecordingMetrics) -> list[tuple[str, str, str]]:
    return [(t["from"], t["to"], t["reason"]) for _, t in rec.records.get(metrics.FALLBACKS, [])]


def _statuses(rec: RecordingMetrics) -> list[str]:
    return [t["status"] for _, t in rec.records[metrics.REQUESTS]]


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (Behaviour(error_first=500), "upstream_error"),
        (Behaviour(raise_first=ActorDiedError()), "replica_died"),
        (Behaviour(raise_first=BackPressureError(num_queued_requests=4, max_queued_requests=4)), "backpressure"),
        (Behaviour(raise_first=RuntimeError("boom")), "upstream_error"),
        (Behaviour(hang=True), "no_replica"),  # the handle's replica set empties: Serve found it dead
    ],
)
def test_a_failed_first_candidate_fails_over_to_the_next(behaviour: Behaviour, reason: str) -> None:
    r, h, rec = _failover_router()
    h[SMALL].behaviour = behaviour
    h[SMALL].replicas = 1  # Serve's set still lists a replica when the call is made
    resp = _chat(r)
    assert resp.status_code == 200, resp.body
    assert resp.headers["x-serve-graph-model"] == MEDIUM == json.loads(resp.body)["model"]
    assert resp.headers["x-serve-graph-fallback"] == f"{SMALL}:{reason}"
    assert json.loads(resp.body)["serve_graph"]["fallback"] == [f"{SMALL}:{reason}"]
    assert "failed over to qwen3-tiny-medium" in json.loads(resp.body)["serve_graph"]["reason"]
    assert _fallbacks(rec) == [(SMALL, MEDIUM, reason)] and _statuses(rec) == ["200"]
    assert [t["model"] for _, t in rec.records[metrics.DECISIONS]] == [MEDIUM]
    assert h[SMALL].streams[0].cancelled == (reason == "no_replica")  # a call waiting for a replica is cancelled
    # Marked down until a later health poll confirms it: the next request skips it without a call.
    h[SMALL].behaviour = Behaviour()
    resp = _chat(r)
    assert resp.headers["x-serve-graph-model"] == MEDIUM
    assert resp.headers["x-serve-graph-fallback"] == f"{SMALL}:{reason}" and len(h[SMALL].streams) == 1
    if reason != "no_replica":
        asyncio.run(r.health.refresh())  # the poll sees a running replica again
        assert _chat(r).headers["x-serve-graph-model"] == SMALL


def test_no_replica_is_known_without_calling() -> None:
    """Serve's own replica set says none: passed over at once, no call, no wait."""
    r, h, rec = _failover_router(replica_wait_s=30)
    h[SMALL].replicas = 0
    resp = _chat(r)
    assert resp.headers["x-serve-graph-model"] == MEDIUM
    assert resp.headers["x-serve-graph-fallback"] == f"{SMALL}:no_replica" and h[SMALL].streams == []
    assert _fallbacks(rec) == [(SMALL, MEDIUM, "no_replica")]


def test_no_replica_from_a_controller_read_when_the_handle_does_not_say() -> None:
    r, h, _ = _failover_router()
    h[SMALL].behaviour = Behaviour(hang=True)  # replicas None: the router asks the controller
    asyncio.run(r.health.refresh())
    h[SMALL].running = 0
    resp = _chat(r)
    assert resp.headers["x-serve-graph-fallback"] == f"{SMALL}:no_replica" and h[SMALL].streams[0].cancelled


@pytest.mark.parametrize("behaviour", [Behaviour(latency_s=0.3), Behaviour(queued=True, latency_s=0.3)])
def test_a_busy_live_replica_is_waited_for(behaviour: Behaviour) -> None:
    """Slow first item (assigned) or queued behind busy replicas (live): load, not failure."""
    r, h, rec = _failover_router()
    h[SMALL].behaviour = behaviour
    h[SMALL].replicas = 2
    resp = _chat(r)
    assert resp.headers["x-serve-graph-model"] == SMALL and "x-serve-graph-fallback" not in resp.headers
    assert _fallbacks(rec) == [] and h[MEDIUM].streams == []


def test_an_engine_4xx_is_the_clients_answer_not_a_failover() -> None:
    r, h, rec = _failover_router()
    h[SMALL].behaviour = Behaviour(error_first=400)
    resp = _chat(r)
    assert resp.status_code == 400 and json.loads(resp.body)["error"]["message"] == "engine error 400"
    assert h[MEDIUM].streams == [] and _fallbacks(rec) == [] and _statuses(rec) == ["400"]


def test_explicit_model_is_not_failed_over() -> None:
    r, h, rec = _failover_router()
    h[SMALL].behaviour = Behaviour(error_first=500)
    resp = _chat(r, {"model": SMALL, "messages": CHAT})
    assert resp.status_code == 502 and h[MEDIUM].streams == []
    assert json.loads(resp.body)["error"]["code"] == "upstream_error"
    assert resp.headers["x-serve-graph-fallback"] == f"{SMALL}:upstream_error"
    assert _fallbacks(rec) == [(SMALL, "none", "upstream_error")] and _statuses(rec) == ["502"]


def test_explicit_model_without_replica_waits_for_one_within_the_request_timeout() -> None:
    r, h, _ = _failover_router(request_timeout_s=0.3)
    h[SMALL].replicas = 0
    h[SMALL].behaviour = Behaviour(queued=True, latency_s=0.1)  # Serve starts a replica, then takes the call
    assert _chat(r, {"model": SMALL, "messages": CHAT}).headers["x-serve-graph-model"] == SMALL
    h[SMALL].behaviour = Behaviour(hang=True)
    resp = _chat(r, {"model": SMALL, "messages": CHAT})
    assert resp.status_code == 504 and json.loads(resp.body)["error"]["code"] == "timeout"
    assert h[SMALL].streams[-1].cancelled and h[MEDIUM].streams == []


def test_attempts_are_bounded() -> None:
    r, h, rec = _failover_router(max_attempts=2)
    for m in h.values():
        m.behaviour = Behaviour(error_first=503)
    code = [{"role": "user", "content": "Write a Python function that reverses a linked list, with tests."}]
    resp = _chat(r, {"model": "auto", "messages": code, "max_tokens": 64})
    assert resp.status_code == 502
    tried = [name for name, m in h.items() if m.streams]
    assert len(tried) == 2 and resp.headers["x-serve-graph-fallback"].count(":upstream_error") == 2
    assert _statuses(rec) == ["502"]


def test_failed_over_budget_is_resolved_for_the_new_model() -> None:
    r, h, _ = _failover_router()
    h[SMALL].behaviour = Behaviour(error_first=500)
    resp = _chat(r, {"model": "auto", "messages": CHAT, "thinking_token_budget": 40, "max_tokens": 100})
    assert resp.headers["x-serve-graph-model"] == MEDIUM and resp.headers["x-serve-graph-thinking-budget"] == "40"


def test_scaled_to_zero_is_passed_over_and_woken_once() -> None:
    r, h, rec = _failover_router()
    r.health._deployments[SMALL] = (h[SMALL].deployment_name, 0)  # min_replicas 0 (a sleeping profile)
    h[SMALL].replicas = h[SMALL].running = 0
    h[SMALL].wake_latency_s = 0.2

    async def two() -> list[Any]:
        out = [await post_chat(r, {"model": "auto", "messages": CHAT}) for _ in range(2)]
        await asyncio.sleep(0.3)  # the wake-up call completes
        return out

    for resp in asyncio.run(two()):
        assert resp.headers["x-serve-graph-model"] == MEDIUM
        assert resp.headers["x-serve-graph-fallback"] == f"{SMALL}:scaled_to_zero"
    assert h[SMALL].wakes == 1 and h[SMALL].streams == []  # woken once while waking, never called
    assert _fallbacks(rec) == [(SMALL, MEDIUM, "scaled_to_zero")] * 2
    h[SMALL].replicas = 1  # Serve started a replica: it takes its traffic back before the next poll
    resp = _chat(r)
    assert resp.headers["x-serve-graph-model"] == SMALL and "x-serve-graph-fallback" not in resp.headers


def test_stream_failing_after_the_first_byte_is_not_retried() -> None:
    r, h, rec = _failover_router()
    h[SMALL].behaviour = Behaviour(raise_after=1)

    async def go() -> list[str]:
        resp = await post_chat(r, {"model": "auto", "messages": CHAT, "stream": True})
        return [c if isinstance(c, str) else c.decode() async for c in resp.body_iterator]

    chunks = asyncio.run(go())
    assert chunks[-1] == "data: [DONE]\n\n" and sum("[DONE]" in c for c in chunks) == 1
    error = json.loads(chunks[-2][len("data: "):])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_error"
    assert h[MEDIUM].streams == [] and _statuses(rec) == ["502"]


def test_client_hang_up_cancels_the_call_and_records_499() -> None:
    r, h, rec = _failover_router()

    async def go() -> None:
        resp = await post_chat(r, {"model": "auto", "messages": CHAT, "stream": True})
        body = resp.body_iterator
        await body.__anext__()
        await body.aclose()

    asyncio.run(go())
    assert h[SMALL].streams[0].cancelled and _statuses(rec) == ["499"]


def test_failover_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from serve_graph.tracing import runtime

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(runtime, "STATE", runtime.State(configured=True, enabled=True,
                                                         tracer=provider.get_tracer("t"), provider=provider))
    r, h, _ = _failover_router()
    h[SMALL].behaviour = Behaviour(error_first=500)
    assert _chat(r).status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"router.chat", "classify", "route", f"chat {SMALL}", f"chat {MEDIUM}"}
    root = spans["router.chat"]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id
               for name, s in spans.items() if name != "router.chat")
    fallback = (f"{SMALL}:upstream_error",)
    assert spans["route"].attributes["serve_graph.fallback"] == fallback
    assert spans["route"].attributes["serve_graph.model"] == MEDIUM
    assert spans[f"chat {SMALL}"].attributes["error.type"] == "upstream_error"
    assert spans[f"chat {MEDIUM}"].attributes["serve_graph.fallback"] == fallback
    assert root.attributes["serve_graph.fallback"] == fallback


def test_completions_fail_over_too() -> None:
    r, h, _ = _failover_router()
    h[SMALL].behaviour = Behaviour(raise_first=ActorDiedError())
    body = {"model": "auto", "prompt": "Tell me about your weekend", "max_tokens": 8}
    resp = asyncio.run(post(r, "completions", body))
    assert resp.status_code == 200 and resp.headers["x-serve-graph-fallback"] == f"{SMALL}:replica_died"
    assert resp.headers["x-serve-graph-model"] == MEDIUM


def test_healthz_names_pending_models_and_why() -> None:
    """A model Serve cannot start yet (e.g. no node fits it) is reported with the reason, while
    /healthz itself keeps answering; a failing lookup only loses the detail."""
    router, _ = make_router()
    small = router.profile.models[0].id
    router.upstream.handles[small].running = 0
    router._pending_probe = lambda profile: {small: "no node has accelerator_type:B200"}

    async def go() -> Any:
        return await router.healthz()

    r = asyncio.run(go())
    body = json.loads(r.body)
    assert r.status_code == 503 and body["status"] == "unavailable"
    assert body["models"][small]["ready"] is False
    assert body["models"][small]["pending"] == "no node has accelerator_type:B200"

    def broken(profile: Any) -> dict[str, str]:
        raise RuntimeError("GCS unreachable")

    router._pending_probe = broken
    body = json.loads(asyncio.run(go()).body)
    assert "pending" not in body["models"][small] and body["models"][small]["ready"] is False

"""The router deployment: the one HTTP ingress in front of every model.

Per request: parse (400 on bad input) -> plan (classify, budget, decide: pure, router/plan.py)
-> call the chosen LLMServer handle -> return JSON or SSE, with headers naming what was decided.
It holds handles, not engines, so it reserves no CPU and never waits behind an engine for a slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from serve_graph import tracing
from serve_graph.classifier import Classifier, build_classifier
from serve_graph.config import ModelSpec, ResolvedProfile
from serve_graph.metrics import RouterMetrics
from serve_graph.router.api import APIError, model_list, parse_request, read_json_object, sse_packet
from serve_graph.router.budget import BudgetError
from serve_graph.router.health import HealthTracker, read_serve_status
from serve_graph.router.plan import Plan, apply_thinking, classify_request, plan_request
from serve_graph.router.policy import RoutingError

logger = logging.getLogger("serve_graph.router")

app = FastAPI(title="serve_graph router", docs_url=None, redoc_url=None)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown paths and wrong methods answer in OpenAI's error shape too, not FastAPI's."""
    return APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None).response()

# Headers the model replica may need from the client (trace context, request id); the rest stay here.
FORWARDED_HEADERS = ("traceparent", "tracestate", "x-request-id")


def plan_headers(plan: Plan) -> dict[str, str]:
    d = plan.decision
    headers = {"x-serve-graph-model": d.model, "x-serve-graph-route": d.route}
    if plan.classification is not None:
        headers["x-serve-graph-category"] = plan.classification.category
        headers["x-serve-graph-confidence"] = f"{plan.classification.confidence:.3f}"
    if plan.budget is not None:
        headers["x-serve-graph-thinking-budget"] = str(plan.budget.tokens)
        headers["x-serve-graph-thinking-budget-source"] = plan.budget.source
    return headers


def thinking_report(plan: Plan, usage: Any) -> dict[str, Any]:
    """Our `serve_graph` block in the response: the decision, and whether the budget cut thinking.

    vLLM counts the newline after a pre-opened `<think>` as a thinking token and forces `</think>`
    when the count reaches the budget, so a cut shows as reasoning_tokens >= budget - 1.
    """
    d = plan.decision
    report: dict[str, Any] = {"model": d.model, "route": d.route, "reason": d.reason}
    if plan.classification is not None:
        report["category"] = plan.classification.category
        report["confidence"] = round(plan.classification.confidence, 4)
    if plan.budget is not None:
        details = (usage or {}).get("completion_tokens_details") or {}
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        report["thinking_budget"] = plan.budget.tokens
        report["thinking_budget_source"] = plan.budget.source
        report["thinking_budget_capped_by"] = plan.budget.capped_by
        report["reasoning_tokens"] = reasoning
        report["thinking_truncated"] = bool(
            plan.budget.tokens > 0 and reasoning is not None and reasoning >= plan.budget.tokens - 1
        )
    return report


def annotate_usage_packet(packet: str, plan: Plan) -> tuple[str, dict[str, Any] | None]:
    """Add our report to the stream's final usage chunk (only it carries `usage`)."""
    out, report = [], None
    for line in packet.split("\n"):
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                report = chunk["serve_graph"] = thinking_report(plan, chunk["usage"])
                line = "data: " + json.dumps(chunk)
        out.append(line)
    return "\n".join(out), report


def _trace_header(span: Any) -> dict[str, str]:
    """`x-serve-graph-trace-id`: lets an operator jump from a response to its trace."""
    ctx = span.get_span_context()
    return {"x-serve-graph-trace-id": format(ctx.trace_id, "032x")} if ctx.is_valid else {}


def as_api_error(e: Exception) -> APIError:
    """Every failure of the request path, in one error type (and so in OpenAI's shape)."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, RoutingError):
        return APIError(e.status, e.message, param=e.param, code=e.code)
    if isinstance(e, BudgetError):
        return APIError(400, str(e), param=e.param, code="invalid_value")
    logger.exception("request failed")  # a bug or a dead replica: logged, still OpenAI's shape
    return APIError(500, f"internal error: {type(e).__name__}", code="internal_error")


def _raise_if_error(item: Any) -> None:
    """The engine reports request errors (e.g. max_tokens beyond the context) as an
    ErrorResponse item; give the client its status in our error shape."""
    first = item[0] if isinstance(item, list) and item else item
    err = getattr(first, "error", None)
    if err is not None and hasattr(err, "message"):
        # vLLM names types after its exception classes; clients expect OpenAI's, derived from status.
        raise APIError(int(getattr(err, "code", 400) or 400), err.message, param=getattr(err, "param", None))


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


_USAGE = re.compile(r'"usage":\s*\{')  # only the final usage chunk has a non-null usage object


async def _sse(
    first: Any, rest: AsyncIterator[Any], plan: Plan, on_done: Callable[[dict[str, Any] | None], None]
) -> AsyncIterator[str]:
    """OpenAI SSE: every chunk as `data: {json}`, closed by exactly one `data: [DONE]`.
    `on_done` gets our report (from the usage chunk, when the client asked for usage) at the end."""
    done = False
    report: dict[str, Any] | None = None
    try:
        async for item in _prepend(first, rest):
            packet = sse_packet(item)
            if _USAGE.search(packet):
                packet, report = annotate_usage_packet(packet, plan)
            done = done or packet.rstrip().endswith("data: [DONE]")
            yield packet
        if not done:
            yield "data: [DONE]\n\n"
    finally:
        on_done(report)


# Defined last: serve.ingress captures the class when decorated, so every helper it uses must
# already exist at that point.
@serve.deployment(name="Router")
@serve.ingress(app)
class Router:
    def __init__(self, profile: dict[str, Any], handles: dict[str, DeploymentHandle]) -> None:
        app_name = serve.get_replica_context().app_name
        self._setup(profile, handles, lambda: read_serve_status(app_name), RouterMetrics())

    def _setup(self, profile: dict[str, Any], handles: dict[str, Any],
               probe: Callable[[], dict[str, tuple[str, int]]], metrics: RouterMetrics) -> None:
        """Everything but the Serve context, so a harness can build a router around fake handles."""
        self.profile = ResolvedProfile.model_validate(profile)
        self._handles = {m: h.options(stream=True) for m, h in handles.items()}
        # Trained (or loaded from cache) once per replica, with the operator's example prompts.
        self.classifier: Classifier = build_classifier(self.profile.examples)
        tracing.setup_tracing(tracing.ROUTER_SERVICE, self.profile.tracing)
        self.metrics = metrics
        self.health = HealthTracker(
            {m.id: (handles[m.id].deployment_name, m.autoscaling.min_replicas) for m in self.profile.models},
            probe=probe,
        )

    async def _ensure_started(self) -> None:
        self.health.start()

    # ---- endpoints -------------------------------------------------------------------------

    @app.get("/v1/models")
    async def models(self) -> JSONResponse:
        return JSONResponse(model_list(self.profile))

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        await self._ensure_started()
        await self.health.refresh()
        body = {
            "status": "ok" if self.health.serving else "unavailable",
            "models": {
                m: {"ready": h.ready, "running_replicas": h.running, "min_replicas": h.min_replicas,
                    "deployment": h.deployment, "status": h.status}
                for m, h in self.health.snapshot.items()
            },
        }
        return JSONResponse(body, status_code=200 if self.health.serving else 503)

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Response:
        return await self._handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._handle(request, "completions")

    # ---- the request path ------------------------------------------------------------------

    async def _handle(self, request: Request, kind: str) -> Response:
        """One request, under one SERVER span that continues the client's traceparent; the span
        ends here for JSON and errors, or when the stream ends."""
        await self._ensure_started()
        started = time.perf_counter()
        plan: Plan | None = None
        with tracing.server_span(f"router.{kind}", request.headers, end_on_exit=False) as root:
            try:
                data = await read_json_object(request)
                body = self._parse(kind, data)
                plan = self._plan(kind, data)
                body.model = plan.decision.model
                if plan.budget is not None:
                    apply_thinking(body, self._spec(plan.decision.model), plan.budget.tokens)
                tracing.record_decision(root, decision=plan.decision, classification=plan.classification,
                                        budget=plan.budget)
                return await self._call(kind, body, plan, request, root, started)
            except Exception as e:
                err = as_api_error(e)
                tracing.record_error(root, e if err.status >= 500 else str(err.status), err.message)
                root.end()
                self._observe(plan, err.status, started)
                return err.response(headers=_trace_header(root))

    def _observe(self, plan: Plan | None, status: int, started: float, ttft_s: float | None = None,
                 report: dict[str, Any] | None = None) -> None:
        c = plan.classification if plan else None
        self.metrics.observe_request(
            c.category if c else None, plan.decision.model if plan else None, plan.decision.route if plan else None,
            status, time.perf_counter() - started, ttft_s,
            reasoning_tokens=(report or {}).get("reasoning_tokens"),
            truncated=bool((report or {}).get("thinking_truncated")),
            budget_tokens=plan.budget.tokens if plan and plan.budget else None,
        )

    def _spec(self, model_id: str) -> ModelSpec:
        spec = self.profile.model(model_id)
        assert spec is not None, model_id  # decide() only returns catalog ids
        return spec

    def _parse(self, kind: str, data: dict[str, Any]) -> Any:
        from ray.llm._internal.serve.core.configs.openai_api_models import (
            ChatCompletionRequest,
            CompletionRequest,
        )

        if kind == "chat":
            if not isinstance(data.get("messages"), list) or not data["messages"]:
                raise APIError(400, "messages: a non-empty list of messages is required", param="messages",
                               code="invalid_value")
            body = parse_request(ChatCompletionRequest, data)
            # Keep the client's plain JSON messages: validated above, and unlike pydantic's lazy
            # iterators for content parts they pickle across the handle call.
            body.messages = data["messages"]
            return body
        if "prompt" not in data:
            raise APIError(400, "prompt: field required", param="prompt", code="invalid_value")
        return parse_request(CompletionRequest, data)

    def _plan(self, kind: str, data: dict[str, Any]) -> Plan:
        """classify and route, each under its own span (a failure is recorded on the one that failed)."""
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise APIError(400, "model: must be a string", param="model", code="invalid_value")
        with tracing.child_span("classify") as span:
            classification = classify_request(self.classifier, kind, data)
            tracing.record_decision(span, classification=classification)
        if classification is not None:
            self.metrics.observe_classifier(classification.latency_ms)
        with tracing.child_span("route") as span:
            plan = plan_request(kind, data, self.profile, classification, self.health.healthy)
            tracing.record_decision(span, decision=plan.decision, budget=plan.budget)
        self.metrics.observe_decision(plan.decision.route, plan.decision.model, plan.decision.skipped)
        return plan

    async def _call(self, kind: str, body: Any, plan: Plan, request: Request, root: Any, started: float) -> Response:
        """The model call under a CLIENT span; its W3C context travels in RawRequestInfo.headers, so
        the replica's span is its child whether or not Serve's own tracing is on."""
        from ray.llm._internal.serve.core.protocol import RawRequestInfo

        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
        handle = self._handles[plan.decision.model]
        with tracing.client_span(plan.decision.model, body, end_on_exit=False) as call:
            headers.update(tracing.inject())  # parent: our client span, not the client's
            stream = getattr(handle, kind).remote(body, RawRequestInfo(headers=headers))
            try:
                async with asyncio.timeout(self.profile.router.request_timeout_s):
                    first = await stream.__anext__()
            except TimeoutError:
                raise APIError(408, "the model did not answer in time", code="timeout") from None
            except StopAsyncIteration:
                raise APIError(503, f"model {plan.decision.model} returned nothing", code="empty_response") from None
            tracing.record_first_chunk(call)
            _raise_if_error(first)
        ttft_s = time.perf_counter() - started
        out_headers = {**plan_headers(plan), **_trace_header(root)}
        if not getattr(body, "stream", False):
            content = first.model_dump() if hasattr(first, "model_dump") else first
            report = content["serve_graph"] = thinking_report(plan, content.get("usage"))
            tracing.record_response(call, content)
            tracing.set_attributes(root, {tracing.SG_THINKING_TRUNCATED: report.get("thinking_truncated")})
            call.end()
            root.end()
            self._observe(plan, 200, started, None, report)  # TTFT is a streaming metric
            return JSONResponse(content=content, headers=out_headers)
        tracing.record_stream_chunk(call, first)
        inner = tracing.wrap_stream(call, stream, first_chunk_seen=True)
        sse = _sse(first, inner, plan, lambda report: self._observe(plan, 200, started, ttft_s, report))
        outer = tracing.wrap_stream(root, sse, first_chunk_seen=True, observe=False)
        return StreamingResponse(outer, media_type="text/event-stream", headers=out_headers)

"""The router deployment: the one HTTP ingress in front of every model.

Per request, one `RequestScope` (router/scope.py) owns the spans, the metrics row and the error
mapping: parse (400 on bad input) -> plan (classify, budget, decide: pure, router/plan.py) ->
call the candidates in order until one gives a first item (router/upstream.py, failover before the
first byte) -> JSON or SSE, with headers naming what was decided and what was passed over.
It holds handles, not engines, so it reserves no CPU and never waits behind an engine for a slot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from serve_graph import tracing
from serve_graph.classifier import Classifier, build_classifier
from serve_graph.config import ResolvedProfile
from serve_graph.metrics import RouterMetrics
from serve_graph.router.api import APIError, model_list, parse_request, read_json_object
from serve_graph.router.errors import InvalidRequest
from serve_graph.router.health import HealthTracker, read_serve_status
from serve_graph.router.plan import Plan, apply_thinking, classify_request, plan_for_model, plan_request
from serve_graph.router.scope import CLIENT_CLOSED, RequestScope
from serve_graph.router.serve_view import RayServeView, ServeView
from serve_graph.router.upstream import Upstream

logger = logging.getLogger("serve_graph.router")

app = FastAPI(title="serve_graph router", docs_url=None, redoc_url=None)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown paths and wrong methods answer in OpenAI's error shape too, not FastAPI's."""
    return APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None).response()

# Headers the model replica may need from the client (trace context, request id); the rest stay here.
FORWARDED_HEADERS = ("traceparent", "tracestate", "x-request-id")

Kind = Literal["chat", "completions"]


def _no_pending(profile: ResolvedProfile) -> dict[str, str]:
    return {}


def _pending_models(profile: ResolvedProfile, app_name: str) -> dict[str, str]:
    from serve_graph.app import pending_models

    return pending_models(profile, app_name)


# Defined last: serve.ingress captures the class when decorated, so every helper it uses must
# already exist at that point.
@serve.deployment(name="Router")
@serve.ingress(app)
class Router:
    def __init__(self, profile: dict[str, Any], handles: dict[str, DeploymentHandle[Any]]) -> None:
        app_name = serve.get_replica_context().app_name
        probe = lambda: read_serve_status(app_name)  # noqa: E731
        pending = functools.partial(_pending_models, app_name=app_name)
        self._setup(profile, handles, probe, RouterMetrics(), RayServeView(handles, probe), pending)

    def _setup(self, profile: dict[str, Any], handles: dict[str, Any],
               probe: Callable[[], dict[str, tuple[str, int]]], metrics: RouterMetrics, view: ServeView,
               pending: Callable[[ResolvedProfile], dict[str, str]] = _no_pending) -> None:
        """Everything but the Serve context, so a harness can build a router around fake handles."""
        self.profile = ResolvedProfile.model_validate(profile)
        # Trained (or loaded from cache) once per replica, with the operator's example prompts.
        self.classifier: Classifier = build_classifier(self.profile.examples)
        tracing.setup_tracing(tracing.ROUTER_SERVICE, self.profile.tracing)
        self.metrics = metrics
        self.health = HealthTracker(
            {m.id: (handles[m.id].deployment_name, m.autoscaling.min_replicas) for m in self.profile.models},
            probe=probe,
        )
        self.upstream = Upstream(handles, view, self.health, self.profile.router)
        self._pending_probe = pending  # models Serve is still starting, and why
        self._pending_logged: dict[str, str] = {}

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
        models: dict[str, dict[str, Any]] = {
            m: {"ready": h.ready, "running_replicas": h.running, "min_replicas": h.min_replicas,
                "deployment": h.deployment, "status": h.status}
            for m, h in self.health.snapshot.items()
        }
        if not all(h.ready for h in self.health.snapshot.values()):
            for m, why in (await self._pending()).items():
                models[m]["pending"] = why
        body = {"status": "ok" if self.health.serving else "unavailable", "models": models}
        return JSONResponse(body, status_code=200 if self.health.serving else 503)

    async def _pending(self) -> dict[str, str]:
        """Models Serve is still trying to start, and why (placement, Serve's message); each new
        reason is logged once. A failing lookup only costs the detail, never the probe."""
        try:
            pending = await asyncio.to_thread(self._pending_probe, self.profile)
        except Exception as e:
            logger.warning("pending-model lookup failed: %s", e)
            return {}
        for m, why in pending.items():
            if self._pending_logged.get(m) != why:
                logger.warning("model %s is pending: %s", m, why)
        self._pending_logged = dict(pending)
        return pending

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Response:
        return await self._handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._handle(request, "completions")

    # ---- the request path ------------------------------------------------------------------

    async def _handle(self, request: Request, kind: Kind) -> Response:
        await self._ensure_started()
        scope = RequestScope(kind, request.headers, self.metrics)
        try:
            with scope.active():
                data = await read_json_object(request)
                body = self._parse(kind, data)
                plan = self._plan(kind, data, scope)
                served = await self.upstream.call(
                    scope, kind, plan.decision.candidates or (plan.decision.model,),
                    lambda model: self._prepare(kind, data, body, plan, model, scope),
                    {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS},
                )
                scope.routed(served.plan)
            if getattr(body, "stream", False):
                return scope.respond_stream(served.span, served.first, served.rest, served.cancel)
            first = served.first
            return scope.respond_json(served.span, first.model_dump() if hasattr(first, "model_dump") else first)
        except asyncio.CancelledError:  # the client hung up while we waited for a model
            scope.finish(CLIENT_CLOSED)
            raise
        except Exception as e:
            return scope.fail(e)

    def _parse(self, kind: Kind, data: dict[str, Any]) -> Any:
        from ray.llm._internal.serve.core.configs.openai_api_models import (
            ChatCompletionRequest,
            CompletionRequest,
        )

        if kind == "chat":
            if not isinstance(data.get("messages"), list) or not data["messages"]:
                raise InvalidRequest("messages: a non-empty list of messages is required", param="messages")
            body = parse_request(ChatCompletionRequest, data)
            # Keep the client's plain JSON messages: validated above, and unlike pydantic's lazy
            # iterators for content parts they pickle across the handle call.
            body.messages = data["messages"]
            return body
        if "prompt" not in data:
            raise InvalidRequest("prompt: field required", param="prompt")
        return parse_request(CompletionRequest, data)

    def _plan(self, kind: Kind, data: dict[str, Any], scope: RequestScope) -> Plan:
        """classify, then route, each under its own span (a failure is recorded on the one that
        failed); the route span stays open for the failover that follows."""
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequest("model: must be a string", param="model")
        with tracing.child_span("classify") as span:
            classification = classify_request(self.classifier, kind, data)
            tracing.record_decision(span, classification=classification)
        if classification is not None:
            self.metrics.observe_classifier(classification.latency_ms)
        with scope.route_span() as span:
            plan = plan_request(kind, data, self.profile, classification, self.upstream.healthy())
            tracing.record_decision(span, decision=plan.decision, budget=plan.budget)
        scope.plan = plan
        return plan

    def _prepare(self, kind: Kind, data: dict[str, Any], body: Any, plan: Plan, model: str,
                 scope: RequestScope) -> tuple[Plan, Any]:
        """The plan and the engine request for one candidate: the budget is resolved for that
        model (its context, whether it can think), on a fresh copy of the client's body."""
        if model != plan.decision.model:
            passed = ", ".join(str(f) for f in scope.fallbacks) or "none"
            why = f"failed over to {model} (passed over: {passed})"
            plan = plan_for_model(plan, kind, data, self.profile, model, why)
        scope.plan = plan
        call_body = body.model_copy()
        call_body.model = model
        if plan.budget is not None:
            spec = self.profile.model(model)
            assert spec is not None  # candidates are catalog ids
            apply_thinking(call_body, spec, plan.budget.tokens)
        return plan, call_body

"""`RequestScope`: the one object per request that owns its side effects.

Opened once per request (the root SERVER span continuing the client's traceparent, the clock),
it owns every span the request opens (`route`, one CLIENT span per model call), the fallbacks,
the error mapping and the one metrics row, and it is finished exactly once on every exit:

- JSON: `respond_json`; SSE: `stream`, which finishes in its `finally` (normal end, client
  hang-up, error);
- any error: `fail(exc)` maps it through the error table to OpenAI's body;
- a client hang-up while waiting: `finish(CLIENT_CLOSED)`.

`finish` is idempotent: one metrics row, every open span ended (children first), whatever happened.
A plain object, not middleware: Starlette's BaseHTTPMiddleware would wrap every streamed body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Span, SpanKind, use_span
from starlette.responses import JSONResponse, Response, StreamingResponse

from serve_graph import tracing
from serve_graph.metrics import RouterMetrics
from serve_graph.router.api import APIError, sse_packet
from serve_graph.router.errors import ServeGraphError
from serve_graph.router.failover import Fallback, fallback_header
from serve_graph.router.plan import Plan
from serve_graph.router.report import USAGE, annotate_usage_packet, plan_headers, thinking_report

logger = logging.getLogger("serve_graph.router")

CLIENT_CLOSED = 499  # status recorded when the client hung up (nginx's convention)
FALLBACK_HEADER = "x-serve-graph-fallback"
# On the route span and on each call span: the candidates passed over so far, as `model:reason`.
SG_FALLBACK = tracing.SG_FALLBACK
DONE = "data: [DONE]\n\n"


class RequestScope:
    def __init__(self, kind: str, headers: Mapping[str, str], metrics: RouterMetrics,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._metrics = metrics
        self.started = clock()
        self.root: Span = tracing.start_span(f"router.{kind}", kind=SpanKind.SERVER, headers=headers)
        self._spans: list[Span] = [self.root]  # every span of this request; finish() ends what is open
        self._route: Span | None = None
        self.plan: Plan | None = None
        self.fallbacks: list[Fallback] = []
        self.ttft_s: float | None = None
        self.served: str | None = None  # the model that got the first byte
        self.status: int | None = None  # set once, by finish()

    @property
    def finished(self) -> bool:
        return self.status is not None

    # ---- spans --------------------------------------------------------------------------------

    @contextmanager
    def active(self) -> Iterator[None]:
        """The root span is current inside (children attach to it)."""
        with _current(self.root):
            yield

    @contextmanager
    def route_span(self) -> Iterator[Span]:
        """The `route` span: decision and failover. It stays open after the block until `routed`
        (or `finish`) so that it can say which candidates were passed over and why."""
        with tracing.child_span("route", end_on_exit=False) as span:  # an error in the block ends it
            self._route = span
            self._spans.append(span)
            yield span

    def routed(self, plan: Plan) -> None:
        """The model that got the first byte: on the route and root spans, and route ended."""
        self.plan = plan
        self.served = plan.decision.model
        fallback = self._fallback_attr()
        if self._route is not None:
            tracing.record_decision(self._route, decision=plan.decision, budget=plan.budget)
            tracing.set_attributes(self._route, {SG_FALLBACK: fallback})
            _end(self._route)
        tracing.record_decision(self.root, decision=plan.decision, classification=plan.classification,
                                budget=plan.budget)
        tracing.set_attributes(self.root, {SG_FALLBACK: fallback})

    @contextmanager
    def call_span(self, model: str, body: Any) -> Iterator[Span]:
        """A CLIENT span for one model call, child of the root and current inside the block (so
        `tracing.inject()` there gives its carrier). It stays open: `call_failed` or `finish` ends it."""
        with _current(self.root), tracing.client_span(model, body, end_on_exit=False) as span:
            self._spans.append(span)
            tracing.set_attributes(span, {SG_FALLBACK: self._fallback_attr()})
            yield span

    def skipped(self, fallbacks: tuple[Fallback, ...]) -> None:
        self.fallbacks.extend(fallbacks)

    def call_failed(self, span: Span, fallback: Fallback, exc: BaseException) -> None:
        """A call that failed before its first byte; the request moves on to the next candidate."""
        self.fallbacks.append(fallback)
        tracing.set_attributes(span, {SG_FALLBACK: self._fallback_attr()})
        tracing.record_error(span, fallback.reason, str(exc))
        _end(span)

    def first_item(self, span: Span) -> None:
        self.ttft_s = self._clock() - self.started
        tracing.record_first_chunk(span)

    # ---- answers ------------------------------------------------------------------------------

    def _fallback_list(self) -> list[str]:
        return [str(f) for f in self.fallbacks]

    def _fallback_attr(self) -> tuple[str, ...] | None:
        """The `serve_graph.fallback` span attribute: `model:reason` so far (None: no attribute)."""
        return tuple(self._fallback_list()) or None

    def headers(self) -> dict[str, str]:
        out = plan_headers(self.plan) if self.plan is not None else {}
        if self.fallbacks:
            out[FALLBACK_HEADER] = fallback_header(self.fallbacks)
        ctx = self.root.get_span_context()
        if ctx.is_valid:
            out["x-serve-graph-trace-id"] = format(ctx.trace_id, "032x")
        return out

    def fail(self, exc: BaseException) -> Response:
        """Any error before the response started, as OpenAI's error body with its status."""
        err = self._error(exc)
        self.finish(err.status)
        headers = self.headers()
        for key in [k for k in headers if k not in (FALLBACK_HEADER, "x-serve-graph-trace-id")]:
            del headers[key]  # the decision headers describe a response that did not happen
        return err.response(headers=headers)

    def respond_json(self, call: Span, content: dict[str, Any]) -> Response:
        assert self.plan is not None
        self.ttft_s = None  # time to first chunk is a streaming metric
        report = content["serve_graph"] = thinking_report(self.plan, content.get("usage"), self._fallback_list())
        tracing.record_response(call, content)
        tracing.set_attributes(self.root, {tracing.SG_THINKING_TRUNCATED: report.get("thinking_truncated")})
        self.finish(200, report)
        return JSONResponse(content=content, headers=self.headers())

    def respond_stream(self, call: Span, first: Any, rest: AsyncIterator[Any],
                       cancel: Callable[[], None]) -> Response:
        return StreamingResponse(self.stream(call, first, rest, cancel), media_type="text/event-stream",
                                 headers=self.headers())

    async def stream(self, call: Span, first: Any, rest: AsyncIterator[Any],
                     cancel: Callable[[], None]) -> AsyncIterator[str]:
        """OpenAI SSE: every item as `data: {json}`, closed by exactly one `data: [DONE]`. A failure
        after the first byte is not retried: it ends the stream with an error event, then [DONE].
        A client hang-up cancels the model call. Finishes the scope in every case."""
        observer = tracing.StreamObserver(call) if call.is_recording() else None
        status, report, done = 200, None, False
        try:
            item = first
            while True:
                if observer is not None:
                    observer.observe(item)
                packet = sse_packet(item)
                if USAGE.search(packet):
                    assert self.plan is not None
                    packet, report = annotate_usage_packet(packet, self.plan, self._fallback_list())
                done = done or packet.rstrip().endswith("data: [DONE]")
                yield packet
                try:
                    item = await rest.__anext__()
                except StopAsyncIteration:
                    break
            if not done:
                yield DONE
        except (asyncio.CancelledError, GeneratorExit):
            status = CLIENT_CLOSED
            cancel()
            raise
        except Exception as e:
            err = self._error(e, mid_stream=True)
            status = err.status
            yield f"data: {json.dumps(err.body())}\n\n"
            yield DONE
        finally:
            if observer is not None:
                call.set_attribute(tracing.SG_CHUNKS, observer.chunks)
                observer.finish()
            self.finish(status, report)

    # ---- the end ------------------------------------------------------------------------------

    def finish(self, status: int, report: dict[str, Any] | None = None) -> None:
        """Record the one metrics row and end every open span (idempotent: the first call wins)."""
        if self.status is not None:
            return
        self.status = status
        plan = self.plan
        try:
            if status == CLIENT_CLOSED:
                for span in self._spans:
                    tracing.set_attributes(span, {tracing.SG_CANCELLED: True})
            c = plan.classification if plan else None
            self._metrics.observe_request(
                c.category if c else None, plan.decision.model if plan else None,
                plan.decision.route if plan else None, status, self._clock() - self.started, self.ttft_s,
                reasoning_tokens=(report or {}).get("reasoning_tokens"),
                truncated=bool((report or {}).get("thinking_truncated")),
                budget_tokens=plan.budget.tokens if plan and plan.budget else None,
            )
            if plan is not None:
                self._metrics.observe_decision(plan.decision.route, plan.decision.model)
            for f in self.fallbacks:
                self._metrics.observe_fallback(f.model, self.served, f.reason)
        finally:
            for span in reversed(self._spans):
                _end(span)

    def _error(self, exc: BaseException, *, mid_stream: bool = False) -> APIError:
        """Map `exc`, log what is not the client's fault, record it on the root span."""
        err = APIError.of(exc)
        if not isinstance(exc, (ServeGraphError, APIError)):
            logger.error("request failed%s", " mid-stream" if mid_stream else "", exc_info=exc)
        elif err.status >= 500:
            logger.warning("request failed%s: %s", " mid-stream" if mid_stream else "", err.message)
        tracing.record_error(self.root, exc if err.status >= 500 else str(err.status), err.message)
        return err


@contextmanager
def _current(span: Span) -> Iterator[None]:
    if not tracing.is_enabled():
        yield
        return
    with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        yield


def _end(span: Span) -> None:
    """End a span once (an ended SDK span stops recording; the no-op span never records)."""
    if span.is_recording():
        span.end()

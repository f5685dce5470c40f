"""Spans: SERVER spans that continue an inbound traceparent, INTERNAL children, CLIENT spans for
model calls, and streams whose span ends with the stream.

Every helper short-circuits when tracing is off (`INVALID_SPAN`, nothing allocated). An exception
ends the span it escapes from with the error recorded; a cancellation is recorded as
`serve_graph.cancelled`, not as an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, use_span

from serve_graph.tracing import runtime
from serve_graph.tracing.attributes import (
    StreamObserver,
    clean,
    operation_name,
    record_error,
    record_first_chunk,
    request_attributes,
    set_attributes,
)
from serve_graph.tracing.names import SG_CANCELLED, SG_CHUNKS
from serve_graph.tracing.propagation import W3C, replace_trace_headers, trace_headers

T = TypeVar("T")


def start_span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, headers: Mapping[str, str] | None = None,
               attributes: Mapping[str, Any] | None = None) -> Span:
    """Start (not activate) a span; parent = the traceparent in `headers` if there is one, else the
    current span (e.g. Ray Serve's own request span when Serve tracing is on), else a new trace.

    For spans that outlive a `with` block (streams): end them with `wrap_stream` or `span.end()`.
    """
    state = runtime.STATE
    if not state.enabled:
        return INVALID_SPAN
    carrier = trace_headers(headers)
    ctx = W3C.extract(carrier) if carrier else None
    span = state.tracer.start_span(name, context=ctx, kind=kind)
    if attributes:
        set_attributes(span, attributes)
    return span


def _finish_with_exception(span: Span, exc: BaseException) -> None:
    """End a span left by an exception: cancellation is not a server error, everything else is."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        set_attributes(span, {SG_CANCELLED: True})
    else:
        record_error(span, exc)
    span.end()


@contextmanager
def _activate(span: Span, end_on_exit: bool) -> Iterator[Span]:
    try:
        with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield span
    except BaseException as exc:
        _finish_with_exception(span, exc)
        raise
    if end_on_exit:
        span.end()


@contextmanager
def server_span(name: str, headers: Mapping[str, str] | None = None, *,
                attributes: Mapping[str, Any] | None = None, end_on_exit: bool = True) -> Iterator[Span]:
    """SERVER span continuing the inbound traceparent (else the current span, else a new trace),
    made current.

    An exception ends the span with the error recorded. With `end_on_exit=False` the span stays
    open after the block (hand it to `wrap_stream` for a streamed response).
    """
    if not runtime.STATE.enabled:
        yield INVALID_SPAN
        return
    span = start_span(name, kind=SpanKind.SERVER, headers=headers or {}, attributes=attributes)
    with _activate(span, end_on_exit):
        yield span


@contextmanager
def child_span(name: str, attributes: Mapping[str, Any] | None = None, *,
               end_on_exit: bool = True) -> Iterator[Span]:
    """INTERNAL span under the current one (classify, budget, decide ...)."""
    if not runtime.STATE.enabled:
        yield INVALID_SPAN
        return
    span = start_span(name, attributes=attributes)
    with _activate(span, end_on_exit):
        yield span


@contextmanager
def client_span(model: str, body: Any, *, operation: str | None = None,
                end_on_exit: bool = True) -> Iterator[Span]:
    """CLIENT span for the call to a model (`{operation} {model}`), with gen_ai.request.*.

    `body` is a vLLM ChatCompletionRequest/CompletionRequest (or a dict with the same fields).
    `inject()` inside the block gives the carrier whose parent is this span.
    """
    if not runtime.STATE.enabled:
        yield INVALID_SPAN
        return
    op = operation or operation_name(body)
    span = start_span(f"{op} {model}", kind=SpanKind.CLIENT)
    if span.is_recording():
        span.set_attributes(clean(request_attributes(body, model=model, operation=op)))
    with _activate(span, end_on_exit):
        yield span


async def wrap_stream(span: Span, stream: AsyncIterator[T], *, first_chunk_seen: bool = False,
                      observe: bool = True) -> AsyncIterator[T]:
    """Yield `stream` unchanged and end `span` when it ends: time to first chunk, finish reasons,
    usage, errors (status ERROR) and cancellation (`serve_graph.cancelled`, not an error).

    A cancellation thrown into this generator (Serve does that on client disconnect) is thrown on
    into `stream`, so the engine's own abort handling still runs.
    """
    obs = StreamObserver(span) if observe and span.is_recording() else None
    try:
        while True:
            try:
                item = await stream.__anext__()
            except StopAsyncIteration:
                break
            if not first_chunk_seen:
                record_first_chunk(span)
                first_chunk_seen = True
            if obs is not None:
                obs.observe(item)
            yield item
    except asyncio.CancelledError:
        set_attributes(span, {SG_CANCELLED: True})
        athrow = getattr(stream, "athrow", None)
        if athrow is not None:
            try:
                await athrow(asyncio.CancelledError())
            except (StopAsyncIteration, asyncio.CancelledError, RuntimeError):
                pass
        raise
    except GeneratorExit:
        set_attributes(span, {SG_CANCELLED: True})
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    except BaseException as exc:
        record_error(span, exc)
        raise
    finally:
        if obs is not None:
            span.set_attribute(SG_CHUNKS, obs.chunks)
            obs.finish()
        span.end()


async def traced_call(name: str, headers: Mapping[str, str] | None,
                      call: Callable[[dict[str, str]], Awaitable[AsyncIterator[T]]], *,
                      attributes: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
                      ) -> AsyncIterator[T]:
    """Run `call(headers)` (which returns a stream) under a SERVER span that continues `headers`'
    traceparent, passing `call` the same headers re-pointed at this span (so the callee's spans,
    e.g. vLLM's `llm_request`, are its children). The span ends when the stream ends.

    `attributes` may be a callable, evaluated only when the span is sampled.
    Tracing off: `call(headers)` unchanged, nothing else.
    """
    if not runtime.STATE.enabled:
        return await call(dict(headers or {}))
    span = start_span(name, kind=SpanKind.SERVER, headers=headers or {})
    if attributes is not None and span.is_recording():
        set_attributes(span, attributes() if callable(attributes) else attributes)
    with _activate(span, end_on_exit=False):
        stream = await call(replace_trace_headers(headers))
    return wrap_stream(span, stream)

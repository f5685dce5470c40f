"""W3C trace context across process boundaries.

Context crosses Ray handle calls as an explicit carrier (`inject()` -> the headers of
`RawRequestInfo` -> `extract()`), so one trace holds whatever Ray Serve's own tracing setting is.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from serve_graph.tracing import runtime

TRACE_HEADERS = ("traceparent", "tracestate")
W3C = TraceContextTextMapPropagator()


def trace_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """traceparent/tracestate from any header mapping, whatever the key case."""
    if not headers:
        return {}
    return {k.lower(): v for k, v in headers.items() if k.lower() in TRACE_HEADERS}


def extract(headers: Mapping[str, str] | None) -> Context:
    """The remote parent context carried by `traceparent`/`tracestate` (empty Context if none)."""
    return W3C.extract(trace_headers(headers))


def inject(ctx: Context | None = None) -> dict[str, str]:
    """A carrier ({traceparent, tracestate}) for `ctx` or the current span; {} when off.

    Merge it over forwarded client headers: when tracing is off the client's own traceparent
    passes through unchanged, when on ours (a child of it) replaces it.
    """
    if not runtime.STATE.enabled:
        return {}
    carrier: dict[str, str] = {}
    W3C.inject(carrier, context=ctx)
    return carrier


def replace_trace_headers(headers: Mapping[str, str] | None, ctx: Context | None = None) -> dict[str, str]:
    """A copy of `headers` whose trace context is `ctx`/the current span's (others unchanged).
    Tracing off: an unchanged copy (the caller's context passes through)."""
    if not runtime.STATE.enabled:
        return dict(headers or {})
    out = {k: v for k, v in (headers or {}).items() if k.lower() not in TRACE_HEADERS}
    out.update(inject(ctx))
    return out

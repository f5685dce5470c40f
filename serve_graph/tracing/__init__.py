"""OpenTelemetry tracing for serve_graph: one trace from the client through the router and the
model replica down to vLLM's own `llm_request` span.

Modules, each with one job:
- `names`: every attribute name (GenAI ones from the semantic-conventions package, ours under
  `serve_graph.*`), service names and env var names;
- `settings`: pure resolution of env + the `tracing:` section (`resolve`, `env_for_workers`,
  `engine_kwargs_for_tracing`); env wins field by field, the sampler is always parent-based;
- `runtime`: the one module with global state (`setup_tracing`, the provider, `force_flush`);
- `propagation`: W3C carriers across Ray handle calls (`inject`, `extract`, `replace_trace_headers`);
- `attributes`: GenAI request/response attributes, the router's decision, errors;
- `spans`: server/child/client spans, streams whose span ends with the stream, `traced_call`.

Tracing off costs nothing measurable: `setup_tracing` installs nothing and every helper
short-circuits on one bool. Use it as `from serve_graph import tracing; tracing.server_span(...)`.
"""

from serve_graph.config import TracingSettings
from serve_graph.tracing.attributes import (
    StreamObserver,
    operation_name,
    record_decision,
    record_error,
    record_first_chunk,
    record_response,
    request_attributes,
    set_attributes,
)
from serve_graph.tracing.names import *  # noqa: F403 - every name, as `tracing.SG_MODEL` etc.
from serve_graph.tracing.names import __all__ as _names
from serve_graph.tracing.propagation import extract, inject, replace_trace_headers
from serve_graph.tracing.runtime import capture_content, force_flush, is_enabled, setup_tracing, shutdown
from serve_graph.tracing.settings import ResolvedTracing, engine_kwargs_for_tracing, env_for_workers, resolve
from serve_graph.tracing.spans import child_span, client_span, server_span, start_span, traced_call, wrap_stream

__all__ = [
    *_names,
    "ResolvedTracing",
    "StreamObserver",
    "TracingSettings",
    "capture_content",
    "child_span",
    "client_span",
    "engine_kwargs_for_tracing",
    "env_for_workers",
    "extract",
    "force_flush",
    "inject",
    "is_enabled",
    "operation_name",
    "record_decision",
    "record_error",
    "record_first_chunk",
    "record_response",
    "replace_trace_headers",
    "request_attributes",
    "resolve",
    "server_span",
    "set_attributes",
    "setup_tracing",
    "shutdown",
    "start_span",
    "traced_call",
    "wrap_stream",
]

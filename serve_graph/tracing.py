"""OpenTelemetry tracing for serve_graph: one trace from the client through the router and the
model replica down to vLLM's own `llm_request` span.

Why this shape:
- Configuration is the standard OTel env vars (what every collector/operator already knows), with
  the optional `tracing:` section of models.yaml (`TracingSettings`) filling in what env leaves
  unset. **Env wins, field by field**: env is the per-environment override and it is the only thing
  vLLM's engine processes read, so `env_for_workers()` turns the merged result back into env vars
  for every Ray worker and all processes agree.
- The sampler is always parent-based, so a sampled inbound `traceparent` is honoured (and an
  unsampled one is not) whatever root sampler the operator chose.
- Tracing off costs nothing measurable: `setup_tracing` installs nothing and returns False, every
  helper then short-circuits on one bool (no context extraction, no attribute dicts, no-op span).
  With tracing on, attributes are only built when `span.is_recording()` (i.e. sampled).
- Context crosses Ray handle calls as an explicit W3C carrier (`inject()` -> headers of
  `RawRequestInfo` -> `extract()`), so it works whatever Ray Serve's own tracing setting is.
- Prompt/completion text goes on spans only with `capture_content` (opt-in; it is user data).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer, use_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("serve_graph.tracing")

T = TypeVar("T")

# --------------------------------------------------------------------------------------------------
# Attribute names (one place; GenAI semantic conventions + ours under serve_graph.*)
# --------------------------------------------------------------------------------------------------

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"  # "chat" | "text_completion"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_PROVIDER = "vllm"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # only with capture_content
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # only with capture_content
ERROR_TYPE = "error.type"

SG_CATEGORY = "serve_graph.category"
SG_CONFIDENCE = "serve_graph.confidence"
SG_CLASSIFIER_LATENCY_MS = "serve_graph.classifier.latency_ms"
SG_ROUTE = "serve_graph.route"
SG_CANDIDATES = "serve_graph.candidates"
SG_MODEL = "serve_graph.model"  # the chosen model
SG_REASON = "serve_graph.reason"
SG_SKIPPED = "serve_graph.skipped"  # candidates passed over (fallbacks)
SG_BUDGET = "serve_graph.thinking.budget"
SG_BUDGET_SOURCE = "serve_graph.thinking.budget_source"
SG_BUDGET_CAPPED_BY = "serve_graph.thinking.budget_capped_by"
SG_THINKING_TRUNCATED = "serve_graph.thinking.truncated"
SG_TIME_TO_FIRST_CHUNK_MS = "serve_graph.time_to_first_chunk_ms"
SG_STREAM = "serve_graph.stream"
SG_CHUNKS = "serve_graph.chunks"
SG_CANCELLED = "serve_graph.cancelled"
SG_DEPLOYMENT = "serve_graph.deployment"
SG_REPLICA_ID = "serve_graph.replica.id"
SG_COMPONENT = "serve_graph.component"  # resource attribute: which process kind emitted the span

# Service names of our components (the default `service.name`; OTEL_SERVICE_NAME overrides).
ROUTER_SERVICE = "serve_graph.router"
LLM_SERVER_SERVICE = "serve_graph.llm_server"

# Env vars. The OTEL_* ones are the standard names; SERVE_GRAPH_TRACING_ENABLED carries an explicit
# on/off from the driver to the workers; the content switch is the GenAI instrumentations' name.
ENV_ENABLED = "SERVE_GRAPH_TRACING_ENABLED"
ENV_CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENV_SDK_DISABLED = "OTEL_SDK_DISABLED"
ENV_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_SAMPLER = "OTEL_TRACES_SAMPLER"
ENV_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"

CONTENT_LIMIT = 8192  # characters per captured-content attribute
_TRACE_HEADERS = ("traceparent", "tracestate")
_W3C = TraceContextTextMapPropagator()
# SSE chunks worth parsing when content is not captured: a finish reason, usage, or an error.
_SSE_INTERESTING = re.compile(r'"finish_reason":\s*"|"usage":\s*\{|"error"|"object":\s*"error"')

Protocol = Literal["grpc", "http/protobuf"]


class TracingSettings(BaseModel):
    """The `tracing:` section of models.yaml. Every field is a fallback for the matching env var.

    enabled: None = on iff an OTLP endpoint is configured (env or `endpoint`).
    endpoint: base URL like OTEL_EXPORTER_OTLP_ENDPOINT (`/v1/traces` is appended for
      http/protobuf unless present); for grpc `http://host:4317`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    endpoint: str | None = None
    protocol: Protocol | None = None
    sampler_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    capture_content: bool = False
    service_name: str | None = None


@dataclasses.dataclass(frozen=True)
class ResolvedTracing:
    """Settings after merging env over file: exactly what a process will do."""

    enabled: bool
    explicit: bool  # enabled/disabled on purpose (not just by the presence of an endpoint)
    endpoint: str  # the traces signal endpoint (http: full URL incl. /v1/traces)
    protocol: Protocol
    sampler: Literal["parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"]
    sampler_arg: float | None
    capture_content: bool
    service_name: str | None  # explicit name for every component, else None (component default)


def _env_bool(value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _signal_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def resolve(settings: TracingSettings | None = None, environ: Mapping[str, str] | None = None) -> ResolvedTracing:
    """Merge env (wins) over `settings` (fills in). Pure: no global state touched."""
    env = os.environ if environ is None else environ
    s = settings or TracingSettings()

    proto_raw = env.get(ENV_TRACES_PROTOCOL) or env.get(ENV_PROTOCOL) or s.protocol or "http/protobuf"
    protocol: Protocol
    if proto_raw in ("grpc", "http/protobuf"):
        protocol = proto_raw  # type: ignore[assignment]
    else:
        logger.warning("OTLP protocol %r is not supported here; using http/protobuf", proto_raw)
        protocol = "http/protobuf"

    endpoint_source = env.get(ENV_TRACES_ENDPOINT) or env.get(ENV_ENDPOINT) or s.endpoint
    if env.get(ENV_TRACES_ENDPOINT):
        endpoint = env[ENV_TRACES_ENDPOINT]  # a signal endpoint: used as is (OTel spec)
    elif protocol == "grpc":
        endpoint = env.get(ENV_ENDPOINT) or s.endpoint or "http://localhost:4317"
    else:
        endpoint = _signal_url(env.get(ENV_ENDPOINT) or s.endpoint or "http://localhost:4318")

    explicit = True
    if _env_bool(env.get(ENV_SDK_DISABLED)) or (env.get(ENV_TRACES_EXPORTER, "").strip().lower() == "none"):
        enabled = False
    elif (flag := _env_bool(env.get(ENV_ENABLED))) is not None:
        enabled = flag
    elif s.enabled is not None:
        enabled = s.enabled
    else:
        enabled, explicit = bool(endpoint_source), False

    sampler, arg = _resolve_sampler(env, s.sampler_ratio)
    capture = _env_bool(env.get(ENV_CAPTURE_CONTENT))
    return ResolvedTracing(
        enabled=enabled,
        explicit=explicit,
        endpoint=endpoint,
        protocol=protocol,
        sampler=sampler,
        sampler_arg=arg,
        capture_content=s.capture_content if capture is None else capture,
        service_name=env.get(ENV_SERVICE_NAME) or s.service_name,
    )


def _resolve_sampler(env: Mapping[str, str], ratio: float | None) -> tuple[Any, float | None]:
    """OTEL_TRACES_SAMPLER (any built-in name) mapped to its parent-based form; else the file ratio.

    `traceidratio` becomes `parentbased_traceidratio` etc.: a root sampler choice never overrides
    an inbound sampled flag, which is what makes one trace span router, replica and engine.
    """
    name = (env.get(ENV_SAMPLER) or "").strip().lower()
    if name:
        base = name.removeprefix("parentbased_")
        if base == "always_on":
            return "parentbased_always_on", None
        if base == "always_off":
            return "parentbased_always_off", None
        if base == "traceidratio":
            try:
                rate = float(env.get(ENV_SAMPLER_ARG, "1.0"))
            except ValueError:
                rate = 1.0
            return "parentbased_traceidratio", min(max(rate, 0.0), 1.0)
        logger.warning("OTEL_TRACES_SAMPLER=%r is not a built-in sampler; using parentbased_always_on", name)
        return "parentbased_always_on", None
    if ratio is not None:
        return "parentbased_traceidratio", ratio
    return "parentbased_always_on", None


def env_for_workers(settings: TracingSettings | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The env vars to put in Ray `runtime_env.env_vars` (router and every LLMServer deployment).

    Ray hands runtime_env to the replica actor, child actors inherit it (Ray-executor engine
    workers) and vLLM's EngineCore subprocesses inherit the replica's environment; each process then
    calls `setup_tracing(component)` with no settings and resolves the same configuration from env.
    Other OTEL_* vars of this process (headers, resource attributes, TLS, compression) are passed
    through. Note that runtime_env values are visible in the Ray dashboard (e.g. auth headers).
    Returns {} when tracing is off by default (nothing configured), and only the explicit
    off switch when it was disabled on purpose.
    """
    env = os.environ if environ is None else environ
    cfg = resolve(settings, env)
    if not cfg.enabled:
        return {ENV_ENABLED: "false"} if cfg.explicit else {}
    out = {k: v for k, v in env.items() if k.startswith("OTEL_")}
    # Resolved into the traces-only variables below: the generic endpoint would also be a default
    # for other OTLP exporters in those processes (metrics/logs), which we do not mean to configure.
    out.pop(ENV_ENDPOINT, None)
    out.pop(ENV_SAMPLER_ARG, None)
    out.update({
        ENV_ENABLED: "true",
        ENV_TRACES_ENDPOINT: cfg.endpoint,
        # vLLM picks its exporter from this one and defaults to grpc when it is unset.
        ENV_TRACES_PROTOCOL: cfg.protocol,
        ENV_SAMPLER: cfg.sampler,
        ENV_CAPTURE_CONTENT: "true" if cfg.capture_content else "false",
    })
    if cfg.sampler_arg is not None:
        out[ENV_SAMPLER_ARG] = repr(cfg.sampler_arg)
    if cfg.service_name:
        out[ENV_SERVICE_NAME] = cfg.service_name
    return out


def engine_kwargs_for_tracing(settings: TracingSettings | None = None,
                              environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """vLLM engine kwargs that make it emit its `llm_request` span (child of our replica span).

    vLLM only honours incoming trace headers when `otlp_traces_endpoint` is set. In the replica our
    provider is installed first, so vLLM's span goes through it (our sampler and resource; vLLM's
    attempt to install its own is refused with a logged warning).
    """
    cfg = resolve(settings, environ)
    return {"otlp_traces_endpoint": cfg.endpoint} if cfg.enabled else {}


# --------------------------------------------------------------------------------------------------
# Process-wide setup
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _State:
    configured: bool = False
    enabled: bool = False
    capture_content: bool = False
    tracer: Tracer = dataclasses.field(default_factory=NoOpTracer)
    provider: Any = None  # opentelemetry.sdk.trace.TracerProvider when enabled


_STATE = _State()
_LOCK = threading.Lock()


def setup_tracing(service_name: str, settings: TracingSettings | None = None) -> bool:
    """Configure tracing for this process once; return whether spans will be exported.

    `service_name` is this component's default `service.name` (OTEL_SERVICE_NAME or
    `settings.service_name` override it for all components; `serve_graph.component` keeps the
    component either way). Idempotent: later calls return the first answer. When off, nothing is
    installed and all helpers are near no-ops.
    """
    with _LOCK:
        if _STATE.configured:
            return _STATE.enabled
        _STATE.configured = True
        cfg = resolve(settings)
        if not cfg.enabled:
            return False
        provider = _build_provider(cfg, service_name)
        # Global when nobody installed one yet, so vLLM's spans in this process share our exporter,
        # sampler and resource. If one is installed (e.g. Ray Serve's own tracing), ours stays
        # private to our spans: context propagation is provider-independent, the trace stays whole.
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        else:
            logger.info("a global TracerProvider is already installed; serve_graph spans use their own")
        _STATE.provider = provider
        _STATE.tracer = provider.get_tracer("serve_graph")
        _STATE.capture_content = cfg.capture_content
        _STATE.enabled = True
        atexit.register(provider.shutdown)
        logger.info("tracing on: %s %s, sampler %s(%s)", cfg.protocol, cfg.endpoint, cfg.sampler, cfg.sampler_arg)
        return True


def _build_provider(cfg: ResolvedTracing, service_name: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, ParentBasedTraceIdRatio

    if cfg.sampler == "parentbased_traceidratio":
        sampler: Any = ParentBasedTraceIdRatio(cfg.sampler_arg if cfg.sampler_arg is not None else 1.0)
    else:
        sampler = ParentBased(ALWAYS_OFF if cfg.sampler == "parentbased_always_off" else ALWAYS_ON)
    resource = Resource.create({  # also merges OTEL_RESOURCE_ATTRIBUTES; these keys win
        "service.name": cfg.service_name or service_name,
        "service.namespace": "serve_graph",
        SG_COMPONENT: service_name,
        "process.pid": os.getpid(),
    })
    if cfg.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter: Any = GrpcExporter(endpoint=cfg.endpoint)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter(endpoint=cfg.endpoint)
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def is_enabled() -> bool:
    return _STATE.enabled


def capture_content() -> bool:
    return _STATE.capture_content


def force_flush(timeout_millis: int = 5000) -> bool:
    """Export everything buffered now (tests, graceful shutdown). True when off."""
    return bool(_STATE.provider.force_flush(timeout_millis)) if _STATE.provider is not None else True


def shutdown() -> None:
    if _STATE.provider is not None:
        _STATE.provider.shutdown()


# --------------------------------------------------------------------------------------------------
# W3C propagation
# --------------------------------------------------------------------------------------------------


def _trace_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """traceparent/tracestate from any header mapping, whatever the key case."""
    if not headers:
        return {}
    return {k.lower(): v for k, v in headers.items() if k.lower() in _TRACE_HEADERS}


def extract(headers: Mapping[str, str] | None) -> Context:
    """The remote parent context carried by `traceparent`/`tracestate` (empty Context if none)."""
    return _W3C.extract(_trace_headers(headers))


def inject(ctx: Context | None = None) -> dict[str, str]:
    """A carrier ({traceparent, tracestate}) for `ctx` or the current span; {} when off.

    Merge it over forwarded client headers: when tracing is off the client's own traceparent
    passes through unchanged, when on ours (a child of it) replaces it.
    """
    if not _STATE.enabled:
        return {}
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=ctx)
    return carrier


def replace_trace_headers(headers: Mapping[str, str] | None, ctx: Context | None = None) -> dict[str, str]:
    """A copy of `headers` whose trace context is `ctx`/the current span's (others unchanged).
    Tracing off: an unchanged copy (the caller's context passes through)."""
    if not _STATE.enabled:
        return dict(headers or {})
    out = {k: v for k, v in (headers or {}).items() if k.lower() not in _TRACE_HEADERS}
    out.update(inject(ctx))
    return out


# --------------------------------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------------------------------


def _clean(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None values and make sequences tuples of primitives (what OTel accepts)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple, set, frozenset)):
            v = tuple(str(x) if not isinstance(x, (str, bool, int, float)) else x for x in v)
        elif not isinstance(v, (str, bool, int, float)):
            v = str(v)
        out[k] = v
    return out


def set_attributes(span: Span, attrs: Mapping[str, Any]) -> None:
    """Set attributes (None skipped) only if the span is sampled."""
    if span.is_recording():
        span.set_attributes(_clean(attrs))


def start_span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, headers: Mapping[str, str] | None = None,
               attributes: Mapping[str, Any] | None = None) -> Span:
    """Start (not activate) a span; parent = the traceparent in `headers` if there is one, else the
    current span (e.g. Ray Serve's own request span when Serve tracing is on), else a new trace.

    For spans that outlive a `with` block (streams): end them with `wrap_stream` or `span.end()`.
    """
    if not _STATE.enabled:
        return INVALID_SPAN
    carrier = _trace_headers(headers)
    ctx = _W3C.extract(carrier) if carrier else None
    span = _STATE.tracer.start_span(name, context=ctx, kind=kind)
    if attributes:
        set_attributes(span, attributes)
    return span


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
    if not _STATE.enabled:
        yield INVALID_SPAN
        return
    span = start_span(name, kind=SpanKind.SERVER, headers=headers or {}, attributes=attributes)
    with _activate(span, end_on_exit):
        yield span


@contextmanager
def child_span(name: str, attributes: Mapping[str, Any] | None = None, *,
               end_on_exit: bool = True) -> Iterator[Span]:
    """INTERNAL span under the current one (classify, budget, decide ...)."""
    if not _STATE.enabled:
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
    if not _STATE.enabled:
        yield INVALID_SPAN
        return
    op = operation or operation_name(body)
    span = start_span(f"{op} {model}", kind=SpanKind.CLIENT)
    if span.is_recording():
        span.set_attributes(_clean(request_attributes(body, model=model, operation=op)))
    with _activate(span, end_on_exit):
        yield span


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def operation_name(body: Any) -> str:
    """GenAI operation: `chat` for messages, `text_completion` for a prompt."""
    return "chat" if _get(body, "messages") is not None else "text_completion"


def request_attributes(body: Any, *, model: str | None = None, operation: str | None = None) -> dict[str, Any]:
    """gen_ai.request.* from an OpenAI-style request (object or dict); input only with capture on."""
    max_tokens = _get(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _get(body, "max_tokens")
    attrs: dict[str, Any] = {
        GEN_AI_OPERATION_NAME: operation or operation_name(body),
        GEN_AI_PROVIDER_NAME: GEN_AI_PROVIDER,
        GEN_AI_REQUEST_MODEL: model if model is not None else _get(body, "model"),
        GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
        GEN_AI_REQUEST_TEMPERATURE: _get(body, "temperature"),
        GEN_AI_REQUEST_TOP_P: _get(body, "top_p"),
        SG_STREAM: bool(_get(body, "stream")),
        SG_BUDGET: _get(body, "thinking_token_budget"),
    }
    if _STATE.capture_content:
        messages = _get(body, "messages")
        attrs[GEN_AI_INPUT_MESSAGES] = _json_truncated(messages if messages is not None else
                                                       [{"role": "user", "content": _get(body, "prompt")}])
    return attrs


def record_decision(span: Span, *, decision: Any = None, classification: Any = None, budget: Any = None) -> None:
    """serve_graph.* from the router's Decision / Classification / Budget (duck-typed)."""
    if not span.is_recording():
        return
    attrs: dict[str, Any] = {}
    if classification is not None:
        attrs[SG_CATEGORY] = classification.category
        attrs[SG_CONFIDENCE] = float(classification.confidence)
        attrs[SG_CLASSIFIER_LATENCY_MS] = getattr(classification, "latency_ms", None)
    if decision is not None:
        attrs.update({SG_MODEL: decision.model, SG_ROUTE: decision.route, SG_REASON: decision.reason,
                      SG_CANDIDATES: tuple(getattr(decision, "candidates", ()) or ()),
                      SG_SKIPPED: tuple(getattr(decision, "skipped", ()) or ())})
    if budget is not None:
        attrs.update({SG_BUDGET: budget.tokens, SG_BUDGET_SOURCE: budget.source,
                      SG_BUDGET_CAPPED_BY: getattr(budget, "capped_by", None)})
    span.set_attributes(_clean(attrs))


def record_error(span: Span, error: BaseException | str, message: str | None = None) -> None:
    """Mark the span failed: status ERROR, `error.type` (exception class or a short code such as
    "timeout" / "400"), the exception event when there is one."""
    if not span.is_recording():
        return
    if isinstance(error, BaseException):
        etype = type(error).__qualname__
        if type(error).__module__ not in ("builtins", "asyncio.exceptions"):
            etype = f"{type(error).__module__}.{etype}"
        span.record_exception(error)
        description = message or str(error) or etype
    else:
        etype, description = str(error), message or str(error)
    span.set_attribute(ERROR_TYPE, etype)
    span.set_status(Status(StatusCode.ERROR, description[:512]))


def _finish_with_exception(span: Span, exc: BaseException) -> None:
    """End a span left by an exception: cancellation is not a server error, everything else is."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        set_attributes(span, {SG_CANCELLED: True})
    else:
        record_error(span, exc)
    span.end()


def record_first_chunk(span: Span) -> None:
    """Time to first chunk (ms since the span started); call once, when the first item arrives."""
    if span.is_recording():
        start = getattr(span, "start_time", None)
        if start:
            span.set_attribute(SG_TIME_TO_FIRST_CHUNK_MS, (time.time_ns() - start) / 1e6)


def record_response(span: Span, response: Any) -> None:
    """Finish reasons, response model/id and usage (incl. reasoning tokens) of a whole response."""
    if span.is_recording():
        obs = StreamObserver(span)
        obs.observe(response)
        obs.finish()


def record_stream_chunk(span: Span, chunk: Any) -> None:
    """Same as `record_response` for one streamed item (SSE string(s), chunk object or dict):
    sets what the chunk carries (finish reasons, usage on the final usage chunk)."""
    record_response(span, chunk)


def _as_dict(item: Any) -> dict[str, Any] | None:
    if isinstance(item, dict):
        return item
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        try:
            out = dump()
            return out if isinstance(out, dict) else None
        except Exception:  # noqa: BLE001 - a response we cannot read is not worth failing a request
            return None
    return None


def _json_truncated(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CONTENT_LIMIT else text[: CONTENT_LIMIT - 3] + "..."


class StreamObserver:
    """Reads responses/chunks as they pass and puts what matters on the span at the end.

    Cheap per chunk: SSE strings are only JSON-parsed when they can carry a finish reason or usage
    (or content, when capture is on). Engine errors (ErrorResponse items) mark the span failed.
    """

    def __init__(self, span: Span) -> None:
        self.span = span
        self.chunks = 0
        self.finish_reasons: dict[int, str] = {}
        self.attrs: dict[str, Any] = {}
        self.capture = _STATE.capture_content
        self.text: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}
        self._captured = 0

    def observe(self, item: Any) -> None:
        self.chunks += 1
        self._observe(item)

    def _observe(self, item: Any) -> None:
        if isinstance(item, (list, tuple)):
            for x in item:
                self._observe(x)
        elif isinstance(item, (str, bytes)):
            self._observe_sse(item.decode() if isinstance(item, bytes) else item)
        elif (err := getattr(item, "error", None)) is not None and hasattr(err, "message"):
            code = getattr(err, "code", None)
            record_error(self.span, str(getattr(err, "type", None) or code or "engine_error"), str(err.message))
        elif (d := _as_dict(item)) is not None:
            self._observe_dict(d)

    def _observe_sse(self, text: str) -> None:
        for line in text.splitlines():
            if not line.startswith("data: {"):
                continue
            if not self.capture and _SSE_INTERESTING.search(line) is None:
                continue
            try:
                d = json.loads(line[6:])
            except ValueError:
                continue
            if isinstance(d.get("error"), dict) or d.get("object") == "error":
                e = d["error"] if isinstance(d.get("error"), dict) else d
                record_error(self.span, str(e.get("type") or e.get("code") or "engine_error"), str(e.get("message")))
            else:
                self._observe_dict(d)

    def _observe_dict(self, d: Mapping[str, Any]) -> None:
        if d.get("model"):
            self.attrs[GEN_AI_RESPONSE_MODEL] = d["model"]
        if d.get("id"):
            self.attrs[GEN_AI_RESPONSE_ID] = d["id"]
        for i, choice in enumerate(d.get("choices") or ()):
            if not isinstance(choice, Mapping):
                continue
            idx = choice.get("index", i)
            if choice.get("finish_reason"):
                self.finish_reasons[idx] = str(choice["finish_reason"])
            if self.capture:
                part = choice.get("message") or choice.get("delta") or {}
                self._capture(self.text, idx, part.get("content") if isinstance(part, Mapping) else None)
                self._capture(self.text, idx, choice.get("text"))
                if isinstance(part, Mapping):
                    self._capture(self.reasoning, idx, part.get("reasoning") or part.get("reasoning_content"))
        usage = d.get("usage")
        if isinstance(usage, Mapping):
            self.attrs[GEN_AI_USAGE_INPUT_TOKENS] = usage.get("prompt_tokens")
            self.attrs[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.get("completion_tokens")
            details = usage.get("completion_tokens_details")
            if isinstance(details, Mapping) and details.get("reasoning_tokens") is not None:
                self.attrs[GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = details["reasoning_tokens"]

    def _capture(self, into: dict[int, list[str]], idx: int, text: Any) -> None:
        if isinstance(text, str) and text and self._captured < CONTENT_LIMIT:
            into.setdefault(idx, []).append(text)
            self._captured += len(text)

    @property
    def reasoning_tokens(self) -> int | None:
        return self.attrs.get(GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)

    def finish(self) -> None:
        if not self.span.is_recording():
            return
        attrs = dict(self.attrs)
        if self.finish_reasons:
            attrs[GEN_AI_RESPONSE_FINISH_REASONS] = tuple(self.finish_reasons[k] for k in sorted(self.finish_reasons))
        if self.capture and (self.text or self.reasoning):
            msgs = [{"role": "assistant", "content": "".join(self.text.get(i, [])),
                     **({"reasoning": "".join(self.reasoning[i])} if i in self.reasoning else {}),
                     "finish_reason": self.finish_reasons.get(i)}
                    for i in sorted(set(self.text) | set(self.reasoning))]
            attrs[GEN_AI_OUTPUT_MESSAGES] = _json_truncated(msgs)
        self.span.set_attributes(_clean(attrs))


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
    if not _STATE.enabled:
        return await call(dict(headers or {}))
    span = start_span(name, kind=SpanKind.SERVER, headers=headers or {})
    if attributes is not None and span.is_recording():
        set_attributes(span, attributes() if callable(attributes) else attributes)
    try:
        with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            stream = await call(replace_trace_headers(headers))
    except BaseException as exc:
        _finish_with_exception(span, exc)
        raise
    return wrap_stream(span, stream)

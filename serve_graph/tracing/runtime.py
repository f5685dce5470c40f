"""The process-wide tracing state: the one module of the package that holds global state.

`setup_tracing` configures a process once. When tracing is off it installs nothing and every
helper short-circuits on `STATE.enabled` (no context extraction, no attribute dicts, no-op span),
which is why tracing off costs nothing measurable. The other modules read `runtime.STATE` at call
time, so tests may swap in a state with a private provider (`monkeypatch.setattr(runtime, "STATE",
...)`) and never touch the pytest process's global OTel provider.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Tracer

from serve_graph.config import TracingSettings
from serve_graph.tracing.names import SG_COMPONENT
from serve_graph.tracing.settings import ResolvedTracing, resolve

logger = logging.getLogger("serve_graph.tracing")


@dataclasses.dataclass
class State:
    configured: bool = False
    enabled: bool = False
    capture_content: bool = False
    tracer: Tracer = dataclasses.field(default_factory=NoOpTracer)
    provider: Any = None  # opentelemetry.sdk.trace.TracerProvider when enabled


STATE = State()
_LOCK = threading.Lock()


def setup_tracing(service_name: str, settings: TracingSettings | None = None) -> bool:
    """Configure tracing for this process once; return whether spans will be exported.

    `service_name` is this component's default `service.name` (OTEL_SERVICE_NAME or
    `settings.service_name` override it for all components; `serve_graph.component` keeps the
    component either way). Idempotent: later calls return the first answer. When off, nothing is
    installed and all helpers are near no-ops.
    """
    with _LOCK:
        state = STATE
        if state.configured:
            return state.enabled
        state.configured = True
        cfg = resolve(settings)
        if not cfg.enabled:
            return False
        provider = build_provider(cfg, service_name)
        # Global when nobody installed one yet, so vLLM's spans in this process share our exporter,
        # sampler and resource. If one is installed (e.g. Ray Serve's own tracing), ours stays
        # private to our spans: context propagation is provider-independent, the trace stays whole.
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        else:
            logger.info("a global TracerProvider is already installed; serve_graph spans use their own")
        state.provider = provider
        state.tracer = provider.get_tracer("serve_graph")
        state.capture_content = cfg.capture_content
        state.enabled = True
        atexit.register(provider.shutdown)
        logger.info("tracing on: %s %s, sampler %s(%s)", cfg.protocol, cfg.endpoint, cfg.sampler, cfg.sampler_arg)
        return True


def build_provider(cfg: ResolvedTracing, service_name: str) -> Any:
    """An SDK TracerProvider for `cfg`: parent-based sampler, our resource, a batch OTLP exporter.

    Built without connecting (the exporter connects on its first export)."""
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
    return STATE.enabled


def capture_content() -> bool:
    return STATE.capture_content


def force_flush(timeout_millis: int = 5000) -> bool:
    """Export everything buffered now (tests, graceful shutdown). True when off."""
    return bool(STATE.provider.force_flush(timeout_millis)) if STATE.provider is not None else True


def shutdown() -> None:
    if STATE.provider is not None:
        STATE.provider.shutdown()

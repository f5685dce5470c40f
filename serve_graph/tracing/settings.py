"""What tracing will do in a process, from env + the `tracing:` section: pure functions, no global
state, so every rule is tested with a dict for the environment.

**Env wins, field by field**: env is the per-environment override and the only thing vLLM's engine
processes read, so `env_for_workers()` turns the merged result back into env vars for every Ray
worker and all processes agree. The sampler is always parent-based, so a sampled inbound
`traceparent` is honoured (and an unsampled one is not) whatever root sampler the operator chose.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

from serve_graph.config import OtlpProtocol, TracingSettings
from serve_graph.tracing.names import (
    ENV_CAPTURE_CONTENT,
    ENV_ENABLED,
    ENV_ENDPOINT,
    ENV_PROTOCOL,
    ENV_SAMPLER,
    ENV_SAMPLER_ARG,
    ENV_SDK_DISABLED,
    ENV_SERVICE_NAME,
    ENV_TRACES_ENDPOINT,
    ENV_TRACES_EXPORTER,
    ENV_TRACES_PROTOCOL,
)

logger = logging.getLogger("serve_graph.tracing")

Sampler = Literal["parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"]


@dataclasses.dataclass(frozen=True)
class ResolvedTracing:
    """Settings after merging env over file: exactly what a process will do."""

    enabled: bool
    explicit: bool  # enabled/disabled on purpose (not just by the presence of an endpoint)
    endpoint: str  # the traces signal endpoint (http: full URL incl. /v1/traces)
    protocol: OtlpProtocol
    sampler: Sampler
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
    protocol: OtlpProtocol
    if proto_raw == "grpc":
        protocol = "grpc"
    elif proto_raw == "http/protobuf":
        protocol = "http/protobuf"
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


def _resolve_sampler(env: Mapping[str, str], ratio: float | None) -> tuple[Sampler, float | None]:
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


def env_for_workers(settings: TracingSettings | None = None,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
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

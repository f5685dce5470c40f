"""Tracing settings: the `tracing:` section, env-over-file precedence, the sampler, what workers get,
and the attribute names (from the semantic-conventions package where it has them). Pure: env is a
dict, no provider is ever installed."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from pydantic import ValidationError

from serve_graph import tracing
from serve_graph.config import TracingSettings
from serve_graph.tracing import env_for_workers, names, resolve


def test_settings_are_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        TracingSettings(endpoint="http://x", sampling=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TracingSettings(sampler_ratio=1.5)
    with pytest.raises(ValidationError):
        TracingSettings(protocol="http/json")  # type: ignore[arg-type]
    s = TracingSettings(endpoint="http://x")
    with pytest.raises(ValidationError):
        s.endpoint = "http://y"  # type: ignore[misc]


def test_off_unless_an_endpoint_is_configured() -> None:
    assert resolve(None, {}).enabled is False
    assert resolve(TracingSettings(), {}).enabled is False
    assert resolve(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}).enabled is True
    assert resolve(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}).enabled is True
    assert resolve(TracingSettings(endpoint="http://c:4318"), {}).enabled is True
    # explicit switches, env before file; the standard kill switches win over everything
    assert resolve(TracingSettings(enabled=False), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}).enabled is False
    assert resolve(TracingSettings(enabled=True), {"SERVE_GRAPH_TRACING_ENABLED": "false"}).enabled is False
    assert resolve(TracingSettings(enabled=False), {"SERVE_GRAPH_TRACING_ENABLED": "1"}).enabled is True
    assert resolve(TracingSettings(enabled=True), {"OTEL_SDK_DISABLED": "true"}).enabled is False
    assert resolve(TracingSettings(enabled=True), {"OTEL_TRACES_EXPORTER": "none"}).enabled is False


def test_env_wins_field_by_field_and_file_fills_in() -> None:
    file = TracingSettings(endpoint="http://file:4318", protocol="grpc", sampler_ratio=0.25,
                           capture_content=True, service_name="from-file")
    r = resolve(file, {})
    assert (r.endpoint, r.protocol, r.sampler, r.sampler_arg, r.capture_content, r.service_name) == (
        "http://file:4318", "grpc", "parentbased_traceidratio", 0.25, True, "from-file")

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "from-env",
           "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"}
    r = resolve(file, env)
    assert (r.endpoint, r.protocol, r.sampler, r.sampler_arg, r.capture_content, r.service_name) == (
        "http://env:4318/v1/traces", "http/protobuf", "parentbased_always_on", None, False, "from-env")

    # the per-signal variables beat the generic ones; a signal endpoint is used as is
    r = resolve(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/x",
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
    assert (r.endpoint, r.protocol) == ("http://b/x", "http/protobuf")
    assert resolve(TracingSettings(endpoint="http://c:4318/v1/traces"), {}).endpoint == "http://c:4318/v1/traces"
    assert resolve(TracingSettings(enabled=True), {}).endpoint == "http://localhost:4318/v1/traces"
    assert resolve(TracingSettings(enabled=True, protocol="grpc"), {}).endpoint == "http://localhost:4317"
    # an unsupported protocol falls back to http/protobuf (with a warning), it does not fail start-up
    assert resolve(TracingSettings(enabled=True), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}).protocol == (
        "http/protobuf")


@pytest.mark.parametrize(("env", "expected"), [
    ({}, ("parentbased_always_on", None)),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, ("parentbased_traceidratio", 0.1)),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"},
     ("parentbased_traceidratio", 1.0)),
    ({"OTEL_TRACES_SAMPLER": "always_off"}, ("parentbased_always_off", None)),
    ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, ("parentbased_always_on", None)),
])
def test_sampler_is_always_parent_based(env: dict[str, str], expected: tuple[str, float | None]) -> None:
    r = resolve(TracingSettings(enabled=True), env)
    assert (r.sampler, r.sampler_arg) == expected


def test_worker_env_reproduces_the_driver_configuration() -> None:
    file = TracingSettings(endpoint="http://file:4318", sampler_ratio=0.5, capture_content=True)
    driver_env = {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer x", "OTEL_RESOURCE_ATTRIBUTES": "team=ml",
                  "PATH": "/bin"}
    worker_env = env_for_workers(file, driver_env)
    assert worker_env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://file:4318/v1/traces"
    assert worker_env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"  # vLLM defaults to grpc
    assert worker_env["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer x"
    assert worker_env["OTEL_RESOURCE_ATTRIBUTES"] == "team=ml"
    assert "PATH" not in worker_env and "OTEL_SERVICE_NAME" not in worker_env
    # a worker that has only these env vars (no file) resolves exactly what the driver did
    # (except that it is now switched on explicitly)
    assert resolve(None, worker_env) == dataclasses.replace(resolve(file, driver_env), explicit=True)

    assert env_for_workers(None, {}) == {}  # off by default: nothing to propagate
    assert env_for_workers(TracingSettings(enabled=False), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}) == {
        "SERVE_GRAPH_TRACING_ENABLED": "false"}
    named = env_for_workers(TracingSettings(enabled=True, service_name="sg"), {})
    assert named["OTEL_SERVICE_NAME"] == "sg"


def test_engine_kwargs_only_when_on() -> None:
    assert tracing.engine_kwargs_for_tracing(None, {}) == {}
    assert tracing.engine_kwargs_for_tracing(TracingSettings(endpoint="http://c:4318"), {}) == {
        "otlp_traces_endpoint": "http://c:4318/v1/traces"}


def test_grpc_exporter_is_built_without_connecting() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from serve_graph.tracing import runtime

    provider = runtime.build_provider(resolve(TracingSettings(enabled=True, protocol="grpc"), {}), "x")
    processor = provider._active_span_processor._span_processors[0]
    assert isinstance(processor.span_exporter, OTLPSpanExporter)
    provider.shutdown()


# ---- attribute names ---------------------------------------------------------------------------

# GenAI names that opentelemetry-semantic-conventions does not have yet (defined in the
# semantic-conventions-genai registry); every other GEN_AI_* name must be the package's own.
NOT_YET_IN_SEMCONV = {"GEN_AI_REQUEST_REASONING_LEVEL": "gen_ai.request.reasoning.level"}


def test_genai_names_are_the_semantic_conventions_ones() -> None:
    ours = {k: v for k, v in vars(names).items()
            if k.startswith("GEN_AI_") and isinstance(v, str) and v.startswith("gen_ai.")}
    assert len(ours) >= 14
    for key, value in ours.items():
        if key in NOT_YET_IN_SEMCONV:
            assert value == NOT_YET_IN_SEMCONV[key]
            assert value not in vars(gen_ai_attributes).values(), f"{key}: take it from semconv now"
        else:
            assert getattr(gen_ai_attributes, key) == value, key
    assert names.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS == "gen_ai.usage.reasoning.output_tokens"
    assert names.ERROR_TYPE == "error.type"
    assert (names.OPERATION_CHAT, names.OPERATION_TEXT_COMPLETION) == ("chat", "text_completion")


def test_our_names_live_under_serve_graph_and_are_distinct() -> None:
    ours = [v for k, v in vars(names).items() if k.startswith("SG_")]
    assert ours and all(v.startswith("serve_graph.") for v in ours)
    assert len(set(ours)) == len(ours)
    # the package re-exports every name, so `tracing.SG_MODEL` etc. keep working
    assert all(getattr(tracing, n) == getattr(names, n) for n in names.__all__)

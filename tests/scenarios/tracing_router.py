"""The router's side of one request: SERVER span continuing the client's traceparent, a classify
child, the CLIENT span of the model call (carrier injected), then a timeout and a rejected request.

Env: TEST_TRACEPARENT, TEST_BODY (JSON request), TEST_RESPONSE (JSON response), OTEL_* (export).
Prints {"carrier": <headers for the model replica>, "global": <module of the global provider>}.
"""

from __future__ import annotations

import json
import os

from opentelemetry import trace

from serve_graph import tracing


def main() -> None:
    assert tracing.setup_tracing(tracing.ROUTER_SERVICE) is True
    assert tracing.setup_tracing("again") is True  # idempotent
    inbound = {"traceparent": os.environ["TEST_TRACEPARENT"]}
    body = json.loads(os.environ["TEST_BODY"])
    with tracing.server_span("router.chat", inbound):
        with tracing.child_span("router.classify"):
            pass
        with tracing.client_span("qwen3-tiny", body) as call:
            carrier = tracing.inject()
            tracing.record_response(call, json.loads(os.environ["TEST_RESPONSE"]))
    try:
        with tracing.server_span("router.timeout", inbound):
            raise TimeoutError("the model did not answer in time")
    except TimeoutError:
        pass
    with tracing.server_span("router.rejected", inbound) as span:
        tracing.record_error(span, "400", "bad request")
    assert tracing.force_flush()
    print(json.dumps({"carrier": carrier, "global": type(trace.get_tracer_provider()).__module__}))


if __name__ == "__main__":
    main()

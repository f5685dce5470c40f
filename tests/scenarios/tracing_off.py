"""Tracing off: `setup_tracing` installs nothing and every helper is a no-op.

Env: TEST_TRACEPARENT, plus whatever switches tracing off (or nothing at all).
Prints {"carrier", "recording", "global": <class name of the global provider>}.
"""

from __future__ import annotations

import json
import os

from opentelemetry import trace

from serve_graph import tracing


def main() -> None:
    assert tracing.setup_tracing(tracing.ROUTER_SERVICE) is False
    with tracing.server_span("router.chat", {"traceparent": os.environ["TEST_TRACEPARENT"]}) as span:
        with tracing.client_span("m", {"messages": []}):
            carrier = tracing.inject()
    print(json.dumps({"carrier": carrier, "recording": span.is_recording(),
                      "global": type(trace.get_tracer_provider()).__name__}))


if __name__ == "__main__":
    main()

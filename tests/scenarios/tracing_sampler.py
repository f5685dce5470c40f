"""Three root spans under the configured sampler: no parent, a sampled parent, an unsampled parent.

Env: TEST_TRACE_ID, OTEL_TRACES_SAMPLER(_ARG), OTEL_* (export). Prints "ok".
"""

from __future__ import annotations

import os

from serve_graph import tracing


def main() -> None:
    assert tracing.setup_tracing("s") is True
    trace_id = os.environ["TEST_TRACE_ID"]
    with tracing.server_span("root", {}):
        pass
    with tracing.server_span("sampled-parent", {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}):
        pass
    with tracing.server_span("unsampled-parent", {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"}):
        pass
    tracing.force_flush()
    print("ok")


if __name__ == "__main__":
    main()

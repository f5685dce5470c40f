"""`OTEL_EXPORTER_OTLP_PROTOCOL=grpc` gives the installed provider a gRPC exporter. Prints "ok"."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

from serve_graph import tracing
from serve_graph.tracing import runtime


def main() -> None:
    assert tracing.setup_tracing("g") is True
    exporter = runtime.STATE.provider._active_span_processor._span_processors[0].span_exporter
    assert isinstance(exporter, OTLPSpanExporter), exporter
    print("ok")


if __name__ == "__main__":
    main()

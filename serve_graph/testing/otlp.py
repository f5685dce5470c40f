"""A real OTLP/HTTP trace receiver for tests and benchmarks (no collector needed).

Listens on 127.0.0.1 (a free port), accepts `POST /v1/traces` with protobuf bodies (gzip or
deflate encoded too), keeps every span as a plain dict and answers 200 with an empty
ExportTraceServiceResponse, as a collector would. Point exporters at `receiver.endpoint`
(the full traces URL) or `receiver.base_url` (for OTEL_EXPORTER_OTLP_ENDPOINT).

    with OTLPReceiver() as rx:
        ... export ...
        rx.wait_for(lambda spans: any(s["name"] == "x" for s in spans))
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Spans = list[dict[str, Any]]


def decode_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as plain Python (arrays -> lists, kvlists -> dicts)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [decode_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return decode_attributes(v.kvlist_value.values)
    return getattr(v, kind)


def decode_attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: decode_value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def _span_dict(span: Span, resource: dict[str, Any], scope: str) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),  # "" for a root span
        "name": span.name,
        "kind": Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),  # SERVER, CLIENT, ...
        "attributes": decode_attributes(span.attributes),
        "status": Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),  # UNSET, OK, ERROR
        "status_message": span.status.message,
        "events": [{"name": e.name, "attributes": decode_attributes(e.attributes)} for e in span.events],
        "service_name": resource.get("service.name"),
        "resource": resource,
        "scope": scope,
        "start_ns": span.start_time_unix_nano,
        "end_ns": span.end_time_unix_nano,
    }


class OTLPReceiver:
    """Background OTLP/HTTP receiver; thread-safe; usable as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._spans: Spans = []
        self._cond = threading.Condition()
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    req = ExportTraceServiceRequest()
                    req.ParseFromString(body)
                except Exception as e:  # noqa: BLE001 - report, as a collector would
                    self.send_error(400, f"bad OTLP body: {e}")
                    return
                receiver._add(req)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/v1/traces"

    def start(self) -> OTLPReceiver:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- data ----------------------------------------------------------------------------------

    def _add(self, req: ExportTraceServiceRequest) -> None:
        new: Spans = []
        for rs in req.resource_spans:
            resource = decode_attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                new.extend(_span_dict(s, resource, ss.scope.name) for s in ss.spans)
        with self._cond:
            self.requests += 1
            self._spans.extend(new)
            self._cond.notify_all()

    def spans(self) -> Spans:
        with self._cond:
            return list(self._spans)

    def traces(self) -> dict[str, Spans]:
        """trace id -> its spans, in arrival order."""
        out: dict[str, Spans] = defaultdict(list)
        for s in self.spans():
            out[s["trace_id"]].append(s)
        return dict(out)

    def by_name(self, name: str) -> Spans:
        return [s for s in self.spans() if s["name"] == name]

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()

    def wait_for(self, predicate: Callable[[Spans], bool], timeout: float = 10.0) -> Spans:
        """Block until predicate(spans) holds; return the spans, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"OTLP receiver: condition not met in {timeout}s; "
                                       f"got {[s['name'] for s in self._spans]}")
                self._cond.wait(left)
            return list(self._spans)

"""The `tracing:` section: OpenTelemetry export settings from models.yaml.

Each field is a fallback for the matching standard env var (env wins, field by field); merging the
two, and everything else about tracing, is `serve_graph.tracing`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serve_graph.config.base import Section

OtlpProtocol = Literal["grpc", "http/protobuf"]


class TracingSettings(Section):
    """The `tracing:` section of models.yaml. Every field is a fallback for the matching env var.

    enabled: None = on iff an OTLP endpoint is configured (env or `endpoint`).
    endpoint: base URL like OTEL_EXPORTER_OTLP_ENDPOINT (`/v1/traces` is appended for
      http/protobuf unless present); for grpc `http://host:4317`.
    """

    enabled: bool | None = None
    endpoint: str | None = None
    protocol: OtlpProtocol | None = None
    sampler_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    capture_content: bool = False
    service_name: str | None = None

"""Every name tracing writes: span attributes, service names, env vars.

GenAI attribute names come from the OpenTelemetry semantic-conventions package (its incubating
`gen_ai` registry; the package marks them "moved to the semantic-conventions-genai repository",
where they live on under the same names). A name that package does not have yet is ours, with a
comment saying where it is defined. Our own attributes live under `serve_graph.*`, here only.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    GenAiOperationNameValues,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

__all__ = [
    "CONTENT_LIMIT", "ENV_CAPTURE_CONTENT", "ENV_ENABLED", "ENV_ENDPOINT", "ENV_PROTOCOL", "ENV_SAMPLER",
    "ENV_SAMPLER_ARG", "ENV_SDK_DISABLED", "ENV_SERVICE_NAME", "ENV_TRACES_ENDPOINT", "ENV_TRACES_EXPORTER",
    "ENV_TRACES_PROTOCOL", "ERROR_TYPE", "GEN_AI_INPUT_MESSAGES", "GEN_AI_OPERATION_NAME",
    "GEN_AI_OUTPUT_MESSAGES", "GEN_AI_PROVIDER", "GEN_AI_PROVIDER_NAME", "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL", "GEN_AI_REQUEST_REASONING_LEVEL", "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_REQUEST_TOP_P", "GEN_AI_RESPONSE_FINISH_REASONS", "GEN_AI_RESPONSE_ID", "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_USAGE_INPUT_TOKENS", "GEN_AI_USAGE_OUTPUT_TOKENS", "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS",
    "LLM_SERVER_SERVICE", "OPERATION_CHAT", "OPERATION_TEXT_COMPLETION", "ROUTER_SERVICE", "SG_BUDGET",
    "SG_BUDGET_CAPPED_BY", "SG_BUDGET_SOURCE", "SG_CANCELLED", "SG_CANDIDATES", "SG_CATEGORY", "SG_CHUNKS",
    "SG_CLASSIFIER_LATENCY_MS", "SG_COMPONENT", "SG_CONFIDENCE", "SG_DEPLOYMENT", "SG_MODEL", "SG_REASON",
    "SG_FALLBACK", "SG_REPLICA_ID", "SG_ROUTE", "SG_SKIPPED", "SG_STREAM", "SG_THINKING_TRUNCATED",
    "SG_TIME_TO_FIRST_CHUNK_MS",
]

# ---- GenAI (semantic conventions) -----------------------------------------------------------------

OPERATION_CHAT: Final = GenAiOperationNameValues.CHAT.value  # "chat"
OPERATION_TEXT_COMPLETION: Final = GenAiOperationNameValues.TEXT_COMPLETION.value  # "text_completion"
GEN_AI_PROVIDER: Final = "vllm"  # the value of gen_ai.provider.name (not among the registry's well-known ones)
# The request's `reasoning_effort` (none/low/medium/high). Defined in the semantic-conventions-genai
# registry; not yet in opentelemetry-semantic-conventions 0.66b2, hence our own constant.
GEN_AI_REQUEST_REASONING_LEVEL: Final = "gen_ai.request.reasoning.level"

# ---- serve_graph.* (ours) -------------------------------------------------------------------------

SG_CATEGORY: Final = "serve_graph.category"
SG_CONFIDENCE: Final = "serve_graph.confidence"
SG_CLASSIFIER_LATENCY_MS: Final = "serve_graph.classifier.latency_ms"
SG_ROUTE: Final = "serve_graph.route"
SG_CANDIDATES: Final = "serve_graph.candidates"
SG_MODEL: Final = "serve_graph.model"  # the chosen model
SG_REASON: Final = "serve_graph.reason"
SG_SKIPPED: Final = "serve_graph.skipped"  # candidates passed over (fallbacks)
SG_FALLBACK: Final = "serve_graph.fallback"  # "model:reason" of each candidate skipped or failed
SG_BUDGET: Final = "serve_graph.thinking.budget"
SG_BUDGET_SOURCE: Final = "serve_graph.thinking.budget_source"
SG_BUDGET_CAPPED_BY: Final = "serve_graph.thinking.budget_capped_by"
SG_THINKING_TRUNCATED: Final = "serve_graph.thinking.truncated"
SG_TIME_TO_FIRST_CHUNK_MS: Final = "serve_graph.time_to_first_chunk_ms"
SG_STREAM: Final = "serve_graph.stream"
SG_CHUNKS: Final = "serve_graph.chunks"
SG_CANCELLED: Final = "serve_graph.cancelled"
SG_DEPLOYMENT: Final = "serve_graph.deployment"
SG_REPLICA_ID: Final = "serve_graph.replica.id"
SG_COMPONENT: Final = "serve_graph.component"  # resource attribute: which process kind emitted the span

# Service names of our components (the default `service.name`; OTEL_SERVICE_NAME overrides).
ROUTER_SERVICE: Final = "serve_graph.router"
LLM_SERVER_SERVICE: Final = "serve_graph.llm_server"

CONTENT_LIMIT: Final = 8192  # characters per captured-content attribute

# ---- env vars -------------------------------------------------------------------------------------
# The OTEL_* ones are the standard names; SERVE_GRAPH_TRACING_ENABLED carries an explicit on/off from
# the driver to the workers; the content switch is the GenAI instrumentations' name.

ENV_ENABLED: Final = "SERVE_GRAPH_TRACING_ENABLED"
ENV_CAPTURE_CONTENT: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENV_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
ENV_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
ENV_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
ENV_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_SAMPLER: Final = "OTEL_TRACES_SAMPLER"
ENV_SAMPLER_ARG: Final = "OTEL_TRACES_SAMPLER_ARG"

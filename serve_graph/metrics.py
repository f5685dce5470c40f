"""Router metrics, exported through Ray's metrics agent (`ray.serve.metrics`).

Why Ray's metrics and not prometheus_client with a `/metrics` route: the router runs as N Serve
replicas behind Serve's proxy, so a scrape of `/metrics` through the proxy would land on a random
replica each time and counters would jump between replicas' values. Ray's agent on every node
exports all replicas' series (labelled `deployment`, `replica`, `application` by
`ray.serve.metrics`) on the same port and service discovery as Serve's own `ray_serve_*` and
vLLM's `ray_vllm_*` metrics, so one Prometheus scrape config and one dashboard cover all three.
Ray prefixes `ray_` to every name; counters get `_total`, histograms `_bucket/_sum/_count`.

Label values are bounded by the catalog (models, categories, routes) and HTTP status codes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

PREFIX = "serve_graph_router_"
NONE = "none"  # label value when there is no category/model (unclassified, rejected before routing)

# Metric names as registered (Prometheus: "ray_" + name, + "_total" for counters).
REQUESTS = PREFIX + "requests"
REQUEST_DURATION = PREFIX + "request_duration_seconds"
TIME_TO_FIRST_CHUNK = PREFIX + "time_to_first_chunk_seconds"
CLASSIFIER_LATENCY = PREFIX + "classifier_latency_seconds"
DECISIONS = PREFIX + "decisions"
FALLBACKS = PREFIX + "fallbacks"
REASONING_TOKENS = PREFIX + "reasoning_tokens"
THINKING_BUDGET = PREFIX + "thinking_budget_tokens"
THINKING_TRUNCATED = PREFIX + "thinking_truncated"

# Tag keys. "route" is avoided: ray.serve.metrics reserves it for the HTTP route.
CATEGORY, MODEL, DECISION_ROUTE, STATUS = "category", "model", "decision_route", "status"
# fallbacks: the candidate passed over, the model that served instead ("none": the request failed)
# and why (no_replica, scaled_to_zero, replica_died, backpressure, upstream_error).
FROM, TO, REASON = "from", "to", "reason"

LATENCY_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
TTFT_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
CLASSIFIER_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]
TOKEN_BUCKETS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


class _Counter(Protocol):
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...


class _Histogram(Protocol):
    def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...


class Backend(Protocol):
    """What RouterMetrics needs from a metrics library (ray.serve.metrics by default; a fake in tests)."""

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Counter: ...

    def histogram(
        self, name: str, description: str, boundaries: list[float], tag_keys: tuple[str, ...]
    ) -> _Histogram: ...


class RayServeBackend:
    """ray.serve.metrics: adds deployment/replica/application tags inside a replica; needs no
    running Ray to construct (records are dropped until the process is a Ray worker)."""

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Counter:
        from ray.serve.metrics import Counter

        return Counter(name, description=description, tag_keys=tag_keys)

    def histogram(self, name: str, description: str, boundaries: list[float], tag_keys: tuple[str, ...]) -> _Histogram:
        from ray.serve.metrics import Histogram

        return Histogram(name, description=description, boundaries=boundaries, tag_keys=tag_keys)


def _label(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


class RouterMetrics:
    """Create once per router replica (in `Router.__init__`); every method is cheap and never raises
    into the request path."""

    def __init__(self, backend: Backend | None = None) -> None:
        b = backend or RayServeBackend()
        req_tags = (CATEGORY, MODEL, DECISION_ROUTE, STATUS)
        self.requests = b.counter(
            REQUESTS, "Router requests by category, chosen model, route and HTTP status.", req_tags
        )
        self.duration = b.histogram(
            REQUEST_DURATION,
            "Router-measured end-to-end latency (s), to the last byte.",
            LATENCY_BUCKETS_S,
            (CATEGORY, MODEL, STATUS),
        )
        self.ttft = b.histogram(
            TIME_TO_FIRST_CHUNK,
            "Router-measured time to the first streamed chunk (s).",
            TTFT_BUCKETS_S,
            (CATEGORY, MODEL),
        )
        self.classifier = b.histogram(CLASSIFIER_LATENCY, "Prompt classifier latency (s).", CLASSIFIER_BUCKETS_S, ())
        self.decisions = b.counter(DECISIONS, "Routing decisions by route and chosen model.", (DECISION_ROUTE, MODEL))
        self.fallbacks = b.counter(
            FALLBACKS,
            "Candidates passed over before the first byte, by that model, the model that served and why.",
            (FROM, TO, REASON),
        )
        self.reasoning = b.histogram(
            REASONING_TOKENS, "Reasoning tokens per request (from usage).", TOKEN_BUCKETS, (CATEGORY, MODEL)
        )
        self.budget = b.histogram(
            THINKING_BUDGET,
            "Thinking budget given to the engine per thinking request (tokens, > 0).",
            TOKEN_BUCKETS,
            (CATEGORY, MODEL),
        )
        self.truncated = b.counter(
            THINKING_TRUNCATED, "Requests whose thinking was cut off by the budget.", (CATEGORY, MODEL)
        )

    def observe_request(
        self,
        category: str | None,
        model: str | None,
        route: str | None,
        status: int | str,
        e2e_s: float | None,
        ttft_s: float | None = None,
        reasoning_tokens: int | None = None,
        truncated: bool = False,
        *,
        budget_tokens: int | None = None,
    ) -> None:
        """One finished request. `status` is the HTTP status code; `ttft_s` only for streamed
        responses; `budget_tokens` the thinking budget sent to the engine (observed when > 0)."""
        tags = {CATEGORY: _label(category), MODEL: _label(model)}
        st = _label(status)
        self._safe(self.requests.inc, 1.0, {**tags, DECISION_ROUTE: _label(route), STATUS: st})
        if e2e_s is not None:
            self._safe(self.duration.observe, max(e2e_s, 0.0), {**tags, STATUS: st})
        if ttft_s is not None:
            self._safe(self.ttft.observe, max(ttft_s, 0.0), tags)
        if reasoning_tokens is not None:
            self._safe(self.reasoning.observe, float(reasoning_tokens), tags)
        if budget_tokens:  # thinking requests only, so truncated / budget count = cut-off ratio
            self._safe(self.budget.observe, float(budget_tokens), tags)
        if truncated:
            self._safe(self.truncated.inc, 1.0, tags)

    def observe_classifier(self, ms: float) -> None:
        self._safe(self.classifier.observe, max(ms, 0.0) / 1000.0, {})

    def observe_decision(self, route: str, model: str) -> None:
        """The route taken and the model that finally got the request (after any failover)."""
        self._safe(self.decisions.inc, 1.0, {DECISION_ROUTE: _label(route), MODEL: _label(model)})

    def observe_fallback(self, from_model: str, to_model: str | None, reason: str) -> None:
        """One candidate passed over; `to_model` None when no candidate served the request."""
        self._safe(self.fallbacks.inc, 1.0, {FROM: _label(from_model), TO: _label(to_model), REASON: _label(reason)})

    @staticmethod
    def _safe(fn: Callable[..., None], value: float, tags: dict[str, str]) -> None:
        """Metrics must never fail a request (Ray raises on a bad tag value); log instead."""
        try:
            fn(value, tags=tags)
        except Exception:  # noqa: BLE001
            import logging

            logging.getLogger("serve_graph.metrics").exception("metric record failed")

"""Router metrics: names, tags and values recorded; the dashboard queries exactly those names.

A fake backend records calls; one test builds the real ray.serve.metrics objects (no Ray needed:
`ray.init` is patched to fail so the test cannot start or join a cluster).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from serve_graph import metrics
from serve_graph.metrics import RouterMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "serve_graph.json"


class FakeMetric:
    def __init__(self, kind: str, name: str, tag_keys: tuple[str, ...], boundaries: list[float] | None = None) -> None:
        self.kind, self.name, self.tag_keys, self.boundaries = kind, name, tag_keys, boundaries
        self.records: list[tuple[float, dict[str, str]]] = []

    def _record(self, value: float, tags: dict[str, str] | None = None) -> None:
        tags = tags or {}
        assert set(tags) == set(self.tag_keys), (self.name, tags)  # Ray rejects missing tags
        assert all(isinstance(v, str) for v in tags.values())  # and non-str values
        self.records.append((value, tags))

    inc = _record
    observe = _record


class FakeBackend:
    def __init__(self) -> None:
        self.metrics: dict[str, FakeMetric] = {}

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> FakeMetric:
        assert description
        return self.metrics.setdefault(name, FakeMetric("counter", name, tag_keys))

    def histogram(self, name: str, description: str, boundaries: list[float], tag_keys: tuple[str, ...]) -> FakeMetric:
        assert description and boundaries == sorted(boundaries) and boundaries[0] > 0  # Ray: positive, ascending
        return self.metrics.setdefault(name, FakeMetric("histogram", name, tag_keys, boundaries))


@pytest.fixture
def fake() -> tuple[RouterMetrics, dict[str, FakeMetric]]:
    backend = FakeBackend()
    return RouterMetrics(backend), backend.metrics


def test_metric_names_and_tags(fake: tuple[RouterMetrics, dict[str, FakeMetric]]) -> None:
    _, m = fake
    assert {name: (x.kind, x.tag_keys) for name, x in m.items()} == {
        "serve_graph_router_requests": ("counter", ("category", "model", "decision_route", "status")),
        "serve_graph_router_request_duration_seconds": ("histogram", ("category", "model", "status")),
        "serve_graph_router_time_to_first_chunk_seconds": ("histogram", ("category", "model")),
        "serve_graph_router_classifier_latency_seconds": ("histogram", ()),
        "serve_graph_router_decisions": ("counter", ("decision_route", "model")),
        "serve_graph_router_fallbacks": ("counter", ("from", "to", "reason")),
        "serve_graph_router_reasoning_tokens": ("histogram", ("category", "model")),
        "serve_graph_router_thinking_budget_tokens": ("histogram", ("category", "model")),
        "serve_graph_router_thinking_truncated": ("counter", ("category", "model")),
    }
    # "route" is ray.serve.metrics' HTTP-route tag: ours must not collide with it
    assert all("route" not in x.tag_keys for x in m.values())


def test_observe_streamed_thinking_request(fake: tuple[RouterMetrics, dict[str, FakeMetric]]) -> None:
    rm, m = fake
    rm.observe_request("math", "qwen3-think", "math", 200, e2e_s=1.25, ttft_s=0.09, reasoning_tokens=511,
                       truncated=True, budget_tokens=512)
    tags = {"category": "math", "model": "qwen3-think"}
    assert m[metrics.REQUESTS].records == [(1.0, {**tags, "decision_route": "math", "status": "200"})]
    assert m[metrics.REQUEST_DURATION].records == [(1.25, {**tags, "status": "200"})]
    assert m[metrics.TIME_TO_FIRST_CHUNK].records == [(0.09, tags)]
    assert m[metrics.REASONING_TOKENS].records == [(511.0, tags)]
    assert m[metrics.THINKING_BUDGET].records == [(512.0, tags)]
    assert m[metrics.THINKING_TRUNCATED].records == [(1.0, tags)]


def test_observe_rejected_request_without_classification(fake: tuple[RouterMetrics, dict[str, FakeMetric]]) -> None:
    rm, m = fake
    rm.observe_request(None, None, None, 400, e2e_s=0.002)
    assert m[metrics.REQUESTS].records == [
        (1.0, {"category": "none", "model": "none", "decision_route": "none", "status": "400"})]
    assert m[metrics.REQUEST_DURATION].records == [(0.002, {"category": "none", "model": "none", "status": "400"})]
    for name in (metrics.TIME_TO_FIRST_CHUNK, metrics.REASONING_TOKENS, metrics.THINKING_BUDGET,
                 metrics.THINKING_TRUNCATED):
        assert m[name].records == []


def test_budget_zero_is_not_a_thinking_request(fake: tuple[RouterMetrics, dict[str, FakeMetric]]) -> None:
    rm, m = fake
    rm.observe_request("chat", "qwen3", "default", "200", e2e_s=0.5, reasoning_tokens=0, budget_tokens=0)
    assert m[metrics.THINKING_BUDGET].records == []
    assert m[metrics.REASONING_TOKENS].records == [(0.0, {"category": "chat", "model": "qwen3"})]


def test_classifier_in_seconds(fake: tuple[RouterMetrics, dict[str, FakeMetric]]) -> None:
    rm, m = fake
    rm.observe_classifier(0.5)
    assert m[metrics.CLASSIFIER_LATENCY].records == [(0.0005, {})]


def test_decision_and_fallbacks(fake: tuple[RouterMetrics, dict[str, FakeMetric]]) -> None:
    rm, m = fake
    rm.observe_decision("code", "qwen3-coder-b")
    rm.observe_decision("default", "qwen3")
    rm.observe_fallback("qwen3-coder-a", "qwen3-coder-b", "no_replica")
    rm.observe_fallback("qwen3-coder-c", None, "upstream_error")  # nothing served the request
    assert m[metrics.DECISIONS].records == [(1.0, {"decision_route": "code", "model": "qwen3-coder-b"}),
                                            (1.0, {"decision_route": "default", "model": "qwen3"})]
    assert m[metrics.FALLBACKS].records == [
        (1.0, {"from": "qwen3-coder-a", "to": "qwen3-coder-b", "reason": "no_replica"}),
        (1.0, {"from": "qwen3-coder-c", "to": "none", "reason": "upstream_error"})]


def test_a_failing_backend_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def inc(self, *a: Any, **k: Any) -> None:
            raise ValueError("Missing value for tag key(s)")

        observe = inc

    class BrokenBackend:
        def counter(self, *a: Any) -> Broken:
            return Broken()

        def histogram(self, *a: Any) -> Broken:
            return Broken()

    rm = RouterMetrics(BrokenBackend())
    rm.observe_request("a", "b", "c", 200, 1.0, 0.1, 5, True, budget_tokens=8)
    rm.observe_classifier(1.0)
    rm.observe_decision("r", "m")
    rm.observe_fallback("s", "m", "no_replica")
    assert "metric record failed" in caplog.text


def test_real_ray_serve_metrics_accept_our_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    import ray._private.worker

    def no_ray(*a: Any, **k: Any) -> None:
        raise RuntimeError("unit tests must not start or join Ray")

    was_up = ray.is_initialized()  # the e2e session's cluster may be up when the suites run together
    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(ray._private.worker, "init", no_ray)
    errors: list[str] = []
    monkeypatch.setattr(RouterMetrics, "_safe", staticmethod(lambda fn, v, tags: _strict(fn, v, tags, errors)))
    rm = RouterMetrics()
    rm.observe_request("math", "m", "math", 200, 1.0, 0.1, 10, True, budget_tokens=16)
    rm.observe_request(None, None, None, 503, 0.01)
    rm.observe_classifier(0.3)
    rm.observe_decision("math", "m")
    rm.observe_fallback("n", "m", "scaled_to_zero")
    rm.observe_fallback("n", None, "replica_died")
    assert errors == []
    assert ray.is_initialized() == was_up


def _strict(fn: Any, value: float, tags: dict[str, str], errors: list[str]) -> None:
    try:
        fn(value, tags=tags)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


def _exported_names() -> set[str]:
    """Prometheus names Ray exports for our metrics: ray_ prefix; _total; _bucket/_sum/_count."""
    backend = FakeBackend()
    RouterMetrics(backend)
    out: set[str] = set()
    for name, m in backend.metrics.items():
        if m.kind == "counter":
            out.add(f"ray_{name}_total")
        else:
            out.update(f"ray_{name}{s}" for s in ("_bucket", "_sum", "_count"))
    return out


def test_dashboard_queries_exactly_our_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {n for e in exprs for n in re.findall(r"\b(ray_[a-z_]+)", e)}
    ours = {n for n in used if n.startswith("ray_serve_graph_")}
    assert ours <= _exported_names(), ours - _exported_names()
    assert used - ours == {"ray_vllm_time_to_first_token_seconds_bucket"}  # engine TTFT, for comparison
    # every metric we export is on the dashboard
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in ours}
    assert families == {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in _exported_names()}

    templating = {v["name"]: v for v in dash["templating"]["list"]}
    assert templating["datasource"]["type"] == "datasource" and templating["datasource"]["query"] == "prometheus"
    panel_ds = {json.dumps(p["datasource"]) for p in dash["panels"] if "datasource" in p}
    assert panel_ds == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    label_keys: dict[str, set[str]] = defaultdict(set)
    for e in exprs:
        for name, sel in re.findall(r"(ray_serve_graph_[a-z_]+)\{([^}]*)\}", e):
            label_keys[name].update(re.findall(r"(\w+)\s*[!=]~?", sel))
    backend = FakeBackend()
    RouterMetrics(backend)
    for name, keys in label_keys.items():
        family = re.sub(r"^ray_|_(total|bucket|sum|count)$", "", name)
        assert keys <= set(backend.metrics[family].tag_keys) | {"le"}, (name, keys)

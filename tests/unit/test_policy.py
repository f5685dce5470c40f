"""The routing decision as a pure function: request x classification x catalog x health."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_graph.config import ResolvedProfile, load_config, parse_config
from serve_graph.router.errors import ModelNotFound, NotServable, error_kind
from serve_graph.router.policy import RouteRequest, decide

REPO = Path(__file__).resolve().parents[2]
CFG = load_config(REPO / "models.yaml")
LOCAL = CFG.resolve("local")
PROD = CFG.resolve("production")
ALL_LOCAL = frozenset(m.id for m in LOCAL.models)
ALL_PROD = frozenset(m.id for m in PROD.models)


@dataclass(frozen=True)
class C:
    category: str
    confidence: float


def _profile(mutate: Any, name: str = "production") -> ResolvedProfile:
    raw = yaml.safe_load((REPO / "models.yaml").read_text())
    mutate(raw)
    return parse_config(raw, "test", REPO).resolve(name)


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("chat", "qwen3-1.7b"),
        ("text", "qwen3-1.7b"),
        ("translation", "qwen3-1.7b"),
        ("creative", "qwen3-8b"),
        ("code", "qwen3-8b"),
        ("math", "qwen3-30b-a3b"),
        ("reasoning", "qwen3-30b-a3b"),
    ],
)
def test_default_policy_follows_the_selection_guide(category: str, expected: str) -> None:
    d = decide(RouteRequest(model="auto"), PROD, ALL_PROD, C(category, 0.9))
    assert d.model == expected and d.route == category and d.category == category
    assert "qwen3-235b-a22b" not in d.candidates  # xl only when a route asks for it


def test_explicit_model_wins_over_classification() -> None:
    d = decide(RouteRequest(model="qwen3-8b"), PROD, ALL_PROD, C("math", 0.99))
    assert (d.model, d.route) == ("qwen3-8b", "explicit")


def test_unknown_model_is_404() -> None:
    with pytest.raises(ModelNotFound) as e:
        decide(RouteRequest(model="gpt-4o"), PROD, ALL_PROD)
    assert e.value.param == "model" and e.value.code == "model_not_found"
    assert "The model `gpt-4o` does not exist" in e.value.message
    assert error_kind(e.value).status == 404  # the status comes from the one table, not from policy


def test_low_confidence_takes_default_route() -> None:
    d = decide(RouteRequest(), PROD, ALL_PROD, C("math", 0.2))
    assert d.route == "default" and d.model == PROD.default_route[0]
    assert "confidence 0.20 < threshold 0.50" in d.reason
    d = decide(RouteRequest(), PROD, ALL_PROD, C("math", 0.5))
    assert d.route == "math"


def test_unrouted_category_takes_default_route() -> None:
    d = decide(RouteRequest(), PROD, ALL_PROD, C("poetry-contest", 0.99))
    assert d.route == "default" and "no route" in d.reason


def test_first_healthy_candidate_wins() -> None:
    healthy = ALL_PROD - {"qwen3-30b-a3b"}
    d = decide(RouteRequest(), PROD, healthy, C("math", 0.9))
    assert d.model == "qwen3-8b" and d.skipped == ("qwen3-30b-a3b",)
    assert "skipped unhealthy qwen3-30b-a3b" in d.reason


def test_nothing_healthy_queues_on_first_candidate() -> None:
    d = decide(RouteRequest(), PROD, frozenset(), C("math", 0.9))
    assert d.model == "qwen3-30b-a3b" and "no candidate healthy" in d.reason


def test_images_need_a_vision_model() -> None:
    with pytest.raises(NotServable) as e:
        decide(RouteRequest(has_images=True), PROD, ALL_PROD)
    assert e.value.code == "vision_not_supported" and e.value.param == "messages"
    assert error_kind(e.value).status == 400

    def add_vl(raw: dict[str, Any]) -> None:
        vl = dict(raw["profiles"]["production"]["models"][1], id="qwen3-vl-8b", source="Qwen/Qwen3-VL-8B-Instruct")
        vl["capabilities"] = {"vision": True}
        raw["profiles"]["production"]["models"].append(vl)

    prof = _profile(add_vl)
    d = decide(RouteRequest(has_images=True), prof, frozenset(m.id for m in prof.models), C("code", 0.9))
    assert (d.model, d.route) == ("qwen3-vl-8b", "vision")
    with pytest.raises(NotServable):
        decide(RouteRequest(model="qwen3-8b", has_images=True), prof, ALL_PROD)


def test_custom_category_route_from_yaml() -> None:
    def add_sql(raw: dict[str, Any]) -> None:
        raw["routes"]["categories"]["sql"] = {"candidates": ["moe"], "examples": ["SELECT * FROM t"]}

    prof = _profile(add_sql)
    assert prof.examples == {"sql": ["SELECT * FROM t"]}
    d = decide(RouteRequest(), prof, ALL_PROD, C("sql", 0.8))
    assert (d.model, d.route) == ("qwen3-30b-a3b", "sql")


# ---- thinking budget as a routing input ---------------------------------------------------


def test_big_budget_escalates_to_xl_when_the_route_allows() -> None:
    d = decide(RouteRequest(thinking_budget=16384, requested_budget=16384), PROD, ALL_PROD, C("math", 0.9))
    assert d.model == "qwen3-235b-a22b" and "escalated: budget 16384 >= 8192" in d.reason
    d = decide(RouteRequest(thinking_budget=4096, requested_budget=4096), PROD, ALL_PROD, C("math", 0.9))
    assert d.model == "qwen3-30b-a3b"
    # chat has no escalation: a huge budget does not buy the xl tier
    d = decide(RouteRequest(thinking_budget=16384, requested_budget=16384), PROD, ALL_PROD, C("chat", 0.9))
    assert d.model == "qwen3-1.7b"


def test_escalation_skips_unhealthy_xl() -> None:
    healthy = ALL_PROD - {"qwen3-235b-a22b"}
    d = decide(RouteRequest(thinking_budget=16384, requested_budget=16384), PROD, healthy, C("math", 0.9))
    assert d.model == "qwen3-30b-a3b"


def test_budget_zero_never_reaches_a_thinking_only_model() -> None:
    # local: math escalates to qwen3-tiny-thinking (thinking-only) ...
    d = decide(RouteRequest(thinking_budget=9000, requested_budget=9000), LOCAL, ALL_LOCAL, C("math", 0.9))
    assert d.model == "qwen3-tiny-thinking"
    # ... but not when the budget was capped to 0 (e.g. by max_tokens)
    d = decide(RouteRequest(thinking_budget=0, requested_budget=9000), LOCAL, ALL_LOCAL, C("math", 0.9))
    assert d.model != "qwen3-tiny-thinking"

    def thinking_first(raw: dict[str, Any]) -> None:
        raw["routes"]["categories"]["reasoning"] = {"candidates": ["xl", "moe"]}

    prof = _profile(thinking_first, "local")
    healthy = frozenset(m.id for m in prof.models)
    request = RouteRequest(thinking_budget=100, requested_budget=100)
    assert decide(request, prof, healthy, C("reasoning", 0.9)).model == "qwen3-tiny-thinking"
    d = decide(RouteRequest(thinking_budget=0, requested_budget=0), prof, healthy, C("reasoning", 0.9))
    assert d.model == "qwen3-moe-tiny" and "thinking-only qwen3-tiny-thinking excluded" in d.reason

    def only_thinking(raw: dict[str, Any]) -> None:
        raw["routes"]["categories"]["reasoning"] = {"candidates": ["xl"]}

    prof = _profile(only_thinking, "local")
    d = decide(RouteRequest(thinking_budget=0, requested_budget=0), prof, healthy, C("reasoning", 0.9))
    assert d.model == prof.default_route[0]


def test_positive_budget_prefers_models_that_can_think() -> None:
    def add_instruct(raw: dict[str, Any]) -> None:
        m = dict(raw["profiles"]["production"]["models"][0], id="qwen3-4b-instruct", family="qwen3-instruct-2507")
        m["capabilities"] = {"thinking": False}
        raw["profiles"]["production"]["models"].insert(0, m)

    prof = _profile(add_instruct)
    healthy = frozenset(m.id for m in prof.models)
    assert decide(RouteRequest(thinking_budget=0, requested_budget=0), prof, healthy, C("chat", 0.9)).model == (
        "qwen3-4b-instruct"
    )
    assert decide(RouteRequest(thinking_budget=512, requested_budget=512), prof, healthy, C("chat", 0.9)).model == (
        "qwen3-1.7b"
    )

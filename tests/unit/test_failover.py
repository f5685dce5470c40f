"""Failover's pure part (which candidate next, given what is up and what failed) and the one error
table. No Ray, no router."""

from __future__ import annotations

import pytest

from serve_graph.router.api import APIError
from serve_graph.router.errors import (
    ERRORS,
    EngineRejected,
    InvalidRequest,
    ModelNotFound,
    NotServable,
    ServeGraphError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_kind,
)
from serve_graph.router.failover import (
    UP,
    CandidateState,
    Failover,
    Fallback,
    candidate_state,
    fallback_header,
)

DOWN = CandidateState(False, "no_replica")
ASLEEP = CandidateState(False, "scaled_to_zero")


def _states(**states: CandidateState) -> dict[str, CandidateState]:
    return states


def _walk(f: Failover, states: dict[str, CandidateState]) -> list[tuple[str, bool, tuple[str, ...]]]:
    """Every step, each call failing with upstream_error after 1 s."""
    out = []
    while (step := f.next(states.__getitem__)) is not None:
        out.append((step.model, step.last, tuple(str(s) for s in step.skipped)))
        f.failed(step.model, "upstream_error", 1.0)
    return out


def test_first_up_candidate_gets_the_call_and_may_fail_over() -> None:
    f = Failover(["a", "b", "c"], max_attempts=3, budget_s=10)
    step = f.next(_states(a=UP, b=UP, c=UP).__getitem__)
    assert step is not None and (step.model, step.last, step.skipped) == ("a", False, ())


def test_candidates_before_the_first_up_one_are_passed_over_with_their_reason() -> None:
    f = Failover(["a", "b", "c"], max_attempts=3, budget_s=10)
    step = f.next(_states(a=ASLEEP, b=DOWN, c=UP).__getitem__)
    assert step is not None and step.model == "c" and step.last
    assert [str(s) for s in step.skipped] == ["a:scaled_to_zero", "b:no_replica"]
    assert f.fallbacks == list(step.skipped)


def test_failures_walk_the_route_in_order_within_max_attempts() -> None:
    states = _states(a=UP, b=UP, c=UP, d=UP)
    assert _walk(Failover(["a", "b", "c", "d"], max_attempts=3, budget_s=10), states) == [
        ("a", False, ()), ("b", False, ()), ("c", True, ())]


def test_a_failed_call_only_moves_to_candidates_that_are_up() -> None:
    f = Failover(["a", "b", "c"], max_attempts=3, budget_s=10)
    assert _walk(f, _states(a=UP, b=DOWN, c=UP)) == [("a", False, ()), ("c", True, ("b:no_replica",))]
    f = Failover(["a", "b"], max_attempts=3, budget_s=10)
    assert _walk(f, _states(a=UP, b=DOWN)) == [("a", True, ())]  # nothing else up: a's call is the last
    assert f.last_failure == Fallback("a", "upstream_error")


def test_nothing_up_the_first_candidate_queues_for_a_replica() -> None:
    f = Failover(["a", "b"], max_attempts=3, budget_s=10)
    assert _walk(f, _states(a=ASLEEP, b=DOWN)) == [("a", True, ())]


def test_an_explicit_model_is_its_only_candidate() -> None:
    for state in (UP, DOWN, ASLEEP):
        f = Failover(["m"], max_attempts=3, budget_s=10)
        assert _walk(f, _states(m=state)) == [("m", True, ())]


def test_time_spent_on_failed_calls_is_bounded() -> None:
    f = Failover(["a", "b", "c"], max_attempts=5, budget_s=2.5)
    states = _states(a=UP, b=UP, c=UP)
    step = f.next(states.__getitem__)
    assert step is not None
    f.failed("a", "no_replica", 2.0)
    step = f.next(states.__getitem__)
    assert step is not None and step.model == "b"
    f.failed("b", "replica_died", 0.6)
    assert f.spent_s == pytest.approx(2.6) and f.exhausted and f.next(states.__getitem__) is None
    assert fallback_header(f.fallbacks) == "a:no_replica,b:replica_died"


def test_duplicate_candidates_are_tried_once() -> None:
    assert _walk(Failover(["a", "a", "b"], max_attempts=3, budget_s=10), _states(a=UP, b=UP)) == [
        ("a", False, ()), ("b", True, ())]


@pytest.mark.parametrize(
    ("live", "ready", "min_replicas", "marked", "expected"),
    [
        (1, False, 1, None, UP),  # Serve's own replica set wins over a stale poll
        (0, True, 1, None, DOWN),  # ... both ways: a replica found dead is gone at once
        (0, False, 0, None, ASLEEP),
        (None, True, 1, None, UP),  # set not exposed: the poll decides
        (None, False, 0, None, ASLEEP),
        (None, False, 2, None, DOWN),
        (3, True, 1, "upstream_error", CandidateState(False, "upstream_error")),  # a fresh failure wins
    ],
)
def test_candidate_state(live: int | None, ready: bool, min_replicas: int, marked: str | None,
                         expected: CandidateState) -> None:
    assert candidate_state(live=live, ready=ready, min_replicas=min_replicas, marked=marked) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code", "param"),
    [
        (InvalidRequest("max_tokens: must be >= 1", param="max_tokens"), 400, "invalid_request_error",
         "invalid_value", "max_tokens"),
        (InvalidRequest("request body is empty", code="invalid_json"), 400, "invalid_request_error", "invalid_json",
         None),
        (ModelNotFound("no such model", param="model", code="model_not_found"), 404, "invalid_request_error",
         "model_not_found", "model"),
        (NotServable("no vision model", param="messages", code="vision_not_supported"), 400,
         "invalid_request_error", "vision_not_supported", "messages"),
        (EngineRejected("context exceeded", status=400, param="max_tokens"), 400, "invalid_request_error", None,
         "max_tokens"),
        (EngineRejected("too many", status=429), 429, "invalid_request_error", None, None),
        (UpstreamUnavailable("m has no replica", model="m"), 503, "service_unavailable", "no_replica", None),
        (UpstreamUnavailable("m died", model="m", reason="replica_died"), 503, "service_unavailable",
         "replica_died", None),
        (UpstreamUnavailable("queue full", model="m", reason="backpressure"), 503, "service_unavailable",
         "backpressure", None),
        (UpstreamError("m failed: engine error", model="m"), 502, "server_error", "upstream_error", None),
        (UpstreamTimeout("m did not answer", model="m"), 504, "timeout_error", "timeout", None),
        (ServeGraphError("?"), 500, "server_error", "internal_error", None),
        (KeyError("bug"), 500, "server_error", "internal_error", None),
    ],
)
def test_one_table_maps_every_error(exc: Exception, status: int, type_: str, code: str | None,
                                    param: str | None) -> None:
    kind = error_kind(exc)
    assert (kind.status, kind.type, kind.code) == (status, type_, code)
    body = APIError.of(exc).body()["error"]
    assert body == {"message": body["message"], "type": type_, "param": param, "code": code}
    assert body["message"] == (exc.message if isinstance(exc, ServeGraphError) else "internal error: KeyError")


def test_the_table_has_no_http_codes_outside_it() -> None:
    """policy, budget and plan raise typed errors; only the table knows statuses."""
    from pathlib import Path

    import serve_graph.router as pkg

    root = Path(pkg.__file__).parent
    for name in ("policy.py", "budget.py", "plan.py"):
        text = (root / name).read_text()
        assert "status" not in text and "404" not in text and "APIError" not in text, name
    assert set(ERRORS) >= {InvalidRequest, ModelNotFound, NotServable, EngineRejected, UpstreamUnavailable,
                           UpstreamError, UpstreamTimeout}

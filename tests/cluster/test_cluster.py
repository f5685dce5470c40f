"""Placement, pending models and autoscaling on a simulated multi-node GPU cluster (fake engine).

One scenario process (`tests/scenarios/cluster_serve.py`, a Ray session of its own: this process
may hold the session's single-node cluster of tests/conftest.py) starts a `ray.cluster_utils.Cluster`
whose nodes declare fake GPUs and `accelerator_type:*` resources, deploys the production profile's
shape with `engine="fake"`, and records what Ray and Serve did; each test below checks one claim of
that record. ~2 min on the 2-core machine, most of it replica processes importing vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import cluster_serve as scenario

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SCENARIO_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("cluster") / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(TEST_OUT=str(out), PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tests.scenarios.cluster_serve"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
    wall = time.monotonic() - t0
    progress = "\n".join(line for line in proc.stderr.splitlines() if line.startswith("[cluster_serve"))
    print(f"\ncluster scenario: {wall:.0f} s wall\n{progress}")
    assert out.exists(), f"scenario wrote no result (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    assert proc.returncode == 0 and "error" not in result, f"{result.get('error')}\n{proc.stderr[-6000:]}"
    assert "deploy_timeout" not in result, f"not every placeable model started: {result['deploy_timeout']}"
    yield result


def _groups(run: dict[str, Any], model_id: str) -> list[dict[str, Any]]:
    deployment = run["models"][model_id]["deployment"]
    return [pg for pg in run["placement_groups"] if f"#{deployment}#" in pg["name"]]


PLACEABLE = ["qwen3-1.7b", "qwen3-8b", "qwen3-30b-a3b", "qwen3-235b-a22b"]


def test_the_tier_stays_within_its_time_budget(run: dict[str, Any]) -> None:
    t = run["timings"]
    print(f"\ntimings (s): {t}")
    assert t["total_s"] < 300, t


def test_235b_bundles_all_land_on_the_one_8_gpu_node(run: dict[str, Any]) -> None:
    [pg] = _groups(run, "qwen3-235b-a22b")
    assert pg["state"] == "CREATED" and pg["strategy"] == "STRICT_PACK"
    assert len(pg["bundles"]) == 8 and all(b["GPU"] == 1 for b in pg["bundles"])
    assert set(pg["nodes"]) == {"h100x8"} and run["nodes"]["h100x8"]["GPU"] == 8


def test_moe_tp2_group_is_packed_on_one_node(run: dict[str, Any]) -> None:
    [pg] = _groups(run, "qwen3-30b-a3b")
    assert pg["state"] == "CREATED" and pg["strategy"] == "STRICT_PACK"
    assert len(pg["bundles"]) == 2 and len(set(pg["nodes"])) == 1


@pytest.mark.parametrize("model_id", PLACEABLE)
def test_each_model_lands_on_nodes_of_its_accelerator_type(run: dict[str, Any], model_id: str) -> None:
    accel = f"accelerator_type:{run['models'][model_id]['accelerator_type']}"
    [pg] = _groups(run, model_id)
    assert pg["state"] == "CREATED"
    assert all(b[accel] > 0 for b in pg["bundles"]), pg["bundles"]
    for node in pg["nodes"]:
        assert run["nodes"][node].get(accel, 0) > 0, (node, run["nodes"][node])
        # and no other accelerator type on that node
        assert [k for k in run["nodes"][node] if k.startswith("accelerator_type:")] == [accel]


def test_no_model_lands_on_the_head(run: dict[str, Any]) -> None:
    assert run["nodes"]["head"].get("GPU", 0) == 0
    placed = [n for pg in run["placement_groups"] for n in pg["nodes"] if n]
    assert placed and "head" not in placed


@pytest.mark.parametrize("model_id", PLACEABLE)
def test_the_router_reaches_every_placed_model(run: dict[str, Any], model_id: str) -> None:
    r = run["served"][model_id]
    assert r["status"] == 200 and r["model"] == model_id, r
    assert f"fake answer from {model_id}" in r["body"]


def test_routed_requests_are_served_too(run: dict[str, Any]) -> None:
    assert run["auto"]["status"] == 200 and run["auto"]["model"] in PLACEABLE


def test_the_unplaceable_models_route_fails_over(run: dict[str, Any]) -> None:
    """The chat route's first candidate is never placed: its requests go to the next candidate."""
    auto = run["auto"]
    assert auto["status"] == 200 and auto["model"] != scenario.FAILOVER_FROM
    assert auto["fallback"].startswith(f"{scenario.FAILOVER_FROM}:"), auto


@pytest.mark.parametrize("model_id", sorted(scenario.UNPLACEABLE))
def test_an_unplaceable_model_is_pending_and_says_why(run: dict[str, Any], model_id: str) -> None:
    [pg] = _groups(run, model_id)
    assert pg["state"] == "PENDING"
    serve_view = run["pending_serve"][model_id]
    assert serve_view["running"] == 0 and serve_view["starting"] == 1
    assert "to be scheduled" in serve_view["message"]  # Serve's own words, with the resources asked for
    why = run["pending_models"][model_id]  # serve_graph.app.pending_models: what /healthz can show
    logged = [line for line in run["build_log"] if model_id in line]  # the app builder's warning
    assert len(logged) == 1 and why in logged[0]
    if run["models"][model_id]["accelerator_type"] == "B200":
        assert "no node has accelerator_type:B200" in why
    else:
        assert "needs GPU 16" in why and "STRICT_PACK" in why and "has GPU 8" in why


def test_pending_models_do_not_take_the_app_down(run: dict[str, Any]) -> None:
    assert set(run["pending_models"]) == set(scenario.UNPLACEABLE)  # the placed ones are not pending
    assert all(r["status"] == 200 and r["model"] == m for m, r in run["served_while_pending"].items())
    # Serve keeps the application DEPLOYING until every min_replicas >= 1 model has a replica.
    assert run["app_status"]["status"] == "DEPLOYING"


def test_healthz_lists_the_pending_models_as_not_ready(run: dict[str, Any]) -> None:
    models = run["healthz"]["body"]["models"]
    for model_id in scenario.UNPLACEABLE:
        assert models[model_id]["ready"] is False and models[model_id]["running_replicas"] == 0
        assert models[model_id]["pending"] == run["pending_models"][model_id]  # and says why
    assert all(models[m]["ready"] for m in PLACEABLE)


def _running(run: dict[str, Any], deployment: str) -> list[int]:
    return [s["running"].get(deployment, 0) for s in run["autoscale"]["samples"]]


def test_load_scales_one_model_up_and_back_down(run: dict[str, Any]) -> None:
    a = run["autoscale"]
    print(f"\nautoscaling: 1 -> 2 replicas {a.get('up_s')} s after the load started, "
          f"2 -> 1 {a.get('down_s')} s after it stopped; requests {a['requests']}")
    series = _running(run, a["deployment"])
    assert series[0] == 1 and max(series) == 2 and series[-1] == 1, series
    assert "up_s" in a and "down_s" in a
    # every request of the load succeeded, on the loaded model (nothing failed over)
    assert set(a["requests"]) == {f"200 {scenario.SCALED}"} and a["requests"][f"200 {scenario.SCALED}"] > 0


def test_the_added_replica_lands_on_its_accelerator_type_too(run: dict[str, Any]) -> None:
    groups = run["autoscale"]["placement_groups"]
    assert len(groups) == 2 and all(pg["state"] == "CREATED" for pg in groups)
    assert {n for pg in groups for n in pg["nodes"]} == {"l4x2"}


def test_the_other_models_do_not_move(run: dict[str, Any]) -> None:
    scaled = run["autoscale"]["deployment"]
    others = [d for d in run["autoscale"]["samples"][0]["running"] if d != scaled]
    assert len(others) == len(run["models"])  # the other models and the router
    for d in others:
        assert len(set(_running(run, d))) == 1, (d, _running(run, d))

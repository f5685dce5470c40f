"""Catalog entry -> Ray: placement (bundles, strategy, accelerator type), autoscaling, the router's
options, whether a replica can be placed on given nodes, and the cluster/ manifests' node groups
against the production catalog. No Ray cluster: Ray's own LLMConfig / engine config / Serve config
models validate what we generate."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from serve_graph.app import deployment_name, pending_models, placement_report, router_options
from serve_graph.config import DEFAULT_MAX_QUEUED_REQUESTS, ModelSpec, load_config, parse_config
from serve_graph.deployments import (
    ACCELERATOR_HINT,
    autoscaling_config,
    engine_kwargs,
    llm_config_dict,
    llm_configs,
    placement_problem,
    replica_bundles,
)

REPO = Path(__file__).resolve().parents[2]
MODELS_YAML = REPO / "models.yaml"
PROD = load_config(MODELS_YAML).resolve("production")
LOCAL = load_config(MODELS_YAML).resolve("local")


def _model(model_id: str) -> ModelSpec:
    spec = PROD.model(model_id)
    assert spec is not None
    return spec


def _spec(**changes: Any) -> ModelSpec:
    """The production xl entry with some sections replaced (validated like models.yaml)."""
    data = _model("qwen3-235b-a22b").model_dump()
    for section, values in changes.items():
        data[section] = {**data[section], **values}
    return ModelSpec.model_validate(data)


# ---- placement in the generated LLMConfig ---------------------------------------------------------


def test_235b_is_eight_h100_bundles_strictly_packed() -> None:
    pg = llm_config_dict(_model("qwen3-235b-a22b"))["placement_group_config"]
    assert pg["strategy"] == "STRICT_PACK"
    assert pg["bundles"] == [{"CPU": 4, "GPU": 1, "accelerator_type:H100": ACCELERATOR_HINT}] * 8


def test_30b_moe_is_tp2_with_expert_parallel_on_two_a100() -> None:
    moe = _model("qwen3-30b-a3b")
    kw = engine_kwargs(moe)
    assert kw["tensor_parallel_size"] == 2 and kw["enable_expert_parallel"] is True
    cfg = llm_config_dict(moe)
    assert cfg["accelerator_type"] == "A100"
    assert cfg["placement_group_config"] == {
        "bundles": [{"CPU": 4, "GPU": 1, "accelerator_type:A100": ACCELERATOR_HINT}] * 2,
        "strategy": "STRICT_PACK",
    }


def test_every_production_model_has_its_own_accelerator_type() -> None:
    types = {m.id: m.resources.accelerator_type for m in PROD.models}
    assert types == {"qwen3-1.7b": "L4", "qwen3-8b": "L40S", "qwen3-30b-a3b": "A100", "qwen3-235b-a22b": "H100"}
    for m in PROD.models:
        bundles = llm_config_dict(m)["placement_group_config"]["bundles"]
        assert all(b[f"accelerator_type:{types[m.id]}"] > 0 for b in bundles)


def test_cpu_models_ask_for_no_gpu_and_no_accelerator() -> None:
    for m in LOCAL.models:
        cfg = llm_config_dict(m)
        assert cfg["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in cfg
        assert cfg["placement_group_config"]["bundles"] == [{"CPU": 0.5}]


def test_ray_reads_the_same_placement_from_our_llm_config() -> None:
    """Ray's engine config (what LLMServer turns into the replica's placement group) agrees."""
    configs = llm_configs(PROD)
    for m in PROD.models:
        engine = configs[m.id].get_engine_config()
        assert engine.placement_strategy == "STRICT_PACK"
        assert engine.placement_bundles == llm_config_dict(m)["placement_group_config"]["bundles"]
        assert configs[m.id].accelerator_type == m.resources.accelerator_type


def test_placement_strategy_and_pipeline_parallel_reach_the_bundles() -> None:
    spec = _spec(engine={"tensor_parallel_size": 4, "pipeline_parallel_size": 2},
                 resources={"placement_strategy": "PACK"})
    pg = llm_config_dict(spec)["placement_group_config"]
    assert pg["strategy"] == "PACK" and len(pg["bundles"]) == 8


def test_ray_rejects_an_unknown_accelerator_type_naming_the_model() -> None:
    data = copy.deepcopy(yaml.safe_load(MODELS_YAML.read_text()))
    data["profiles"]["production"]["models"][0]["resources"]["accelerator_type"] = "H-100"
    prof = parse_config(data, "x", REPO).resolve("production")
    with pytest.raises(ValueError, match="(?s)model 'qwen3-1.7b'.*Unsupported accelerator type: H-100"):
        llm_configs(prof)


# ---- autoscaling ------------------------------------------------------------------------------------


def test_autoscaling_maps_every_field() -> None:
    cfg = llm_config_dict(_model("qwen3-1.7b"))["deployment_config"]
    assert cfg["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 16,
                                         "upscale_delay_s": 30, "downscale_delay_s": 600, "look_back_period_s": 30}
    assert cfg["max_ongoing_requests"] == 64 and cfg["max_queued_requests"] == DEFAULT_MAX_QUEUED_REQUESTS == 128


def test_scale_to_zero_model_sleeps_until_woken() -> None:
    auto = autoscaling_config(_model("qwen3-235b-a22b"))
    assert auto["min_replicas"] == 0 and "initial_replicas" not in auto  # Serve starts min_replicas: 0
    assert auto["downscale_to_zero_delay_s"] == 1800 and auto["downscale_delay_s"] == 600
    woken = _spec(autoscaling={"initial_replicas": 1})
    assert autoscaling_config(woken)["initial_replicas"] == 1


@pytest.mark.parametrize(("value", "expected"), [(None, -1), (-1, -1), (1, 1), (512, 512)])
def test_max_queued_requests_unlimited_or_bounded(value: int | None, expected: int) -> None:
    spec = _spec(autoscaling={"max_queued_requests": value})
    assert llm_config_dict(spec)["deployment_config"]["max_queued_requests"] == expected


def test_ray_accepts_the_deployment_config_with_every_field_set() -> None:
    from ray.serve._private.config import DeploymentConfig

    spec = _spec(autoscaling={"initial_replicas": 1, "max_queued_requests": 7, "look_back_period_s": 12})
    dc = DeploymentConfig(**llm_config_dict(spec)["deployment_config"])
    assert dc.max_queued_requests == 7 and dc.max_ongoing_requests == 128
    a = dc.autoscaling_config
    assert a is not None
    assert (a.min_replicas, a.initial_replicas, a.max_replicas) == (0, 1, 2)
    assert (a.look_back_period_s, a.downscale_to_zero_delay_s) == (12, 1800)


def test_router_autoscales_with_its_delays() -> None:
    opts = router_options(PROD)
    assert opts["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64,
                                          "upscale_delay_s": 30, "downscale_delay_s": 600}
    assert opts["max_ongoing_requests"] == 1024 and opts["ray_actor_options"]["num_cpus"] == 0


# ---- can a replica be placed? -------------------------------------------------------------------------

H100x8 = {"CPU": 96.0, "GPU": 8.0, "accelerator_type:H100": 1.0, "memory": 1e12}
A100x2 = {"CPU": 16.0, "GPU": 2.0, "accelerator_type:A100": 1.0}
HEAD = {"CPU": 8.0}


def test_replica_actor_shares_the_first_bundle() -> None:
    spec = _spec(resources={"replica_cpus": 1})
    bundles = replica_bundles(spec)
    assert bundles[0]["CPU"] == 5 and all(b["CPU"] == 4 for b in bundles[1:])


def test_fits_on_a_node_of_its_type() -> None:
    assert placement_problem(_model("qwen3-235b-a22b"), [HEAD, A100x2, H100x8]) is None
    assert placement_problem(_model("qwen3-30b-a3b"), [HEAD, A100x2, H100x8]) is None


def test_no_node_of_its_type() -> None:
    why = placement_problem(_model("qwen3-1.7b"), [HEAD, A100x2, H100x8])
    assert why is not None and why.startswith("no node has accelerator_type:L4")
    assert "A100, H100" in why and "autoscaler" in why


def test_tp_group_larger_than_any_node_of_its_type() -> None:
    h100x4 = {**H100x8, "GPU": 4.0}
    why = placement_problem(_model("qwen3-235b-a22b"), [h100x4, h100x4, A100x2])
    assert why == ("one replica needs GPU 8, CPU 32 on one node (STRICT_PACK, 8 bundle(s) of GPU 1, CPU 4); "
                   "the largest node with accelerator_type:H100 has GPU 4, CPU 96")
    # PACK may spill the group over both nodes
    assert placement_problem(_spec(resources={"placement_strategy": "PACK"}), [h100x4, h100x4]) is None


def test_cpus_count_too() -> None:
    why = placement_problem(_model("qwen3-235b-a22b"), [{**H100x8, "CPU": 16.0}])
    assert why is not None and "needs GPU 8, CPU 32" in why and "has GPU 8, CPU 16" in why


def test_cpu_model_fits_any_node_with_cpus() -> None:
    assert placement_problem(LOCAL.models[0], [HEAD]) is None
    assert placement_problem(LOCAL.models[0], [{"GPU": 1.0}]) is not None


def test_placement_report_lists_only_what_cannot_be_placed() -> None:
    report = placement_report(PROD, [HEAD, H100x8])
    assert set(report) == {"qwen3-1.7b", "qwen3-8b", "qwen3-30b-a3b"}


# ---- pending models, from Serve's status ----------------------------------------------------------------


def _status(deployments: dict[str, tuple[dict[str, int], str]]) -> Any:
    deps = {name: SimpleNamespace(replica_states=states, message=message, status="UPDATING")
            for name, (states, message) in deployments.items()}
    return SimpleNamespace(applications={"app": SimpleNamespace(deployments=deps)})


def test_pending_models_name_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import serve

    status = _status({
        deployment_name("qwen3-1.7b"): ({"RUNNING": 1}, ""),  # serving
        deployment_name("qwen3-8b"): ({"STARTING": 1}, "Deployment 'x' ... to be scheduled ..."),  # Serve's words
        deployment_name("qwen3-30b-a3b"): ({"STARTING": 1}, ""),  # nothing known yet
        deployment_name("qwen3-235b-a22b"): ({"STARTING": 1}, "irrelevant"),  # ours: no H100 node
    })
    monkeypatch.setattr(serve, "status", lambda: status)
    nodes = [HEAD, A100x2, {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L4": 1.0},
             {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L40S": 1.0}]
    pending = pending_models(PROD, "app", nodes)
    assert set(pending) == {"qwen3-8b", "qwen3-30b-a3b", "qwen3-235b-a22b"}
    assert pending["qwen3-8b"].startswith("Deployment 'x'")
    assert pending["qwen3-30b-a3b"].startswith("starting")
    assert pending["qwen3-235b-a22b"].startswith("no node has accelerator_type:H100")


def test_pending_reason_is_pure() -> None:
    from serve_graph.app import pending_reason

    xl = _model("qwen3-235b-a22b")
    assert pending_reason(xl, {"RUNNING": 1, "STARTING": 1}, "", [HEAD]) is None  # one serves: not pending
    assert pending_reason(xl, {}, "", [HEAD]) is None  # asleep at zero
    assert pending_reason(xl, {"STARTING": 1}, "", [H100x8]) == "starting: replica scheduled, engine loading"
    assert pending_reason(xl, {"STARTING": 1}, "Serve says", [H100x8]) == "Serve says"
    assert pending_reason(xl, {"STARTING": 1}, "Serve says", [HEAD]).startswith("no node has")  # type: ignore[union-attr]


def test_build_time_log_names_each_unplaceable_model(caplog: pytest.LogCaptureFixture) -> None:
    from serve_graph.app import log_unplaceable

    with caplog.at_level("WARNING", logger="serve_graph.app"):
        log_unplaceable(PROD, [HEAD, A100x2])
    lines = {r.getMessage().split()[1]: r.getMessage() for r in caplog.records}
    assert set(lines) == {"qwen3-1.7b", "qwen3-8b", "qwen3-235b-a22b"}
    assert "it stays pending" in lines["qwen3-1.7b"] and "no node has accelerator_type:L4" in lines["qwen3-1.7b"]
    assert "once woken it stays pending" in lines["qwen3-235b-a22b"]  # scale to zero: asleep for now


def test_a_sleeping_model_is_not_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import serve

    monkeypatch.setattr(serve, "status", lambda: _status({deployment_name("qwen3-235b-a22b"): ({}, "")}))
    assert pending_models(PROD, "app", [HEAD]) == {}
    assert pending_models(PROD, "other-app", [HEAD]) == {}


# ---- cluster/: node groups that hold the production catalog ----------------------------------------------


def _rayservice_nodes() -> dict[str, tuple[dict[str, float], int]]:
    """group -> (resources of one pod as Ray sees them, max pods), from cluster/rayservice.yaml."""
    doc = next(yaml.safe_load_all((REPO / "cluster" / "rayservice.yaml").read_text()))
    out = {}
    for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        custom = json.loads(g["rayStartParams"]["resources"][1:-1].replace("\\", ""))
        res = {"CPU": float(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0)), **custom}
        out[g["groupName"]] = (res, g["maxReplicas"])
    return out


def _launcher_nodes() -> dict[str, tuple[dict[str, float], int]]:
    doc = yaml.safe_load((REPO / "cluster" / "cluster-launcher.yaml").read_text())
    return {name: (t["resources"], t["max_workers"]) for name, t in doc["available_node_types"].items()
            if name != doc["head_node_type"]}


@pytest.mark.parametrize("source", ["rayservice", "launcher"])
def test_node_groups_hold_every_production_model_at_max_replicas(source: str) -> None:
    groups = _rayservice_nodes() if source == "rayservice" else _launcher_nodes()
    for m in PROD.models:
        accel = m.resources.accelerator_resource
        mine = {name: g for name, g in groups.items() if accel in g[0]}
        assert len(mine) == 1, (m.id, accel, list(groups))  # one group per accelerator type
        [(name, (node, max_nodes))] = mine.items()
        assert placement_problem(m, [node]) is None, (m.id, name)
        per_node = min(int(node[k] // v) for k, v in _need(m).items() if v > 0)
        assert per_node * max_nodes >= m.autoscaling.max_replicas, (m.id, name, per_node, max_nodes)


def _need(m: ModelSpec) -> dict[str, float]:
    need: dict[str, float] = {}
    for b in replica_bundles(m):
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v
    return {k: v for k, v in need.items() if not k.startswith("accelerator_type:")}


def test_rayservice_head_has_no_gpu_and_the_autoscaler_is_on() -> None:
    doc = next(yaml.safe_load_all((REPO / "cluster" / "rayservice.yaml").read_text()))
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    h100 = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu-h100")
    assert h100["minReplicas"] == 0  # the 235B model scales to zero, so does its node
    assert _rayservice_nodes()["gpu-h100"][0]["GPU"] == 8


def test_launcher_head_has_no_gpu_and_autoscales() -> None:
    doc = yaml.safe_load((REPO / "cluster" / "cluster-launcher.yaml").read_text())
    head = doc["available_node_types"][doc["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert any("--num-cpus=0" in c and "--autoscaling-config" in c for c in doc["head_start_ray_commands"])
    assert sum(t["max_workers"] for t in doc["available_node_types"].values()) <= doc["max_workers"]

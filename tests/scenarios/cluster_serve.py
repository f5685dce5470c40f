"""The production profile's shape on a simulated multi-node GPU cluster, with the fake engine.

`ray.cluster_utils.Cluster` starts one raylet per node on this machine; each declares fake `GPU`
counts and Ray's `accelerator_type:<X>` resource (a head without GPUs, an 8-GPU H100 node, a 2-GPU
A100 node, L4 and L40S nodes). The app is `serve_graph.app:build_app` with `engine="fake"`: Ray's
LLMServer and placement groups are real, only the engine is ours, so no GPU is touched.

Phases, each bounded in time and recorded (a phase that runs out of time records what it saw, and
the tests say which claim failed):

1. deploy: production models (qwen3-235b-a22b woken at deploy time with initial_replicas 1) plus two
   models no node can hold (an accelerator type no node has; TP=16 > any node's GPUs);
2. placement: every placement group's bundles and the node each landed on;
3. serve: one request per placeable model through the router (x-serve-graph-model), and the
   pending models as Serve, `serve_graph.app.pending_models` and the build-time log report them;
4. autoscale: concurrent load on one model until it has 2 replicas, then none until it is back to
   1; every model's running replicas sampled throughout.

Run by tests/cluster/test_cluster.py as `python -m tests.scenarios.cluster_serve` (a Ray session of
its own: the session's single-node cluster of tests/conftest.py may be running in the parent).
Env: TEST_OUT (where to write the JSON result; also printed as the last stdout line).
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
APP = "serve_graph_cluster"

# Serve internals made fast for a test (inherited by every raylet and worker through the env).
RAY_ENV = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_SLOW_STARTUP_WARNING_S": "2",  # Serve's "waiting to be scheduled" status message
    "RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S": "2",
    "RAY_DEDUP_LOGS": "0",
}

# name -> node args. CPU counts are logical (what the real machines have), GPUs are declared only.
NODES: dict[str, dict[str, Any]] = {
    "head": {"num_cpus": 2, "num_gpus": 0},
    "h100x8": {"num_cpus": 64, "num_gpus": 8, "resources": {"accelerator_type:H100": 1}},
    "a100x2": {"num_cpus": 16, "num_gpus": 2, "resources": {"accelerator_type:A100": 1}},
    "l4x2": {"num_cpus": 16, "num_gpus": 2, "resources": {"accelerator_type:L4": 1}},
    "l40sx1": {"num_cpus": 8, "num_gpus": 1, "resources": {"accelerator_type:L40S": 1}},
}

SCALED = "qwen3-1.7b"  # the model under load (2 L4 GPUs: room for a second replica)
UNPLACEABLE = {
    # an accelerator type no node has
    "qwen3-8b-b200": {"source": "Qwen/Qwen3-8B", "tier": "medium", "accelerator_type": "B200", "tp": 1},
    # a TP group larger than any node (STRICT_PACK: never split across nodes)
    "qwen3-235b-tp16": {"source": "Qwen/Qwen3-235B-A22B", "tier": "xl", "accelerator_type": "H100", "tp": 16},
}
FAILOVER_FROM = "qwen3-8b-b200"  # first candidate of the chat route, never placed
# Short delays so that the autoscaler acts within seconds; Serve's own decision, not a shortcut.
FAST_AUTOSCALING = {"upscale_delay_s": 1, "downscale_delay_s": 3, "look_back_period_s": 2}
TARGET_ONGOING = 2
LOAD_CONCURRENCY = 8
FAKE_ENGINE = {"token_latency_ms": 40, "answer_tokens": 20}  # ~0.8 s per request

DEPLOY_BUDGET_S = 240
PENDING_BUDGET_S = 30
SCALE_UP_BUDGET_S = 60
SCALE_DOWN_BUDGET_S = 60


def scenario_config() -> dict[str, Any]:
    """models.yaml with only the production profile, shaped for the simulated cluster."""
    raw = yaml.safe_load((REPO / "models.yaml").read_text())
    prod = copy.deepcopy(raw["profiles"]["production"])
    for m in prod["models"]:
        a = m["autoscaling"]
        a.update(FAST_AUTOSCALING, max_replicas=2, target_ongoing_requests=TARGET_ONGOING, max_ongoing_requests=4)
        if a.get("min_replicas") == 0:  # scale-to-zero model: awake at deploy time, still min 0
            a["initial_replicas"] = 1
            a["downscale_to_zero_delay_s"] = 3600
    for model_id, u in UNPLACEABLE.items():
        template = next(m for m in prod["models"] if m["tier"] == u["tier"])
        m = copy.deepcopy(template)
        m.update(id=model_id, source=u["source"])
        m["engine"]["tensor_parallel_size"] = u["tp"]
        m["resources"]["accelerator_type"] = u["accelerator_type"]
        m["autoscaling"].update(min_replicas=1, initial_replicas=1)
        m["autoscaling"].pop("downscale_to_zero_delay_s", None)
        prod["models"].append(m)
    # The chat route starts with a model no node fits: its requests must fail over to the next.
    prod["routes"] = copy.deepcopy(raw["routes"])
    prod["routes"]["categories"]["chat"] = {"candidates": [FAILOVER_FROM, "small"]}
    raw["profiles"] = {"production": prod}
    raw["router"].update(min_replicas=1, max_replicas=1)
    return raw


def _say(msg: str) -> None:
    """Progress on stderr (the test shows it when a phase fails)."""
    print(f"[cluster_serve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _replicas(app: str) -> dict[str, dict[str, Any]]:
    """deployment -> {"status", "message", "running", "starting"} from Serve's controller."""
    from ray import serve

    from serve_graph.router.health import replica_counts

    status = serve.status().applications.get(app)
    out: dict[str, dict[str, Any]] = {}
    for name, dep in (status.deployments if status else {}).items():
        states = replica_counts(dep)
        out[name] = {"status": str(getattr(dep.status, "value", dep.status)), "message": dep.message,
                     "running": states.get("RUNNING", 0), "starting": states.get("STARTING", 0)}
    return out


def _running(app: str) -> dict[str, int]:
    return {name: d["running"] for name, d in _replicas(app).items()}


def _placement_groups(node_names: dict[str, str]) -> list[dict[str, Any]]:
    from ray.util import placement_group_table

    out = []
    for pg in placement_group_table().values():
        if pg.get("state") == "REMOVED":
            continue
        bundles = pg.get("bundles") or {}
        where = pg.get("bundles_to_node_id") or {}
        out.append({
            "name": pg.get("name", ""),
            "state": pg.get("state"),
            "strategy": pg.get("strategy"),
            "bundles": [dict(bundles[i]) for i in sorted(bundles)],
            "nodes": [node_names.get(where[i], where[i]) if i in where else None for i in sorted(bundles)],
        })
    return out


def _chat(client: Any, model: str) -> dict[str, Any]:
    r = client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi there, how are you today?"}],
        "max_tokens": 32, "thinking_token_budget": 0})
    return {"status": r.status_code, "model": r.headers.get("x-serve-graph-model"),
            "fallback": r.headers.get("x-serve-graph-fallback", ""), "body": r.text[:300]}


_COUNTS_LOCK = threading.Lock()


def _load(base_url: str, model: str, stop: threading.Event, counts: dict[str, int]) -> None:
    import httpx

    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(10_000):  # bounded; `stop` ends it long before
            if stop.is_set():
                return
            try:
                r = _chat(client, model)
                key = f"{r['status']} {r['model']}"  # e.g. "200 qwen3-1.7b": which model served it
            except httpx.HTTPError as e:
                key = type(e).__name__
            with _COUNTS_LOCK:
                counts[key] = counts.get(key, 0) + 1


def _autoscale(base_url: str, app: str, deployment: str, node_names: dict[str, str], result: dict[str, Any]) -> None:
    """Load on one model until it runs 2 replicas (or the budget ends), then none until it is
    back to 1; every deployment's RUNNING count sampled every 0.25 s."""
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=_load, args=(base_url, SCALED, stop, counts), daemon=True)
               for _ in range(LOAD_CONCURRENCY)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        while time.monotonic() - t0 < SCALE_UP_BUDGET_S:
            running = _running(app)
            samples.append({"t": round(time.monotonic() - t0, 2), "phase": "load", "running": running})
            if running.get(deployment, 0) >= 2:
                result["up_s"] = round(time.monotonic() - t0, 1)
                result["placement_groups"] = [pg for pg in _placement_groups(node_names)
                                              if f"#{deployment}#" in pg["name"]]
                break
            time.sleep(0.25)
        time.sleep(2)  # keep the load on a little: two replicas serve it, nothing else moves
        samples.append({"t": round(time.monotonic() - t0, 2), "phase": "load", "running": _running(app)})
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=70)
    t1 = time.monotonic()
    while time.monotonic() - t1 < SCALE_DOWN_BUDGET_S:
        running = _running(app)
        samples.append({"t": round(time.monotonic() - t0, 2), "phase": "idle", "running": running})
        if running.get(deployment, 0) == 1:
            result["down_s"] = round(time.monotonic() - t1, 1)
            break
        time.sleep(0.25)
    result["samples"] = samples
    result["requests"] = counts


def run(result: dict[str, Any]) -> None:
    os.environ.update(RAY_ENV)
    import httpx
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster
    from ray.serve.api import RunTarget

    from serve_graph.app import build_app, deployment_name, pending_models
    from serve_graph.config import parse_config
    from serve_graph.testing.serve import free_port

    timings: dict[str, float] = result.setdefault("timings", {})
    t0 = time.monotonic()
    raw = scenario_config()
    profile = parse_config(copy.deepcopy(raw), "scenario", REPO).resolve("production")
    result["models"] = {m.id: {"accelerator_type": m.resources.accelerator_type, "workers": m.workers,
                               "deployment": deployment_name(m.id)} for m in profile.models}

    cluster = Cluster(initialize_head=True, head_node_args={**NODES["head"], "include_dashboard": False,
                                                              "object_store_memory": 80 * 1024**2})
    try:
        node_ids = {}
        for name, args in NODES.items():
            if name != "head":
                node_ids[cluster.add_node(**args, object_store_memory=80 * 1024**2).node_id] = name
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        node_ids[ray.get_runtime_context().get_node_id()] = "head"
        nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
        node_ids.update({nid: "head" for nid, n in nodes.items() if nid not in node_ids})
        result["nodes"] = {node_ids[nid]: n["Resources"] for nid, n in nodes.items()}
        timings["cluster_s"] = round(time.monotonic() - t0, 1)
        _say(f"cluster of {len(result['nodes'])} nodes up in {timings['cluster_s']} s")

        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        records = _Records()
        logging.getLogger("serve_graph").addHandler(records)
        t1 = time.monotonic()
        app = build_app({"models": raw, "profile": "production", "base_dir": str(REPO), "engine": "fake",
                         "fake_engine": FAKE_ENGINE})
        # serve.run would wait for the application to be RUNNING, which it is not while a model is
        # pending (Serve says DEPLOYING); the app serves meanwhile, which is the point.
        serve.run_many([RunTarget(app, name=APP, route_prefix="/")], wait_for_applications_running=False)
        result["build_log"] = records.lines

        placeable = [m.id for m in profile.models if m.id not in UNPLACEABLE]
        wanted = [deployment_name(m) for m in placeable] + ["Router"]
        deadline = time.monotonic() + DEPLOY_BUDGET_S
        running: dict[str, int] = {}
        while time.monotonic() < deadline:
            running = _running(APP)
            if all(running.get(d, 0) >= 1 for d in wanted):
                break
            time.sleep(0.5)
        result["deployed"] = running
        timings["deploy_s"] = round(time.monotonic() - t1, 1)
        _say(f"deployed in {timings['deploy_s']} s: {running}")
        if not all(running.get(d, 0) >= 1 for d in wanted):
            result["deploy_timeout"] = _replicas(APP)
            return

        result["placement_groups"] = _placement_groups(node_ids)
        _say(f"{len(result['placement_groups'])} placement groups")
        base_url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base_url, timeout=60) as client:
            result["served"] = {m: _chat(client, m) for m in placeable}
            result["auto"] = _chat(client, "auto")
            deadline = time.monotonic() + PENDING_BUDGET_S
            while time.monotonic() < deadline:  # Serve's message comes after SLOW_STARTUP_WARNING_S
                serve_view = _replicas(APP)
                if all(serve_view.get(deployment_name(m), {}).get("message") for m in UNPLACEABLE):
                    break
                time.sleep(0.5)
            result["pending_serve"] = {m: serve_view.get(deployment_name(m)) for m in UNPLACEABLE}
            result["pending_models"] = pending_models(profile, APP)
            app_status = serve.status().applications[APP]
            result["app_status"] = {"status": str(getattr(app_status.status, "value", app_status.status)),
                                    "message": app_status.message}
            _say(f"pending: {result['pending_models']}")
            r = client.get("/healthz")
            result["healthz"] = {"status": r.status_code, "body": r.json()}
            result["served_while_pending"] = {m: _chat(client, m) for m in placeable}
        _say("checks done")
        timings["checks_s"] = round(time.monotonic() - t1 - timings["deploy_s"], 1)

        t2 = time.monotonic()
        scale: dict[str, Any] = {"deployment": deployment_name(SCALED)}
        result["autoscale"] = scale
        _autoscale(base_url, APP, deployment_name(SCALED), node_ids, scale)
        timings["autoscale_s"] = round(time.monotonic() - t2, 1)
        _say(f"autoscale phase done in {timings['autoscale_s']} s")
    finally:
        t3 = time.monotonic()
        _say("shutting down")
        # No serve.shutdown(): the whole cluster goes, replicas with it (a graceful Serve shutdown
        # with pending replicas took ~25 s of the scenario's time for nothing).
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()
        timings["shutdown_s"] = round(time.monotonic() - t3, 1)
        timings["total_s"] = round(time.monotonic() - t0, 1)


def main() -> None:
    result: dict[str, Any] = {}
    try:
        run(result)
    except Exception as e:  # recorded for the tests to show; the process still exits non-zero
        result["error"] = repr(e)
        raise
    finally:
        text = json.dumps(result, default=str)
        if os.environ.get("TEST_OUT"):
            Path(os.environ["TEST_OUT"]).write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()

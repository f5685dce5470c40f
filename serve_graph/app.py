"""Ray Serve application builder: models.yaml -> one LLMServer per catalog model + the Router.

    serve run serve_graph.app:build_app config=models.yaml profile=local

`args` may carry `config` (a path) or `models` (the whole file, inline: what `serve-graph render`
embeds so a RayService needs no file in the image), and `profile`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from ray.serve.deployment import Application

from serve_graph.config import ModelSpec, ResolvedProfile, ServeGraphConfig, load_config, parse_config

DEFAULT_PROFILE_ENV = "SERVE_GRAPH_PROFILE"
DEFAULT_CONFIG_ENV = "SERVE_GRAPH_CONFIG"
# The engine behind every LLMServer. fake: serve_graph.testing.fake_engine (tests, demos without vLLM).
Engine = Literal["vllm", "fake"]
ENGINES: tuple[str, ...] = get_args(Engine)
# name_prefix keeps Ray's usual deployment names (LLMServer:<id>) for our LLMServer subclass.
DEPLOYMENT_PREFIX = "LLMServer:"

logger = logging.getLogger("serve_graph.app")


def load_profile(args: dict[str, Any]) -> ResolvedProfile:
    """The profile named by args (or $SERVE_GRAPH_PROFILE, else `local`), fully validated."""
    cfg: ServeGraphConfig
    if args.get("models") is not None:
        cfg = parse_config(args["models"], "serve_config args.models", Path(args.get("base_dir") or os.getcwd()))
    else:
        path = args.get("config") or os.environ.get(DEFAULT_CONFIG_ENV) or "models.yaml"
        cfg = load_config(path)
    profile = args.get("profile") or os.environ.get(DEFAULT_PROFILE_ENV) or "local"
    return cfg.resolve(profile)


def router_options(profile: ResolvedProfile) -> dict[str, Any]:
    """The Router deployment's options: it autoscales on ongoing requests like a model, never to zero."""
    from serve_graph.tracing import env_for_workers

    r = profile.router
    actor: dict[str, Any] = {"num_cpus": r.num_cpus}
    env = env_for_workers(profile.tracing)
    if env:
        actor["runtime_env"] = {"env_vars": env}
    return {
        "ray_actor_options": actor,
        "max_ongoing_requests": r.max_ongoing_requests,
        "autoscaling_config": {
            "min_replicas": r.min_replicas,
            "max_replicas": r.max_replicas,
            "target_ongoing_requests": r.target_ongoing_requests,
            "upscale_delay_s": r.upscale_delay_s,
            "downscale_delay_s": r.downscale_delay_s,
        },
    }


# ---- models that cannot be placed -------------------------------------------------------------------


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of every live node of the connected Ray cluster (blocking GCS call)."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def placement_report(profile: ResolvedProfile, nodes: list[dict[str, float]] | None = None) -> dict[str, str]:
    """model id -> why one of its replicas fits none of the cluster's current nodes (models that
    fit are absent). Such a model stays pending (Serve keeps its replica waiting for a node, the Ray
    autoscaler may add one); the app and every other model serve meanwhile."""
    from serve_graph.deployments import placement_problem

    nodes = cluster_nodes() if nodes is None else nodes
    return {m.id: why for m in profile.models if (why := placement_problem(m, nodes)) is not None}


def pending_reason(
    spec: ModelSpec, replica_states: Mapping[str, int], serve_message: str, nodes: list[dict[str, float]]
) -> str | None:
    """Why a model has no running replica while Serve is starting one, or None when it is not
    pending (it runs, or it sleeps at zero with nothing to start). Pure: `replica_states` is Serve's
    per-state replica count of the deployment (state names as strings), `serve_message` its status
    message, `nodes` the cluster's node totals.

    The reason is, in order: our placement check ("no node has accelerator_type:B200 ..."), else
    Serve's own message (after RAY_SERVE_SLOW_STARTUP_WARNING_S, 30 s by default, it names the
    resources a replica waits for), else "starting".
    """
    from serve_graph.deployments import placement_problem

    if replica_states.get("RUNNING", 0) > 0 or not replica_states.get("STARTING", 0):
        return None
    return placement_problem(spec, nodes) or serve_message or "starting: replica scheduled, engine loading"


def pending_models(
    profile: ResolvedProfile, app_name: str, nodes: list[dict[str, float]] | None = None
) -> dict[str, str]:
    """model id -> why it is pending (see `pending_reason`), from Serve's controller and the
    cluster's nodes (blocking calls; run it off the event loop)."""
    from ray import serve

    from serve_graph.router.health import replica_counts

    app = serve.status().applications.get(app_name)
    if app is None:
        return {}
    found = [(m, dep) for m in profile.models if (dep := app.deployments.get(deployment_name(m.id))) is not None]
    states = {m.id: replica_counts(dep) for m, dep in found}
    if not any(s.get("STARTING", 0) and not s.get("RUNNING", 0) for s in states.values()):
        return {}  # nothing is starting: no need to ask the GCS for the nodes
    nodes = cluster_nodes() if nodes is None else nodes
    out: dict[str, str] = {}
    for m, dep in found:
        if (why := pending_reason(m, states[m.id], dep.message, nodes)) is not None:
            out[m.id] = why
    return out


def deployment_name(model_id: str) -> str:
    """The Serve deployment of a model (Ray's LLM builder naming, with our `LLMServer:` prefix)."""
    return DEPLOYMENT_PREFIX + model_id.replace("/", "--").replace(".", "_")


def log_unplaceable(profile: ResolvedProfile, nodes: list[dict[str, float]] | None = None) -> None:
    """At build time, on a live cluster (or given nodes): say which models cannot be placed on its
    nodes, and why."""
    import ray

    if nodes is None and not ray.is_initialized():
        return
    try:
        report = placement_report(profile, nodes)
    except Exception as e:  # noqa: BLE001 - a GCS hiccup must not stop the app from deploying
        logger.warning("placement check skipped: %s", e)
        return
    for m in profile.models:
        if (why := report.get(m.id)) is None:
            continue
        asleep = not (m.autoscaling.initial_replicas or m.autoscaling.min_replicas)
        logger.warning("model %s cannot be placed on the cluster's current nodes; %s until a node that fits "
                       "joins (the other models serve): %s", m.id,
                       "once woken it stays pending" if asleep else "it stays pending", why)


def build_graph(
    profile: ResolvedProfile, engine: Engine = "vllm", fake_engine: dict[str, Any] | None = None
) -> Application:
    """LLMServer deployments from Ray's builder, bound into our Router as handles.

    `engine="fake"` injects `serve_graph.testing.fake_engine.FakeEngine` into every LLMServer (Ray's
    `engine_cls` constructor argument) with `fake_engine` settings: the whole app without vLLM.
    """
    from ray.serve.llm import build_llm_deployment

    from serve_graph.deployments import llm_configs
    from serve_graph.router.ingress import Router

    bind_kwargs: dict[str, Any] = {}
    if engine == "fake":
        from serve_graph.testing.fake_engine import FakeEngine

        bind_kwargs["engine_cls"] = FakeEngine
    configs = llm_configs(profile, fake_engine=(fake_engine or {}) if engine == "fake" else None)
    servers = {
        model_id: build_llm_deployment(cfg, name_prefix=DEPLOYMENT_PREFIX, bind_kwargs=bind_kwargs)
        for model_id, cfg in configs.items()
    }
    log_unplaceable(profile)
    return Router.options(**router_options(profile)).bind(profile.model_dump(mode="json"), servers)


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder (the `import_path` of `serve run` and of rendered configs).

    `engine` (`vllm`, the default, or `fake`) and `fake_engine` (a dict of FakeEngine settings)
    select the engine behind every LLMServer.
    """
    engine = args.get("engine") or "vllm"
    if engine not in ENGINES:
        raise ValueError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    return build_graph(load_profile(args), engine=engine, fake_engine=args.get("fake_engine"))

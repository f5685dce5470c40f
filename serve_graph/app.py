"""Ray Serve application builder: models.yaml -> one LLMServer per catalog model + the Router.

    serve run serve_graph.app:build_app config=models.yaml profile=local

`args` may carry `config` (a path) or `models` (the whole file, inline: what `serve-graph render`
embeds so a RayService needs no file in the image), and `profile`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from ray.serve.deployment import Application

from serve_graph.config import ResolvedProfile, ServeGraphConfig, load_config, parse_config

DEFAULT_PROFILE_ENV = "SERVE_GRAPH_PROFILE"
DEFAULT_CONFIG_ENV = "SERVE_GRAPH_CONFIG"
# The engine behind every LLMServer. fake: serve_graph.testing.fake_engine (tests, demos without vLLM).
Engine = Literal["vllm", "fake"]
ENGINES: tuple[str, ...] = get_args(Engine)


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
        },
    }


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
    configs = llm_configs(profile, fake_engine=dict(fake_engine or {}) if engine == "fake" else None)
    # name_prefix keeps Ray's usual deployment names (LLMServer:<id>) for our LLMServer subclass.
    servers = {
        model_id: build_llm_deployment(cfg, name_prefix="LLMServer:", bind_kwargs=bind_kwargs)
        for model_id, cfg in configs.items()
    }
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

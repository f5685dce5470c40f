"""Catalog entry -> `ray.serve.llm.LLMConfig`.

This is the only place that knows Ray Serve LLM's configuration vocabulary. We configure Ray's
`LLMServer` (it owns vLLM start-up, TP placement groups, engine metrics, LoRA); we do not wrap
the engine ourselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from serve_graph import tracing
from serve_graph.config import ModelSpec, ResolvedProfile, TracingSettings

# Ray batches streamed chunks every 50 ms by default, which delays the first token by ~48 ms at low
# load (platform notes). A router in front of many models must not add that to TTFT.
STREAM_BATCHING_INTERVAL_MS = 0

# The qwen3 parser separates <think>...</think> into `message.reasoning`; the reasoning config
# lets vLLM enforce `thinking_token_budget` by forcing the end string.
REASONING_PARSER = "qwen3"

# Ray's LLMServer plus one SERVER span per call, child of the router's span (serve_graph/server.py).
SERVER_CLS = "serve_graph.server:TracedLLMServer"


def engine_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """vLLM engine arguments for one model. Thinking models get the budget machinery."""
    e = spec.engine
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": e.tensor_parallel_size,
        "pipeline_parallel_size": e.pipeline_parallel_size,
        "dtype": e.dtype,
        "max_model_len": spec.max_model_len,
        "enforce_eager": e.enforce_eager,
    }
    optional = {
        "enable_expert_parallel": e.enable_expert_parallel or None,
        "quantization": e.quantization,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "max_num_seqs": e.max_num_seqs,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if spec.capabilities.thinking:
        kwargs["reasoning_parser"] = REASONING_PARSER
        kwargs["reasoning_config"] = {
            "reasoning_parser": REASONING_PARSER,
            "reasoning_start_str": "<think>",
            "reasoning_end_str": e.reasoning_end,
        }
    kwargs.update(e.extra_kwargs)
    return kwargs


# Every bundle of a model with an accelerator type asks for this much of the node's
# `accelerator_type:<X>` resource (1 per node): the bundle can only land on a node of that type, and
# a whole TP=8 group (0.008) still fits one node. The same amount Ray's LLM builder would add itself.
ACCELERATOR_HINT = 0.001


def placement_bundles(spec: ModelSpec) -> list[dict[str, float]]:
    """One bundle per engine worker (TP x PP): its CPUs, GPUs and accelerator type."""
    r = spec.resources
    bundle: dict[str, float] = {"CPU": r.cpus_per_worker}
    if not r.is_cpu:
        bundle["GPU"] = r.gpus_per_worker
    if r.accelerator_resource:
        bundle[r.accelerator_resource] = ACCELERATOR_HINT
    return [dict(bundle) for _ in range(spec.workers)]


def _placement(spec: ModelSpec) -> dict[str, Any]:
    """Ray's placement group for one replica: the bundles and `resources.placement_strategy`
    (STRICT_PACK by default: a TP group on one node, or the replica waits for a node that fits)."""
    return {"bundles": placement_bundles(spec), "strategy": spec.resources.placement_strategy}


def autoscaling_config(spec: ModelSpec) -> dict[str, Any]:
    """Serve's `autoscaling_config` for one model, every field explicit."""
    a = spec.autoscaling
    autoscaling: dict[str, Any] = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "look_back_period_s": a.look_back_period_s,
    }
    if a.initial_replicas is not None:
        autoscaling["initial_replicas"] = a.initial_replicas
    if a.downscale_to_zero_delay_s is not None:
        autoscaling["downscale_to_zero_delay_s"] = a.downscale_to_zero_delay_s
    return autoscaling


def _deployment_config(spec: ModelSpec) -> dict[str, Any]:
    a = spec.autoscaling
    return {
        "autoscaling_config": autoscaling_config(spec),
        "max_ongoing_requests": a.max_ongoing_requests,
        "max_queued_requests": a.max_queued_requests,
        "ray_actor_options": {"num_cpus": spec.resources.replica_cpus},
    }


def llm_config_dict(
    spec: ModelSpec, profile_env: dict[str, str] | None = None, tracing_settings: TracingSettings | None = None
) -> dict[str, Any]:
    """The LLMConfig as plain data (what Ray validates).

    Tracing is configured in one place (OTEL_* env of the process that builds the app, or the
    `tracing:` section) and reaches the replica and its engine processes through runtime_env.
    """
    env = {**tracing.env_for_workers(tracing_settings), **(profile_env or {}), **spec.env}
    cfg: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.id, "model_source": spec.source},
        "engine_kwargs": {**engine_kwargs(spec), **tracing.engine_kwargs_for_tracing(tracing_settings)},
        "server_cls": SERVER_CLS,
        "placement_group_config": _placement(spec),
        "deployment_config": _deployment_config(spec),
        "experimental_configs": {"stream_batching_interval_ms": STREAM_BATCHING_INTERVAL_MS},
        "log_engine_metrics": True,
    }
    if spec.resources.is_cpu:
        cfg["accelerator_config"] = {"kind": "cpu"}
    elif spec.resources.accelerator_type:
        cfg["accelerator_type"] = spec.resources.accelerator_type
    if env:
        cfg["runtime_env"] = {"env_vars": env}
    return cfg


def llm_configs(profile: ResolvedProfile, fake_engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """model id -> validated `ray.serve.llm.LLMConfig` for every catalog entry.

    `fake_engine` (settings of `serve_graph.testing.fake_engine.FakeEngine`, `{}` for defaults) goes
    into each config's `experimental_configs`, with what the fake must know about the model.
    """
    from ray.serve.llm import LLMConfig

    out = {}
    for m in profile.models:
        cfg = llm_config_dict(m, profile.env, profile.tracing)
        if fake_engine is not None:
            cfg["experimental_configs"]["fake_engine"] = {"always_thinks": m.always_thinks, **fake_engine}
        try:
            out[m.id] = LLMConfig(**cfg)
        except ValueError as e:  # Ray's own validation, e.g. an accelerator type it does not know
            raise ValueError(f"profile {profile.name!r}, model {m.id!r}: Ray rejected its LLMConfig: {e}") from e
    return out


# ---- can a replica be placed at all? -------------------------------------------------------------

def replica_bundles(spec: ModelSpec) -> list[dict[str, float]]:
    """What Serve reserves for one replica: the engine bundles, the replica actor sharing the first
    (as Ray's LLMServer merges them)."""
    bundles = placement_bundles(spec)
    bundles[0]["CPU"] = bundles[0].get("CPU", 0.0) + spec.resources.replica_cpus
    return bundles


def _total(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Resources summed over bundles (or nodes)."""
    out: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _fits(need: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items() if v > 0)


def _fmt(res: Mapping[str, float], keys: list[str]) -> str:
    return ", ".join(f"{k} {res.get(k, 0.0):g}" for k in keys)


def placement_problem(spec: ModelSpec, nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why one replica of `spec` cannot be placed on any of these nodes (their *total* resources,
    e.g. `ray.nodes()[i]["Resources"]`), or None when some node (or set of nodes, per strategy) could
    hold it once free. Pure: the router and the app builder use it to say why a model is pending."""
    bundles = replica_bundles(spec)
    accel = spec.resources.accelerator_resource
    strategy = spec.resources.placement_strategy
    typed = [n for n in nodes if accel is None or n.get(accel, 0.0) > 0]
    if accel is not None and not typed:
        types = sorted({k.split(":", 1)[1] for n in nodes for k in n if k.startswith("accelerator_type:")})
        return (f"no node has {accel} (accelerator types in the cluster: {', '.join(types) or 'none'}); "
                "waiting for such a node (the Ray autoscaler adds one if a node type provides it)")
    keys = [k for k in ("GPU", "CPU") if any(b.get(k, 0.0) > 0 for b in bundles)]
    where = f"node with {accel}" if accel else "node"
    biggest = max(typed, key=lambda n: tuple(n.get(k, 0.0) for k in keys), default={})
    shape = f"{len(bundles)} bundle(s) of {_fmt(bundles[-1], keys)}"
    need = _total(bundles)
    if strategy == "STRICT_PACK":
        if not any(_fits(need, n) for n in typed):
            return (f"one replica needs {_fmt(need, keys)} on one node (STRICT_PACK, {shape}); "
                    f"the largest {where} has {_fmt(biggest, keys)}")
        return None
    if not all(any(_fits(b, n) for n in typed) for b in bundles):
        return (f"a bundle of {_fmt(bundles[0], keys)} fits no {where} ({strategy}); "
                f"the largest has {_fmt(biggest, keys)}")
    if strategy == "STRICT_SPREAD" and sum(1 for n in typed if _fits(bundles[0], n)) < len(bundles):
        return f"STRICT_SPREAD needs {len(bundles)} distinct {where}s that fit {_fmt(bundles[0], keys)}"
    if not _fits(need, _total(typed)):
        return f"one replica needs {_fmt(need, keys)} ({strategy}, {shape}); all {where}s together have less"
    return None

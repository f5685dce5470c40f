"""Catalog entry -> `ray.serve.llm.LLMConfig`.

This is the only place that knows Ray Serve LLM's configuration vocabulary. We configure Ray's
`LLMServer` (it owns vLLM start-up, TP placement groups, engine metrics, LoRA); we do not wrap
the engine ourselves.
"""

from __future__ import annotations

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


def _placement(spec: ModelSpec) -> dict[str, Any]:
    """One bundle per engine worker (TP x PP); PACK keeps a TP group on one node when it fits."""
    r = spec.resources
    bundle: dict[str, float] = {"CPU": r.cpus_per_worker}
    if not r.is_cpu:
        bundle["GPU"] = r.gpus_per_worker
    workers = spec.engine.tensor_parallel_size * spec.engine.pipeline_parallel_size
    return {"bundles": [dict(bundle) for _ in range(workers)], "strategy": "PACK"}


def _deployment_config(spec: ModelSpec) -> dict[str, Any]:
    a = spec.autoscaling
    autoscaling = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
    }
    if a.initial_replicas is not None:
        autoscaling["initial_replicas"] = a.initial_replicas
    return {
        "autoscaling_config": autoscaling,
        "max_ongoing_requests": a.max_ongoing_requests,
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
        out[m.id] = LLMConfig(**cfg)
    return out

"""The catalog: one entry per model (what to load, how to run it, how it may be routed to)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from serve_graph.config.base import Section, check_scaling

Family = Literal["qwen3", "qwen3-instruct-2507", "qwen3-thinking-2507"]
Tier = Literal["small", "medium", "moe", "xl"]
TIERS: tuple[str, ...] = ("small", "medium", "moe", "xl")
AUTO_MODEL = "auto"


class Capabilities(Section):
    thinking: bool = Field(True, description="The model can emit a <think> block.")
    vision: bool = Field(False, description="The model accepts image content parts.")
    code: bool = Field(False, description="A coder model; preferred by routes asking for code.")


class Architecture(Section):
    """Head counts, needed to check tensor parallelism before a GPU is ever reserved.

    Optional for a local checkpoint (read from its config.json); give them for hub ids.
    """

    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)


class EngineSettings(Section):
    """vLLM engine settings we validate; `extra_kwargs` passes anything else to vLLM unchanged."""

    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    enable_expert_parallel: bool = False
    quantization: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = Field(None, gt=0)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_num_seqs: int | None = Field(None, gt=0)
    enforce_eager: bool = False
    reasoning_end: str = Field(
        "</think>",
        description="What vLLM forces when the thinking budget runs out. It may start with an "
        "early-stop sentence (as Qwen recommends) but must end with </think>.",
    )
    extra_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("reasoning_end")
    @classmethod
    def _ends_thinking(cls, v: str) -> str:
        if not v.rstrip().endswith("</think>"):
            raise ValueError("must end with </think> (the qwen3 parser's end of reasoning)")
        return v


# How the bundles of one replica (its TP x PP engine workers) may spread over nodes: Ray's placement
# group strategies. STRICT_PACK (the default) keeps a replica on one node or leaves it pending.
PlacementStrategy = Literal["STRICT_PACK", "PACK", "SPREAD", "STRICT_SPREAD"]


class Resources(Section):
    """What one engine worker reserves from Ray (one bundle per TP x PP worker) and where a
    replica's bundles may go."""

    accelerator_type: str | None = Field(
        None,
        description="Ray accelerator type, e.g. H100, A100, L4: every bundle asks for a sliver of the "
        "node's `accelerator_type:<X>` resource, so the model only runs on nodes of that type. "
        "None with gpus_per_worker 0 = CPU.",
    )
    gpus_per_worker: float = Field(1.0, ge=0)
    cpus_per_worker: float = Field(1.0, ge=0)
    replica_cpus: float = Field(
        0.0, ge=0, description="CPU for the replica actor itself (it mostly waits on the engine)."
    )
    placement_strategy: PlacementStrategy = Field(
        "STRICT_PACK",
        description="Ray placement group strategy for one replica's bundles. STRICT_PACK: all on one "
        "node, else the replica stays pending (a TP group over the network is too slow to be worth "
        "it). PACK: one node if possible, else spill over (pipeline stages across nodes).",
    )

    @model_validator(mode="after")
    def _accelerator_needs_gpus(self) -> Resources:
        if self.accelerator_type is not None and self.is_cpu:
            raise ValueError(
                f"accelerator_type {self.accelerator_type!r} needs gpus_per_worker > 0 "
                "(gpus_per_worker 0 means a CPU engine)"
            )
        return self

    @property
    def is_cpu(self) -> bool:
        return self.gpus_per_worker == 0

    @property
    def accelerator_resource(self) -> str | None:
        """Ray's custom resource for the accelerator type (every node of that type has 1 of it)."""
        return f"accelerator_type:{self.accelerator_type}" if self.accelerator_type else None


# Requests one caller (a router replica) may queue for a model while every replica is at
# max_ongoing_requests (or none is running); beyond it Serve raises back-pressure at once instead of
# queueing. Ray's default is -1 (no limit): an unbounded queue turns overload and a dead or sleeping
# replica into unbounded waits. 128 absorbs a burst while Serve adds replicas.
DEFAULT_MAX_QUEUED_REQUESTS = 128
UNLIMITED = -1


class Autoscaling(Section):
    """Serve autoscaling. `target_ongoing_requests` is required: Ray's LLM default is 1e9, which
    means min/max replicas alone never scale up (platform notes).

    min_replicas 0 is scale to zero: the model sleeps until a request arrives (Serve starts
    `initial_replicas`, default min_replicas, at deploy time) and does not make /healthz fail.
    """

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(
        None, ge=0, description="Replicas at deploy time; None = min_replicas (0: start asleep)."
    )
    target_ongoing_requests: float = Field(gt=0, description="Ongoing + queued requests per replica to aim at.")
    max_ongoing_requests: int = Field(64, gt=0, description="Per replica; beyond it requests queue at the caller.")
    max_queued_requests: int = Field(
        DEFAULT_MAX_QUEUED_REQUESTS,
        description="Per caller (router replica): requests queued for this model beyond the replicas' "
        "max_ongoing_requests; then Serve answers back-pressure. -1 or null: no limit (Ray's default).",
    )
    upscale_delay_s: float = Field(30.0, ge=0, description="Load must stay above target this long to add replicas.")
    downscale_delay_s: float = Field(600.0, ge=0, description="Load must stay below target this long to remove one.")
    downscale_to_zero_delay_s: float | None = Field(
        None, ge=0, description="The 1 -> 0 step when min_replicas is 0; None = downscale_delay_s."
    )
    look_back_period_s: float = Field(30.0, gt=0, description="Window the load is averaged over (Ray's default).")

    @field_validator("max_queued_requests", mode="before")
    @classmethod
    def _unlimited(cls, v: Any) -> Any:
        return UNLIMITED if v is None else v

    @field_validator("max_queued_requests")
    @classmethod
    def _queue_bound(cls, v: int) -> int:
        if v != UNLIMITED and v < 1:
            raise ValueError(f"must be -1 or null (no limit) or at least 1, got {v}")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        check_scaling(self.min_replicas, self.max_replicas, self.target_ongoing_requests, self.max_ongoing_requests)
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas ({self.initial_replicas}) must lie between min_replicas "
                f"({self.min_replicas}) and max_replicas ({self.max_replicas})"
            )
        if self.downscale_to_zero_delay_s is not None and self.min_replicas > 0:
            raise ValueError(
                f"downscale_to_zero_delay_s applies only with min_replicas 0 (scale to zero); "
                f"min_replicas is {self.min_replicas}"
            )
        return self

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0


class ModelSpec(Section):
    """One catalog entry: what to load, how to run it, how it may be routed to."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")
    source: str = Field(min_length=1, description="Hub id (Qwen/Qwen3-8B) or a local directory.")
    family: Family
    tier: Tier
    context_length: int = Field(gt=0)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    architecture: Architecture | None = None
    engine: EngineSettings = Field(default_factory=EngineSettings)
    resources: Resources = Field(default_factory=Resources)
    autoscaling: Autoscaling
    env: dict[str, str] = Field(default_factory=dict, description="Engine process env vars.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        self._check_family()
        self._check_parallelism()
        self._check_placement()
        if self.engine.max_model_len is not None and self.engine.max_model_len > self.context_length:
            raise ValueError(
                f"engine.max_model_len ({self.engine.max_model_len}) exceeds context_length "
                f"({self.context_length})"
            )
        return self

    def _check_family(self) -> None:
        """2507 releases split thinking into two models; the flag must agree with the family."""
        if self.family == "qwen3-instruct-2507" and self.capabilities.thinking:
            raise ValueError("family qwen3-instruct-2507 never thinks: set capabilities.thinking false")
        if self.family in ("qwen3", "qwen3-thinking-2507") and not self.capabilities.thinking:
            raise ValueError(f"family {self.family} thinks: capabilities.thinking must be true")

    def _check_parallelism(self) -> None:
        """vLLM needs heads % TP == 0; KV heads either split evenly or are replicated."""
        arch = self.architecture or _architecture_from_checkpoint(self.source)
        tp = self.engine.tensor_parallel_size
        if arch is None or tp == 1:
            return
        if arch.num_attention_heads % tp:
            raise ValueError(
                f"engine.tensor_parallel_size {tp} does not divide num_attention_heads "
                f"{arch.num_attention_heads}"
            )
        kv = arch.num_key_value_heads
        if kv % tp and tp % kv:
            raise ValueError(
                f"engine.tensor_parallel_size {tp} and num_key_value_heads {kv}: neither divides the other"
            )

    def _check_placement(self) -> None:
        """A tensor-parallel group talks over NVLink/PCIe on every layer: never spread it."""
        tp, strategy = self.engine.tensor_parallel_size, self.resources.placement_strategy
        if tp > 1 and strategy in ("SPREAD", "STRICT_SPREAD"):
            raise ValueError(
                f"resources.placement_strategy {strategy} would split the tensor_parallel_size {tp} group "
                "across nodes: use STRICT_PACK (one node) or PACK"
            )

    @property
    def workers(self) -> int:
        """Engine workers of one replica, one placement bundle each (TP x PP)."""
        return self.engine.tensor_parallel_size * self.engine.pipeline_parallel_size

    @property
    def max_model_len(self) -> int:
        """The context the engine really serves (engine cap, else the model's)."""
        return self.engine.max_model_len or self.context_length

    @property
    def always_thinks(self) -> bool:
        return self.family == "qwen3-thinking-2507"


def _architecture_from_checkpoint(source: str) -> Architecture | None:
    """Head counts of a local checkpoint, so local entries need not repeat them."""
    cfg = Path(source) / "config.json"
    if not cfg.is_file():
        return None
    data = json.loads(cfg.read_text())
    heads = data.get("num_attention_heads")
    if not heads:
        return None
    return Architecture(num_attention_heads=heads, num_key_value_heads=data.get("num_key_value_heads", heads))

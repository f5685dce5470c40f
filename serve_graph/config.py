"""The `models.yaml` schema: one file describes the catalog, the profiles and the routing policy.

Everything an operator tunes lives here and is validated before anything starts, so that a typo
fails in a second with the file, the path of the field and what is wrong, instead of minutes later
inside a Ray worker. The rest of the package only reads these models.

Layout of the file::

    routes:      category -> ordered candidates (model ids or tier names), default route, threshold,
                 example prompts for the classifier, escalation by thinking budget
    budgets:     thinking budgets per category and per reasoning_effort
    tracing:     OpenTelemetry export (the standard OTEL_* env vars fill in / override it)
    router:      the router deployment's own replicas
    profiles:
      production: {models: [...], routes: {...optional override...}}
      local:      {models: [...]}

Candidates may name a tier (`small`, `medium`, `moe`, `xl`) instead of a model id, so one routing
policy serves every profile: a tier expands to the profile's models of that tier, in file order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serve_graph.router.budget import BudgetPolicy
from serve_graph.tracing import TracingSettings

Family = Literal["qwen3", "qwen3-instruct-2507", "qwen3-thinking-2507"]
Tier = Literal["small", "medium", "moe", "xl"]
TIERS: tuple[str, ...] = ("small", "medium", "moe", "xl")
AUTO_MODEL = "auto"


class ConfigError(ValueError):
    """A models.yaml problem, phrased for the operator: file, field path, what is wrong."""


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt option must not be silently ignored. Keys starting with
    `x-` are extension fields (e.g. YAML anchors to reuse), ignored as in docker-compose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        return data


class Capabilities(_Strict):
    thinking: bool = Field(True, description="The model can emit a <think> block.")
    vision: bool = Field(False, description="The model accepts image content parts.")
    code: bool = Field(False, description="A coder model; preferred by routes asking for code.")


class Architecture(_Strict):
    """Head counts, needed to check tensor parallelism before a GPU is ever reserved.

    Optional for a local checkpoint (read from its config.json); give them for hub ids.
    """

    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)


class EngineSettings(_Strict):
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


class Resources(_Strict):
    """What one engine worker reserves from Ray (one bundle per TP x PP worker)."""

    accelerator_type: str | None = Field(
        None, description="Ray accelerator type, e.g. H100, A100, L4; None with gpus_per_worker 0 = CPU."
    )
    gpus_per_worker: float = Field(1.0, ge=0)
    cpus_per_worker: float = Field(1.0, ge=0)
    replica_cpus: float = Field(
        0.0, ge=0, description="CPU for the replica actor itself (it mostly waits on the engine)."
    )

    @property
    def is_cpu(self) -> bool:
        return self.gpus_per_worker == 0


class Autoscaling(_Strict):
    """Serve autoscaling. `target_ongoing_requests` is required: Ray's LLM default is 1e9, which
    means min/max replicas alone never scale up (platform notes)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(gt=0)
    max_ongoing_requests: int = Field(64, gt=0, description="Per replica, queued beyond this.")
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        if self.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError(
                f"target_ongoing_requests ({self.target_ongoing_requests}) > max_ongoing_requests "
                f"({self.max_ongoing_requests}): the target could never be reached"
            )
        return self


class ModelSpec(_Strict):
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
    import json

    data = json.loads(cfg.read_text())
    heads = data.get("num_attention_heads")
    if not heads:
        return None
    return Architecture(num_attention_heads=heads, num_key_value_heads=data.get("num_key_value_heads", heads))


class Escalation(_Strict):
    """A big thinking budget is a request to think hard: send it to a tier that thinks better."""

    min_budget: int = Field(gt=0, description="Resolved thinking budget at or above which to escalate.")
    candidates: list[str] = Field(min_length=1)


class Route(_Strict):
    """An ordered list of candidates (first healthy wins) and, optionally, example prompts that
    teach the classifier this category (a new one, or a sharper existing one)."""

    candidates: list[str] = Field(min_length=1)
    examples: list[str] = Field(default_factory=list)
    escalate: Escalation | None = None


class Routes(_Strict):
    confidence_threshold: float = Field(0.5, ge=0, le=1)
    default: Route
    categories: dict[str, Route] = Field(default_factory=dict)
    vision: Route | None = Field(None, description="Requests with image parts; default: any vision model.")


class RouterSettings(_Strict):
    """The router deployment. It only waits on handles, so it asks Ray for (almost) no CPU and
    never queues behind an engine for a slot."""

    num_cpus: float = Field(0.0, ge=0)
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(64, gt=0)
    max_ongoing_requests: int = Field(1024, gt=0)
    request_timeout_s: float = Field(600, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> RouterSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class Profile(_Strict):
    description: str = ""
    models: list[ModelSpec] = Field(min_length=1)
    routes: Routes | None = Field(None, description="Overrides the top-level routes for this profile.")
    env: dict[str, str] = Field(default_factory=dict, description="Env vars for every engine.")

    @field_validator("models")
    @classmethod
    def _unique_ids(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        seen: set[str] = set()
        for m in models:
            if m.id in seen:
                raise ValueError(f"duplicate model id {m.id!r}")
            if m.id == AUTO_MODEL:
                raise ValueError(f"{AUTO_MODEL!r} is reserved for routed requests")
            seen.add(m.id)
        return models


class ServeGraphConfig(_Strict):
    """The whole file."""

    routes: Routes
    budgets: BudgetPolicy = Field(default_factory=BudgetPolicy)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    profiles: dict[str, Profile] = Field(min_length=1)

    @model_validator(mode="after")
    def _routes_resolve(self) -> ServeGraphConfig:
        for name in self.profiles:
            self.resolve(name)  # raises with the profile's name if a candidate names nothing
        return self

    def resolve(self, profile: str) -> ResolvedProfile:
        """The one profile the app runs: its catalog and routes with tiers expanded to ids."""
        if profile not in self.profiles:
            raise ConfigError(f"unknown profile {profile!r}; have {sorted(self.profiles)}")
        prof = self.profiles[profile]
        routes = prof.routes or self.routes
        catalog = {m.id: m for m in prof.models}
        expand = lambda where, route: _expand(profile, where, route, prof.models)  # noqa: E731
        return ResolvedProfile(
            name=profile,
            models=prof.models,
            env=prof.env,
            router=self.router,
            confidence_threshold=routes.confidence_threshold,
            default_route=expand("routes.default", routes.default),
            category_routes={c: expand(f"routes.categories.{c}", r) for c, r in routes.categories.items()},
            vision_route=(
                expand("routes.vision", routes.vision)
                if routes.vision
                else [m for m, s in catalog.items() if s.capabilities.vision]
            ),
            examples={c: r.examples for c, r in routes.categories.items() if r.examples},
            escalations={
                c: Escalation(
                    min_budget=r.escalate.min_budget,
                    candidates=expand(f"routes.categories.{c}.escalate", r.escalate),
                )
                for c, r in routes.categories.items()
                if r.escalate
            },
            budgets=self.budgets,
            tracing=self.tracing,
        )


def _expand(profile: str, where: str, route: Route | Escalation, models: list[ModelSpec]) -> list[str]:
    """Tier names become that tier's model ids; ids must exist in the profile's catalog."""
    ids = [m.id for m in models]
    out: list[str] = []
    for cand in route.candidates:
        if cand in ids:
            hits = [cand]
        elif cand in TIERS:
            hits = [m.id for m in models if m.tier == cand]
        else:
            raise ValueError(
                f"{where}: candidate {cand!r} is neither a model id of profile {profile!r} "
                f"({', '.join(ids)}) nor a tier ({', '.join(TIERS)})"
            )
        out.extend(h for h in hits if h not in out)
    if not out:
        raise ValueError(f"{where}: no model of profile {profile!r} matches {route.candidates}")
    return out


class ResolvedProfile(BaseModel):
    """What the app builder and the router consume: plain data, picklable to every replica."""

    model_config = ConfigDict(frozen=True)

    name: str
    models: list[ModelSpec]
    env: dict[str, str]
    router: RouterSettings
    confidence_threshold: float
    default_route: list[str]
    category_routes: dict[str, list[str]]
    vision_route: list[str]
    examples: dict[str, list[str]]
    escalations: dict[str, Escalation]  # candidates expanded to model ids
    budgets: BudgetPolicy
    tracing: TracingSettings

    def model(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)

    @property
    def default_model(self) -> str:
        return self.default_route[0]


def _format_errors(err: ValidationError, source: str) -> str:
    """One line per problem: `file: a.b[2].c: message` (pydantic's loc, written as a path)."""
    lines = [f"{source}: invalid configuration ({err.error_count()} problem(s))"]
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {source}: {path or '<root>'}: {msg}")
    return "\n".join(lines)


def _resolve_sources(raw: Any, base: Path) -> Any:
    """Relative local `source` paths are relative to the YAML file, not to the cwd of `serve run`."""
    for prof in (raw.get("profiles") or {}).values() if isinstance(raw, dict) else ():
        for m in (prof or {}).get("models") or []:
            src = m.get("source") if isinstance(m, dict) else None
            if isinstance(src, str) and src.startswith(("./", "../", ".")) and not os.path.isabs(src):
                m["source"] = str((base / src).resolve())
    return raw


def parse_config(raw: Any, source: str = "<inline>", base_dir: Path | None = None) -> ServeGraphConfig:
    """Validate an already-loaded mapping (e.g. the inline copy `render` embeds in serve_config)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    raw = _resolve_sources(raw, base_dir or Path.cwd())
    try:
        return ServeGraphConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | os.PathLike[str]) -> ServeGraphConfig:
    """Read and validate models.yaml; every failure is a ConfigError naming the file and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_config(raw, str(p), p.parent.resolve())

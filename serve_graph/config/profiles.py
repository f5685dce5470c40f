"""The whole file: profiles, the router deployment, and one profile resolved for the app to run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_graph.config.base import ConfigError, Named, Section, check_scaling
from serve_graph.config.budgets import BudgetPolicy
from serve_graph.config.catalog import AUTO_MODEL, TIERS, ModelSpec
from serve_graph.config.routes import Escalation, Route, Routes
from serve_graph.config.tracing import TracingSettings


class RouterSettings(Section):
    """The router deployment. It only waits on handles, so it asks Ray for (almost) no CPU and
    never queues behind an engine for a slot. It autoscales like a model (Serve's autoscaler on
    ongoing requests per replica) but never to zero: it is the ingress."""

    num_cpus: float = Field(0.0, ge=0)
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(64, gt=0)
    max_ongoing_requests: int = Field(1024, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0, description="Load above target this long adds a router replica.")
    downscale_delay_s: float = Field(600.0, ge=0, description="Load below target this long removes one.")
    request_timeout_s: float = Field(600, gt=0)
    # Failover before the first byte (router/failover.py): a request tries its route's candidates in
    # order, at most `max_attempts` of them, and spends at most `failover_budget_s` on the ones that
    # fail; a call waits at most `replica_wait_s` for a replica before the router asks whether the
    # deployment has any live one (a busy, live replica is waited for: that is load, not failure).
    max_attempts: int = Field(3, ge=1, description="Candidates one request may try before its first byte.")
    replica_wait_s: float = Field(1.0, gt=0, description="Wait for a replica before checking it exists.")
    failover_budget_s: float = Field(10.0, gt=0, description="Total wait on failed candidates per request.")

    @model_validator(mode="after")
    def _bounds(self) -> RouterSettings:
        check_scaling(self.min_replicas, self.max_replicas, self.target_ongoing_requests, self.max_ongoing_requests)
        return self


class Profile(Section):
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


class ServeGraphConfig(Section):
    """The whole file."""

    routes: Routes
    budgets: BudgetPolicy = Field(default_factory=BudgetPolicy)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    profiles: Named[Profile] = Field(min_length=1)

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

        def expand(where: str, route: Route | Escalation) -> list[str]:
            return _expand(profile, where, route, prof.models)

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

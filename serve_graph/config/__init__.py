"""The `models.yaml` schema: one file describes the catalog, the profiles and the routing policy.

Everything an operator tunes lives here and is validated before anything starts, so that a typo
fails in a second with the file, the path of the field and what is wrong, instead of minutes later
inside a Ray worker. The rest of the package only reads these models. This package is the leaf of
the dependency graph: it imports nothing else of serve_graph, so any module may import it.

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

Every section derives from `Section` (`base.py`): unknown keys are errors, `x-` keys are extension
fields. Modules: `catalog` (models), `routes`, `budgets`, `tracing`, `profiles` (the whole file and
one resolved profile), `loading` (YAML -> validated config, error messages).
"""

from serve_graph.config.base import ConfigError, Section, is_extension
from serve_graph.config.budgets import EFFORTS, BudgetPolicy, CategoryBudget, Effort, Tokens
from serve_graph.config.catalog import (
    AUTO_MODEL,
    DEFAULT_MAX_QUEUED_REQUESTS,
    TIERS,
    Architecture,
    Autoscaling,
    Capabilities,
    EngineSettings,
    Family,
    ModelSpec,
    PlacementStrategy,
    Resources,
    Tier,
)
from serve_graph.config.loading import format_errors, load_config, parse_config
from serve_graph.config.profiles import Profile, ResolvedProfile, RouterSettings, ServeGraphConfig
from serve_graph.config.routes import Escalation, Route, Routes
from serve_graph.config.tracing import OtlpProtocol, TracingSettings

__all__ = [
    "AUTO_MODEL",
    "DEFAULT_MAX_QUEUED_REQUESTS",
    "EFFORTS",
    "TIERS",
    "Architecture",
    "Autoscaling",
    "BudgetPolicy",
    "Capabilities",
    "CategoryBudget",
    "ConfigError",
    "Effort",
    "EngineSettings",
    "Escalation",
    "Family",
    "ModelSpec",
    "OtlpProtocol",
    "PlacementStrategy",
    "Profile",
    "ResolvedProfile",
    "Resources",
    "Route",
    "RouterSettings",
    "Routes",
    "Section",
    "ServeGraphConfig",
    "Tier",
    "Tokens",
    "TracingSettings",
    "format_errors",
    "is_extension",
    "load_config",
    "parse_config",
]

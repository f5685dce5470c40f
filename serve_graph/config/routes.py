"""The `routes:` section: category -> ordered candidates, the default route, escalation by budget.

Candidates may name a tier (`small`, `medium`, `moe`, `xl`) instead of a model id, so one routing
policy serves every profile; `ServeGraphConfig.resolve` expands tiers per profile.
"""

from __future__ import annotations

from pydantic import Field

from serve_graph.config.base import Named, Section


class Escalation(Section):
    """A big thinking budget is a request to think hard: send it to a tier that thinks better."""

    min_budget: int = Field(gt=0, description="Resolved thinking budget at or above which to escalate.")
    candidates: list[str] = Field(min_length=1)


class Route(Section):
    """An ordered list of candidates (first healthy wins) and, optionally, example prompts that
    teach the classifier this category (a new one, or a sharper existing one)."""

    candidates: list[str] = Field(min_length=1)
    examples: list[str] = Field(default_factory=list)
    escalate: Escalation | None = None


class Routes(Section):
    confidence_threshold: float = Field(0.5, ge=0, le=1)
    default: Route
    categories: Named[Route] = Field(default_factory=dict)
    vision: Route | None = Field(None, description="Requests with image parts; default: any vision model.")

"""The routing decision: (request, classification, catalog, health) -> model and the reason.

Pure Python on plain data, so every rule is unit-tested without Ray. The router calls `decide`
once per request and reports `Decision.reason` in headers, logs and spans.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from serve_graph.config import AUTO_MODEL, ResolvedProfile
from serve_graph.router.errors import ModelNotFound, NotServable


class ClassificationLike(Protocol):
    """What the policy reads of a classification (read-only, so frozen dataclasses qualify)."""

    @property
    def category(self) -> str: ...

    @property
    def confidence(self) -> float: ...


@dataclass(frozen=True)
class RouteRequest:
    """What the policy needs to know about a request (extracted by the router).

    `thinking_budget` is the resolved budget after the request's own caps (None: not a chat
    request); `requested_budget` is the same before caps, i.e. how hard the client asked the
    model to think, which is what escalation to a better-thinking tier keys on.
    """

    model: str | None = None
    has_images: bool = False
    thinking_budget: int | None = None
    requested_budget: int | None = None


@dataclass(frozen=True)
class Decision:
    model: str
    reason: str
    route: str  # "explicit", "vision", "default" or the category whose route was taken
    candidates: tuple[str, ...] = ()
    category: str | None = None
    confidence: float | None = None
    skipped: tuple[str, ...] = field(default=())  # candidates passed over as unhealthy


def decide(
    request: RouteRequest,
    profile: ResolvedProfile,
    healthy: Collection[str],
    classification: ClassificationLike | None = None,
) -> Decision:
    """Choose the model for one request.

    Order: an explicit catalog id wins; image content needs a vision model; otherwise the
    classified category's route when the classifier is confident enough, else the default route.
    Within a route the first healthy candidate wins; when none is healthy the first candidate
    still gets the request (Serve queues it and scales the deployment up from zero).
    """
    if request.model not in (None, "", AUTO_MODEL):
        return _explicit(request, profile)
    if request.has_images:
        if not profile.vision_route:
            raise NotServable(
                "the request contains image content but no model in the catalog accepts images",
                code="vision_not_supported",
                param="messages",
            )
        return _pick("vision", "image content", profile.vision_route, healthy)
    name, why, candidates = _route_for(profile, classification)
    candidates, budget_why = _fit_budget(name, candidates, request, profile)
    return _pick(name, why + budget_why, candidates, healthy, classification)


def _route_for(
    profile: ResolvedProfile, classification: ClassificationLike | None
) -> tuple[str, str, list[str]]:
    """The category's route when the classifier is confident and the category has one."""
    if classification is None:
        return "default", "no classification", profile.default_route
    if classification.confidence < profile.confidence_threshold:
        why = f"confidence {classification.confidence:.2f} < threshold {profile.confidence_threshold:.2f}"
        return "default", why, profile.default_route
    route = profile.category_routes.get(classification.category)
    if route is None:
        return "default", f"no route for category {classification.category!r}", profile.default_route
    return classification.category, f"category {classification.category} ({classification.confidence:.2f})", route


def _fit_budget(
    route: str, candidates: list[str], request: RouteRequest, profile: ResolvedProfile
) -> tuple[list[str], str]:
    """Shape the candidate list by the thinking budget.

    - a big requested budget escalates to the route's better-thinking candidates (first);
    - budget 0 takes the non-thinking path: thinking-only models are removed (a route made only
      of them falls back to the default route's, then to any model that can stop thinking);
    - a positive budget puts models that can think ahead of those that cannot.
    """
    budget, requested = request.thinking_budget, request.requested_budget
    if budget is None:
        return candidates, ""
    why = ""
    esc = profile.escalations.get(route)
    if esc and requested is not None and requested >= esc.min_budget and budget > 0:
        candidates = esc.candidates + [c for c in candidates if c not in esc.candidates]
        why = f"; escalated: budget {requested} >= {esc.min_budget}"
    specs = {m.id: m for m in profile.models}
    if budget == 0:
        for pool in (candidates, profile.default_route, [m.id for m in profile.models]):
            fit = [c for c in pool if not specs[c].always_thinks]
            if fit:
                dropped = [c for c in candidates if specs[c].always_thinks]
                if dropped:
                    why += f"; budget 0: thinking-only {', '.join(dropped)} excluded"
                return fit, why
        raise NotServable(
            "thinking budget 0 was asked for, but every model in the catalog always thinks",
            code="no_non_thinking_model",
            param="thinking_token_budget",
        )
    thinkers = [c for c in candidates if specs[c].capabilities.thinking]
    return thinkers + [c for c in candidates if c not in thinkers], why


def _explicit(request: RouteRequest, profile: ResolvedProfile) -> Decision:
    spec = profile.model(request.model or "")
    if spec is None:
        raise ModelNotFound(
            f"The model `{request.model}` does not exist. Available: "
            f"{', '.join([AUTO_MODEL, *(m.id for m in profile.models)])}",
            code="model_not_found",
            param="model",
        )
    if request.has_images and not spec.capabilities.vision:
        raise NotServable(
            f"model `{spec.id}` does not accept image content",
            code="vision_not_supported",
            param="messages",
        )
    return Decision(model=spec.id, reason="requested by the client", route="explicit", candidates=(spec.id,))


def _pick(
    route: str,
    why: str,
    candidates: list[str],
    healthy: Collection[str],
    classification: ClassificationLike | None = None,
) -> Decision:
    skipped: list[str] = []
    chosen = None
    for cand in candidates:
        if cand in healthy:
            chosen = cand
            break
        skipped.append(cand)
    if chosen is None:
        chosen, skipped = candidates[0], []
        why += "; no candidate healthy, first one queues"
    elif skipped:
        why += f"; skipped unhealthy {', '.join(skipped)}"
    return Decision(
        model=chosen,
        reason=f"{route} route: {why}",
        route=route,
        candidates=tuple(candidates),
        category=classification.category if classification else None,
        confidence=classification.confidence if classification else None,
        skipped=tuple(skipped),
    )

"""The routing decision: (request, classification, catalog, health) -> model and the reason.

Pure Python on plain data, so every rule is unit-tested without Ray. The router calls `decide`
once per request and reports `Decision.reason` in headers, logs and spans.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from serve_graph.config import AUTO_MODEL, ResolvedProfile


class ClassificationLike(Protocol):
    category: str
    confidence: float


@dataclass(frozen=True)
class RouteRequest:
    """What the policy needs to know about a request (extracted by the router)."""

    model: str | None = None
    has_images: bool = False


@dataclass(frozen=True)
class Decision:
    model: str
    reason: str
    route: str  # "explicit", "vision", "default" or the category whose route was taken
    candidates: tuple[str, ...] = ()
    category: str | None = None
    confidence: float | None = None
    skipped: tuple[str, ...] = field(default=())  # candidates passed over as unhealthy


class RoutingError(Exception):
    """A request the catalog cannot serve; carries the OpenAI error fields."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


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
            raise RoutingError(
                400,
                "the request contains image content but no model in the catalog accepts images",
                code="vision_not_supported",
                param="messages",
            )
        return _pick("vision", "image content", profile.vision_route, healthy)
    if classification is None:
        return _pick("default", "no classification", profile.default_route, healthy)
    route = profile.category_routes.get(classification.category)
    if classification.confidence < profile.confidence_threshold:
        why = f"confidence {classification.confidence:.2f} < threshold {profile.confidence_threshold:.2f}"
        return _pick("default", why, profile.default_route, healthy, classification)
    if route is None:
        why = f"no route for category {classification.category!r}"
        return _pick("default", why, profile.default_route, healthy, classification)
    why = f"category {classification.category} ({classification.confidence:.2f})"
    return _pick(classification.category, why, route, healthy, classification)


def _explicit(request: RouteRequest, profile: ResolvedProfile) -> Decision:
    spec = profile.model(request.model or "")
    if spec is None:
        raise RoutingError(
            404,
            f"The model `{request.model}` does not exist. Available: "
            f"{', '.join([AUTO_MODEL, *(m.id for m in profile.models)])}",
            code="model_not_found",
            param="model",
        )
    if request.has_images and not spec.capabilities.vision:
        raise RoutingError(
            400,
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

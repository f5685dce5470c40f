"""The request plan: classify -> thinking budget -> routing decision -> budget for that model.

Pure Python over the parsed JSON body, shared by the router deployment and `serve-graph explain`,
so what the CLI explains is exactly what the router does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from serve_graph.classifier import Classification, Classifier
from serve_graph.config import AUTO_MODEL, ModelSpec, ResolvedProfile
from serve_graph.messages import has_images, turns
from serve_graph.router.budget import Budget, BudgetRequest, resolve_budget
from serve_graph.router.policy import Decision, RouteRequest, decide


@dataclass(frozen=True)
class Plan:
    """Everything decided about one request before the model is called."""

    decision: Decision
    classification: Classification | None
    budget: Budget | None  # chat only; effective for the chosen model


def estimate_prompt_tokens(data: dict[str, Any]) -> int:
    """A cheap over-estimate (3 chars per token) used only to keep budget + answer in context."""
    msgs = data.get("messages")
    chars = sum(len(text) for _, text in turns(msgs))
    return chars // 3 + 8 * (len(msgs) if isinstance(msgs, list) else 0)


def apply_thinking(body: Any, spec: ModelSpec, tokens: int) -> None:
    """Tell the engine the budget in the form it understands.

    Hybrid Qwen3 switches by template (`enable_thinking`) and gets the budget top-level (vLLM
    ignores it inside chat_template_kwargs); a thinking-only model cannot be switched off, only
    cut by the budget (0 closes the block at once); an instruct model gets neither.
    """
    if not spec.capabilities.thinking:
        body.thinking_token_budget = None
        return
    if not spec.always_thinks:
        body.chat_template_kwargs = {**(body.chat_template_kwargs or {}), "enable_thinking": tokens > 0}
    body.thinking_token_budget = tokens if (tokens > 0 or spec.always_thinks) else None


def classify_body(classifier: Classifier, kind: str, data: dict[str, Any]) -> Classification | None:
    """Chat: the whole conversation (multi-turn aware); completions: the prompt text."""
    if kind == "chat":
        return classifier.classify_messages(data["messages"])
    prompt = data.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompt = "\n".join(prompt)
    return classifier.classify_text(prompt) if isinstance(prompt, str) else None


def classify_request(classifier: Classifier, kind: str, data: dict[str, Any]) -> Classification | None:
    """The classifier's answer, or None for image requests (vision is decided by content)."""
    if kind == "chat" and has_images(data.get("messages")):
        return None
    return classify_body(classifier, kind, data)


def plan_request(
    kind: str,
    data: dict[str, Any],
    profile: ResolvedProfile,
    classification: Classification | None,
    healthy: Collection[str],
) -> Plan:
    """budget -> decide -> budget capped by the chosen model's context (after `classify_request`,
    kept a separate step so the router can time and trace it on its own).

    The budget is resolved twice: first from the request alone (a routing input: 0 means the
    non-thinking path, a large one may escalate), then against the chosen model's context.
    Raises the typed errors of `serve_graph.router.errors` (InvalidRequest, ModelNotFound,
    NotServable) for the router to answer with their 4xx.
    """
    model = data.get("model")
    images = kind == "chat" and has_images(data.get("messages"))
    category = _category(classification, profile)

    budget_req = BudgetRequest.from_body(data) if kind == "chat" else None
    budget = resolve_budget(budget_req, category, profile.budgets) if budget_req else None
    route_req = RouteRequest(
        model=model,
        has_images=images,
        thinking_budget=budget.tokens if budget else None,
        requested_budget=budget.requested if budget else None,
    )
    routed = model in (None, "", AUTO_MODEL)
    decision = decide(route_req, profile, healthy, classification if routed else None)
    plan = Plan(decision=decision, classification=classification, budget=budget)
    return _budget_for(plan, kind, data, profile)


def plan_for_model(plan: Plan, kind: str, data: dict[str, Any], profile: ResolvedProfile,
                   model: str, why: str) -> Plan:
    """The same plan served by another candidate of its route (failover): the budget is resolved
    again against that model's context and thinking capability; `why` joins the reason."""
    decision = dataclasses.replace(plan.decision, model=model, reason=f"{plan.decision.reason}; {why}")
    return _budget_for(dataclasses.replace(plan, decision=decision), kind, data, profile)


def _category(classification: Classification | None, profile: ResolvedProfile) -> str | None:
    confident = classification is not None and classification.confidence >= profile.confidence_threshold
    return classification.category if confident and classification else None


def _budget_for(plan: Plan, kind: str, data: dict[str, Any], profile: ResolvedProfile) -> Plan:
    """The request's budget capped for the plan's model (chat only)."""
    if kind != "chat":
        return plan
    spec = profile.model(plan.decision.model)
    assert spec is not None  # decide() only returns catalog ids
    budget = resolve_budget(BudgetRequest.from_body(data), _category(plan.classification, profile), profile.budgets,
                            context_len=spec.max_model_len, prompt_tokens=estimate_prompt_tokens(data))
    if not spec.capabilities.thinking:
        budget = dataclasses.replace(budget, tokens=0, capped_by="model_cannot_think")
    return dataclasses.replace(plan, budget=budget)

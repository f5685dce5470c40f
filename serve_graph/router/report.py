"""What a response says about its request: our headers and the `serve_graph` report block."""

from __future__ import annotations

import json
import re
from typing import Any

from serve_graph.router.plan import Plan

# Only the final usage chunk of a stream has a non-null usage object.
USAGE = re.compile(r'"usage":\s*\{')


def plan_headers(plan: Plan) -> dict[str, str]:
    d = plan.decision
    headers = {"x-serve-graph-model": d.model, "x-serve-graph-route": d.route}
    if plan.classification is not None:
        headers["x-serve-graph-category"] = plan.classification.category
        headers["x-serve-graph-confidence"] = f"{plan.classification.confidence:.3f}"
    if plan.budget is not None:
        headers["x-serve-graph-thinking-budget"] = str(plan.budget.tokens)
        headers["x-serve-graph-thinking-budget-source"] = plan.budget.source
    return headers


def thinking_report(plan: Plan, usage: Any, fallback: list[str] | None = None) -> dict[str, Any]:
    """Our `serve_graph` block in the response: the decision, and whether the budget cut thinking.

    vLLM counts the newline after a pre-opened `<think>` as a thinking token and forces `</think>`
    when the count reaches the budget, so a cut shows as reasoning_tokens >= budget - 1.
    """
    d = plan.decision
    report: dict[str, Any] = {"model": d.model, "route": d.route, "reason": d.reason}
    if fallback:
        report["fallback"] = fallback  # candidates passed over, as in x-serve-graph-fallback
    if plan.classification is not None:
        report["category"] = plan.classification.category
        report["confidence"] = round(plan.classification.confidence, 4)
    if plan.budget is not None:
        details = (usage or {}).get("completion_tokens_details") or {}
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        report["thinking_budget"] = plan.budget.tokens
        report["thinking_budget_source"] = plan.budget.source
        report["thinking_budget_capped_by"] = plan.budget.capped_by
        report["reasoning_tokens"] = reasoning
        report["thinking_truncated"] = bool(
            plan.budget.tokens > 0 and reasoning is not None and reasoning >= plan.budget.tokens - 1
        )
    return report


def annotate_usage_packet(packet: str, plan: Plan,
                          fallback: list[str] | None = None) -> tuple[str, dict[str, Any] | None]:
    """Add our report to the stream's final usage chunk (only it carries `usage`)."""
    out, report = [], None
    for line in packet.split("\n"):
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                report = chunk["serve_graph"] = thinking_report(plan, chunk["usage"], fallback)
                line = "data: " + json.dumps(chunk)
        out.append(line)
    return "\n".join(out), report

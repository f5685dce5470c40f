"""The thinking budget: how many `<think>` tokens one request may spend, and why.

vLLM enforces a per-request `thinking_token_budget` (it forces `</think>` when the budget is
spent); this module decides the number. It is pure Python on the raw request fields, so every rule
is unit-tested without Ray or vLLM, and the router only copies `Budget.tokens` onto the body.

Precedence, first that applies wins (the client's most specific wish beats our guess)::

    1. thinking_token_budget            explicit integer >= 0
    2. reasoning_effort                 none/low/medium/high -> the category's effort map
    3. chat_template_kwargs.enable_thinking   false -> 0, true -> "on" budget
    4. /think or /no_think in the latest system or user turn that has one
    5. the category's default budget    (unknown category -> policy.default_budget)

Then the caps, because thinking tokens are completion tokens: a budget that eats all of
`max_tokens` (or the context) leaves no room for the answer, which is worse than thinking less.
A malformed field is an `InvalidRequest` naming it (`param`), even when a higher-precedence field would have won:
a typo must surface as a 400, not be silently masked by another field.

The policy itself (`BudgetPolicy`, the `budgets:` section) is config: `serve_graph.config.budgets`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from serve_graph.config import EFFORTS, BudgetPolicy, Effort
from serve_graph.messages import iter_latest_texts
from serve_graph.router.errors import InvalidRequest

__all__ = ["Budget", "BudgetRequest", "resolve_budget", "soft_switch"]


def _invalid(param: str, problem: str) -> InvalidRequest:
    """A field that cannot yield a budget; the message starts with the field's name."""
    return InvalidRequest(f"{param}: {problem}", param=param)


@dataclass(frozen=True)
class BudgetRequest:
    """The request fields the budget depends on, as the client sent them (unvalidated)."""

    thinking_token_budget: Any = None
    reasoning_effort: Any = None
    chat_template_kwargs: Any = None
    messages: Any = None  # OpenAI messages list; None for /v1/completions
    max_tokens: Any = None
    max_completion_tokens: Any = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BudgetRequest:
        """Pick the fields from a parsed JSON body; absent and null are the same (None)."""
        return cls(
            thinking_token_budget=body.get("thinking_token_budget"),
            reasoning_effort=body.get("reasoning_effort"),
            chat_template_kwargs=body.get("chat_template_kwargs"),
            messages=body.get("messages"),
            max_tokens=body.get("max_tokens"),
            max_completion_tokens=body.get("max_completion_tokens"),
        )


@dataclass(frozen=True)
class Budget:
    """The resolved budget, with enough provenance for headers, logs and spans."""

    tokens: int  # what vLLM enforces; 0 = no thinking
    # "explicit" | "reasoning_effort" | "enable_thinking" | "soft_switch" | "category_default" | "default"
    source: str
    requested: int  # before caps
    capped_by: str | None  # None | "max_tokens" | "max_completion_tokens" | "context" | "max_budget"

    @property
    def thinking(self) -> bool:
        return self.tokens > 0


def resolve_budget(
    req: BudgetRequest,
    category: str | None,
    policy: BudgetPolicy,
    *,
    context_len: int | None = None,
    prompt_tokens: int | None = None,
) -> Budget:
    """One budget per request: the precedence in the module docstring, then the caps.

    `context_len` is the serving model's max_model_len and `prompt_tokens` the router's estimate
    of the prompt; without an estimate the prompt counts as 0 (the cap is then only an upper bound).
    """
    explicit = _explicit(req.thinking_token_budget)
    effort = _effort(req.reasoning_effort)
    enable = _enable_thinking(req.chat_template_kwargs)
    max_out, max_field = _max_out(req)

    if explicit is not None:
        requested, source = explicit, "explicit"
    elif effort is not None:
        requested, source = policy.effort_budget(category, effort), "reasoning_effort"
    elif enable is not None:
        requested, source = (policy.on_budget(category) if enable else 0), "enable_thinking"
    elif (switch := soft_switch(req.messages)) is not None:
        requested, source = (policy.on_budget(category) if switch else 0), "soft_switch"
    else:
        requested, source = policy.category_default(category)

    limits: list[tuple[str, int]] = []
    if max_out is not None and max_field is not None:
        limits.append((max_field, max_out - policy.min_answer_tokens))
    if context_len is not None:
        limits.append(("context", context_len - (prompt_tokens or 0) - policy.min_answer_tokens))
    if policy.max_budget is not None:
        limits.append(("max_budget", policy.max_budget))
    return _cap(requested, source, limits)


def _cap(requested: int, source: str, limits: list[tuple[str, int]]) -> Budget:
    """The tightest limit (floored at 0) that is below the request wins; ties go to the first
    listed, i.e. the request's own field before the context before the policy."""
    tokens, capped_by = requested, None
    for name, limit in limits:
        limit = max(limit, 0)
        if limit < tokens:
            tokens, capped_by = limit, name
    return Budget(tokens=tokens, source=source, requested=requested, capped_by=capped_by)


def _is_int(value: Any) -> TypeGuard[int]:
    """JSON true is a Python bool, and bool is an int: it must not pass as a count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _explicit(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise _invalid("thinking_token_budget", f"must be an integer >= 0, got {value!r}")
    return value


def _effort(value: Any) -> Effort | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in EFFORTS:
        raise _invalid("reasoning_effort", f"must be one of {', '.join(EFFORTS)}; got {value!r}")
    return value  # type: ignore[return-value]


def _enable_thinking(kwargs: Any) -> bool | None:
    if kwargs is None:
        return None
    if not isinstance(kwargs, Mapping):
        raise _invalid("chat_template_kwargs", f"must be an object, got {type(kwargs).__name__}")
    value = kwargs.get("enable_thinking")
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _invalid("chat_template_kwargs.enable_thinking", f"must be true or false, got {value!r}")
    return value


def _max_out(req: BudgetRequest) -> tuple[int | None, str | None]:
    """The completion limit and the field it came from; both fields are validated if present,
    and max_completion_tokens (OpenAI's current name) wins over the deprecated max_tokens."""
    found: tuple[int | None, str | None] = (None, None)
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise _invalid(name, f"must be an integer >= 1, got {value!r}")
        found = (value, name)
    return found


# A switch is a whitespace-delimited token, optionally followed by sentence punctuation:
# "/think", "please /no_think." count; "/thinking", "a/think", "/think.txt" do not.
_SWITCH = re.compile(r"(?<!\S)/(no_think|think)(?=[.,;:!?]*(?:\s|$))")


def soft_switch(messages: Any) -> bool | None:
    """Qwen3's soft switch in the latest system or user turn that has one.

    True = /think, False = /no_think, None = no switch. Within that turn the last switch wins.
    Assistant and tool turns never count (the model's own text must not flip its mode).
    Malformed messages yield None: validating them is the engine's job, not the budget's.
    """
    for text in iter_latest_texts(messages, ("system", "user")):
        hits = _SWITCH.findall(text)
        if hits:
            return bool(hits[-1] == "think")
    return None

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
A malformed field is a `BudgetError` naming it, even when a higher-precedence field would have won:
a typo must surface as a 400, not be silently masked by another field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Effort = Literal["none", "low", "medium", "high"]
EFFORTS: tuple[str, ...] = get_args(Effort)

# Strict: YAML `true` or `1.5` where a token count belongs is a typo, not a number to coerce.
Tokens = Annotated[int, Field(ge=0, strict=True)]


class BudgetError(ValueError):
    """A request field that cannot yield a budget; the router answers 400 naming `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class _Strict(BaseModel):
    """Unknown keys are errors (as in config.py; defined here so config.py may import us)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryBudget(_Strict):
    """Budgets for one routing category (e.g. `math` thinks long, `chat` barely)."""

    default: Tokens = Field(description="Budget when nothing in the request says otherwise.")
    effort: dict[Effort, Tokens] | None = Field(
        None,
        description="Per-level overrides of the policy's effort map; levels left out use the policy's.",
    )


class BudgetPolicy(_Strict):
    """The `budgets:` section of models.yaml.

    Validation, and why:
    - every count is an int >= 0 (strict: no bools, no floats);
    - `thinking_on_budget` > 0: it is what "enable_thinking: true" means when the category's
      default is 0, and an "on" that yields 0 would silently mean off;
    - the policy effort map names all four levels, so any valid `reasoning_effort` resolves;
    - `none` is 0 wherever it is given: "none" must mean no thinking, never a hidden budget;
    - low <= medium <= high in the policy map and in every category's merged map: a higher
      effort that thinks less is a typo.
    `max_budget` below some default is allowed: it is a hard cap, applied (and reported) per request.
    """

    default_budget: Tokens = 1024
    thinking_on_budget: Annotated[int, Field(gt=0, strict=True)] = 1024
    min_answer_tokens: Tokens = 16
    max_budget: Tokens | None = None
    effort: dict[Effort, Tokens] = Field(
        default_factory=lambda: {"none": 0, "low": 512, "medium": 2048, "high": 8192}
    )
    categories: dict[str, CategoryBudget] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _efforts(self) -> BudgetPolicy:
        missing = [e for e in EFFORTS if e not in self.effort]
        if missing:
            raise ValueError(f"effort must map every level; missing {', '.join(missing)}")
        _check_effort_map("effort", self.effort)
        for name, cat in self.categories.items():
            if cat.effort is not None:
                _check_effort_map(f"categories.{name}.effort", {**self.effort, **cat.effort})
        return self

    def category_default(self, category: str | None) -> tuple[int, str]:
        """The budget with no request signal, and its `source` name."""
        cat = self.categories.get(category) if category is not None else None
        if cat is None:
            return self.default_budget, "default"
        return cat.default, "category_default"

    def effort_budget(self, category: str | None, effort: Effort) -> int:
        """The category's own level if it sets one, else the policy-wide level."""
        cat = self.categories.get(category) if category is not None else None
        if cat is not None and cat.effort is not None and effort in cat.effort:
            return cat.effort[effort]
        return self.effort[effort]

    def on_budget(self, category: str | None) -> int:
        """"Thinking on": the category's default, unless that is 0 (then on would mean off)."""
        default, _ = self.category_default(category)
        return default or self.thinking_on_budget


def _check_effort_map(where: str, levels: Mapping[str, int]) -> None:
    if levels.get("none", 0) != 0:
        raise ValueError(f"{where}: 'none' must be 0 (no thinking), got {levels['none']}")
    ordered = [(e, levels[e]) for e in ("low", "medium", "high") if e in levels]
    for (lo, a), (hi, b) in zip(ordered, ordered[1:]):
        if a > b:
            raise ValueError(f"{where}: {lo} ({a}) > {hi} ({b}); higher effort must not think less")


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


def _is_int(value: Any) -> bool:
    """JSON true is a Python bool, and bool is an int: it must not pass as a count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _explicit(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise BudgetError("thinking_token_budget", f"must be an integer >= 0, got {value!r}")
    return value


def _effort(value: Any) -> Effort | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in EFFORTS:
        raise BudgetError("reasoning_effort", f"must be one of {', '.join(EFFORTS)}; got {value!r}")
    return value  # type: ignore[return-value]


def _enable_thinking(kwargs: Any) -> bool | None:
    if kwargs is None:
        return None
    if not isinstance(kwargs, Mapping):
        raise BudgetError("chat_template_kwargs", f"must be an object, got {type(kwargs).__name__}")
    value = kwargs.get("enable_thinking")
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BudgetError("chat_template_kwargs.enable_thinking", f"must be true or false, got {value!r}")
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
            raise BudgetError(name, f"must be an integer >= 1, got {value!r}")
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
    if not isinstance(messages, list):
        return None
    for msg in reversed(messages):
        if not isinstance(msg, Mapping) or msg.get("role") not in ("system", "user"):
            continue
        hits = _SWITCH.findall(_text(msg.get("content")))
        if hits:
            return hits[-1] == "think"
    return None


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI parts list (one per line, so
    two parts never glue into one token)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        p["text"]
        for p in content
        if isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
    )

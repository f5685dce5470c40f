"""The `budgets:` section: thinking budgets per category and per `reasoning_effort` level.

Only the schema and its lookups live here; resolving one request's budget (precedence, soft
switches, caps) is `serve_graph.router.budget`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from serve_graph.config.base import Named, Section

Effort = Literal["none", "low", "medium", "high"]
EFFORTS: tuple[str, ...] = get_args(Effort)

# Strict: YAML `true` or `1.5` where a token count belongs is a typo, not a number to coerce.
Tokens = Annotated[int, Field(ge=0, strict=True)]

DEFAULT_EFFORT: Mapping[Effort, int] = {"none": 0, "low": 512, "medium": 2048, "high": 8192}
_ORDERED: tuple[Effort, ...] = ("low", "medium", "high")


class CategoryBudget(Section):
    """Budgets for one routing category (e.g. `math` thinks long, `chat` barely)."""

    default: Tokens = Field(description="Budget when nothing in the request says otherwise.")
    effort: dict[Effort, Tokens] | None = Field(
        None,
        description="Per-level overrides of the policy's effort map; levels left out use the policy's.",
    )


class BudgetPolicy(Section):
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
    effort: dict[Effort, Tokens] = Field(default_factory=lambda: dict(DEFAULT_EFFORT))
    categories: Named[CategoryBudget] = Field(default_factory=dict)

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


def _check_effort_map(where: str, levels: Mapping[Effort, int]) -> None:
    if levels.get("none", 0) != 0:
        raise ValueError(f"{where}: 'none' must be 0 (no thinking), got {levels['none']}")
    ordered = [(e, levels[e]) for e in _ORDERED if e in levels]
    for (lo, a), (hi, b) in zip(ordered, ordered[1:], strict=False):
        if a > b:
            raise ValueError(f"{where}: {lo} ({a}) > {hi} ({b}); higher effort must not think less")

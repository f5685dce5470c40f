"""The thinking-budget resolver: precedence, soft switches, caps, errors, policy validation.

Pure and fast: no Ray, no vLLM. Every case asserts exact numbers, so a changed rule fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from serve_graph.config import BudgetPolicy, CategoryBudget
from serve_graph.router.budget import (
    Budget,
    BudgetRequest,
    resolve_budget,
    soft_switch,
)
from serve_graph.router.errors import InvalidRequest, error_kind

# Distinct numbers everywhere, so a wrong branch cannot produce the right answer by accident.
POLICY = BudgetPolicy(
    default_budget=1000,
    thinking_on_budget=3000,
    min_answer_tokens=16,
    effort={"none": 0, "low": 100, "medium": 200, "high": 400},
    categories={
        "math": CategoryBudget(default=5000, effort={"low": 150, "high": 9000}),
        "chat": CategoryBudget(default=0),
    },
)


def _user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _resolve(
    body: dict[str, Any], category: str | None = "math", policy: BudgetPolicy = POLICY, **kw: Any
) -> Budget:
    return resolve_budget(BudgetRequest.from_body(body), category, policy, **kw)


# ---------------------------------------------------------------------------------------------
# Precedence
# ---------------------------------------------------------------------------------------------

OFF = {"enable_thinking": False}
ON = {"enable_thinking": True}

PRECEDENCE = [
    # level 5: nothing in the request
    ("nothing, known category", {}, "math", 5000, "category_default"),
    ("nothing, category default 0", {}, "chat", 0, "category_default"),
    ("nothing, unknown category", {}, "poetry", 1000, "default"),
    ("nothing, no category", {}, None, 1000, "default"),
    # level 1: explicit beats everything below it
    ("explicit alone", {"thinking_token_budget": 7}, "math", 7, "explicit"),
    ("explicit 0", {"thinking_token_budget": 0}, "math", 0, "explicit"),
    (
        "explicit beats all",
        {
            "thinking_token_budget": 7,
            "reasoning_effort": "high",
            "chat_template_kwargs": OFF,
            "messages": [_user("/no_think")],
        },
        "math",
        7,
        "explicit",
    ),
    ("explicit null falls through", {"thinking_token_budget": None}, "math", 5000, "category_default"),
    # level 2: reasoning_effort, per category with policy fallback
    ("effort from category map", {"reasoning_effort": "high"}, "math", 9000, "reasoning_effort"),
    ("effort level missing in category", {"reasoning_effort": "medium"}, "math", 200, "reasoning_effort"),
    ("effort, category without map", {"reasoning_effort": "low"}, "chat", 100, "reasoning_effort"),
    ("effort, unknown category", {"reasoning_effort": "high"}, "poetry", 400, "reasoning_effort"),
    ("effort none", {"reasoning_effort": "none"}, "math", 0, "reasoning_effort"),
    (
        "effort beats enable_thinking and switch",
        {"reasoning_effort": "low", "chat_template_kwargs": OFF, "messages": [_user("/no_think")]},
        "math",
        150,
        "reasoning_effort",
    ),
    # level 3: enable_thinking
    ("enable false", {"chat_template_kwargs": OFF}, "math", 0, "enable_thinking"),
    ("enable true -> category default", {"chat_template_kwargs": ON}, "math", 5000, "enable_thinking"),
    ("enable true, default 0 -> on budget", {"chat_template_kwargs": ON}, "chat", 3000, "enable_thinking"),
    ("enable true, unknown category", {"chat_template_kwargs": ON}, None, 1000, "enable_thinking"),
    (
        "enable beats soft switch",
        {"chat_template_kwargs": ON, "messages": [_user("hi /no_think")]},
        "chat",
        3000,
        "enable_thinking",
    ),
    (
        "kwargs without enable_thinking fall through",
        {"chat_template_kwargs": {"foo": 1}, "messages": [_user("/no_think")]},
        "math",
        0,
        "soft_switch",
    ),
    # level 4: soft switch
    ("soft /no_think", {"messages": [_user("why? /no_think")]}, "math", 0, "soft_switch"),
    ("soft /think -> category default", {"messages": [_user("/think why?")]}, "math", 5000, "soft_switch"),
    ("soft /think, default 0 -> on", {"messages": [_user("/think why?")]}, "chat", 3000, "soft_switch"),
    ("no switch in messages", {"messages": [_user("why?")]}, "chat", 0, "category_default"),
]


@pytest.mark.parametrize(
    ("body", "category", "tokens", "source"),
    [row[1:] for row in PRECEDENCE],
    ids=[row[0] for row in PRECEDENCE],
)
def test_precedence(body: dict[str, Any], category: str | None, tokens: int, source: str) -> None:
    b = _resolve(body, category)
    assert (b.tokens, b.source, b.requested, b.capped_by) == (tokens, source, tokens, None)
    assert b.thinking is (tokens > 0)


def test_from_body_picks_only_budget_fields() -> None:
    body = {
        "model": "auto",
        "messages": [_user("x")],
        "thinking_token_budget": 3,
        "reasoning_effort": "low",
        "chat_template_kwargs": ON,
        "max_tokens": 50,
        "max_completion_tokens": 60,
        "temperature": 0.6,
    }
    assert BudgetRequest.from_body(body) == BudgetRequest(
        thinking_token_budget=3,
        reasoning_effort="low",
        chat_template_kwargs=ON,
        messages=[_user("x")],
        max_tokens=50,
        max_completion_tokens=60,
    )
    assert BudgetRequest.from_body({}) == BudgetRequest()


# ---------------------------------------------------------------------------------------------
# Soft switches
# ---------------------------------------------------------------------------------------------

SWITCHES = [
    ("none", [_user("hello")], None),
    ("no messages", None, None),
    ("not a list", "hello /think", None),
    ("think", [_user("/think")], True),
    ("no_think", [_user("/no_think")], False),
    (
        "latest user turn wins",
        [_user("/think"), {"role": "assistant", "content": "ok"}, _user("/no_think")],
        False,
    ),
    ("latest wins, other way", [_user("/no_think"), _user("/think")], True),
    ("later turn without switch keeps earlier", [_user("/no_think"), _user("and now?")], False),
    ("assistant ignored", [_user("/think"), {"role": "assistant", "content": "/no_think"}], True),
    ("assistant only", [{"role": "assistant", "content": "/no_think"}], None),
    ("tool ignored", [_user("/no_think"), {"role": "tool", "content": "/think"}], False),
    ("system counts", [{"role": "system", "content": "Be brief. /no_think"}, _user("hi")], False),
    ("user after system wins", [{"role": "system", "content": "/no_think"}, _user("/think")], True),
    ("both in one message, last wins", [_user("/think then /no_think")], False),
    ("both in one message, other order", [_user("/no_think then /think")], True),
    ("list content", [_user([{"type": "text", "text": "look /no_think"}])], False),
    (
        "list content, last part wins",
        [_user([{"type": "text", "text": "/no_think"}, {"type": "image_url", "image_url": {"url": "/think"}},
                {"type": "text", "text": "/think"}])],
        True,
    ),
    ("non-text parts ignored", [_user([{"type": "image_url", "image_url": {"url": "/no_think"}}])], None),
    ("parts do not glue", [_user([{"type": "text", "text": "a"}, {"type": "text", "text": "/think"}])], True),
    # text parts are read as everywhere else (serve_graph.messages): input_text and untyped parts count
    ("input_text part", [_user([{"type": "input_text", "text": "/no_think"}])], False),
    ("untyped text part", [_user([{"text": "/no_think"}])], False),
    ("/thinking is not a switch", [_user("/thinking about it")], None),
    ("/no_thinking is not a switch", [_user("/no_thinking")], None),
    ("a/think is not a switch", [_user("a/think")], None),
    ("path is not a switch", [_user("see /think/x and /think.txt")], None),
    ("trailing punctuation ok", [_user("answer this /no_think.")], False),
    ("newline separated", [_user("line\n/no_think\nmore")], False),
    ("content null", [_user(None)], None),
    ("malformed entries skipped", ["junk", {"content": "/think"}, _user("/no_think")], False),
]


@pytest.mark.parametrize(("messages", "expected"), [r[1:] for r in SWITCHES], ids=[r[0] for r in SWITCHES])
def test_soft_switch(messages: Any, expected: bool | None) -> None:
    assert soft_switch(messages) is expected


# ---------------------------------------------------------------------------------------------
# Caps
# ---------------------------------------------------------------------------------------------


def test_max_tokens_caps_leaving_room_for_the_answer() -> None:
    b = _resolve({"max_tokens": 100})
    assert (b.tokens, b.requested, b.capped_by, b.source) == (84, 5000, "max_tokens", "category_default")


def test_max_completion_tokens_preferred_over_max_tokens() -> None:
    b = _resolve({"max_tokens": 100, "max_completion_tokens": 300})
    assert (b.tokens, b.capped_by) == (284, "max_completion_tokens")
    b = _resolve({"max_tokens": 300, "max_completion_tokens": 100})
    assert (b.tokens, b.capped_by) == (84, "max_completion_tokens")


def test_cap_floors_at_zero() -> None:
    b = _resolve({"max_tokens": 10})
    assert (b.tokens, b.requested, b.capped_by, b.thinking) == (0, 5000, "max_tokens", False)


def test_cap_not_reported_when_budget_fits() -> None:
    b = _resolve({"max_tokens": 5016})
    assert (b.tokens, b.capped_by) == (5000, None)
    b = _resolve({"max_tokens": 5015})
    assert (b.tokens, b.capped_by) == (4999, "max_tokens")


def test_explicit_budget_is_capped_too() -> None:
    b = _resolve({"thinking_token_budget": 500, "max_completion_tokens": 216})
    assert (b.tokens, b.requested, b.source, b.capped_by) == (200, 500, "explicit", "max_completion_tokens")


def test_context_cap_uses_prompt_estimate() -> None:
    b = _resolve({}, context_len=4096, prompt_tokens=1000)
    assert (b.tokens, b.requested, b.capped_by) == (3080, 5000, "context")


def test_context_cap_without_prompt_estimate_counts_prompt_as_zero() -> None:
    b = _resolve({}, context_len=4096)
    assert (b.tokens, b.capped_by) == (4080, "context")


def test_context_cap_floors_at_zero() -> None:
    b = _resolve({}, context_len=4096, prompt_tokens=5000)
    assert (b.tokens, b.capped_by) == (0, "context")


def test_context_large_enough_is_no_cap() -> None:
    b = _resolve({}, context_len=32768, prompt_tokens=1000)
    assert (b.tokens, b.capped_by) == (5000, None)


def test_max_budget_caps() -> None:
    policy = POLICY.model_copy(update={"max_budget": 2000})
    b = _resolve({"reasoning_effort": "high"}, policy=policy)
    assert (b.tokens, b.requested, b.capped_by) == (2000, 9000, "max_budget")


def test_tightest_cap_is_reported() -> None:
    policy = POLICY.model_copy(update={"max_budget": 2000})
    b = _resolve({"max_tokens": 3016}, policy=policy, context_len=4096, prompt_tokens=1000)
    assert (b.tokens, b.capped_by) == (2000, "max_budget")
    b = _resolve({"max_tokens": 1516}, policy=policy, context_len=4096, prompt_tokens=1000)
    assert (b.tokens, b.capped_by) == (1500, "max_tokens")
    b = _resolve({"max_tokens": 3016}, policy=policy, context_len=2016, prompt_tokens=500)
    assert (b.tokens, b.capped_by) == (1500, "context")


def test_equal_caps_report_the_request_field_first() -> None:
    policy = POLICY.model_copy(update={"max_budget": 1000})
    b = _resolve({"max_tokens": 1016}, policy=policy, context_len=1016)
    assert (b.tokens, b.capped_by) == (1000, "max_tokens")


def test_min_answer_tokens_comes_from_policy() -> None:
    policy = POLICY.model_copy(update={"min_answer_tokens": 0})
    assert _resolve({"max_tokens": 100}, policy=policy).tokens == 100
    policy = POLICY.model_copy(update={"min_answer_tokens": 64})
    assert _resolve({"max_tokens": 100}, policy=policy).tokens == 36


def test_zero_budget_is_never_capped() -> None:
    b = _resolve({"chat_template_kwargs": OFF, "max_tokens": 1}, context_len=10, prompt_tokens=20)
    assert (b.tokens, b.capped_by) == (0, None)


# ---------------------------------------------------------------------------------------------
# Errors name the field
# ---------------------------------------------------------------------------------------------

ERRORS = [
    ({"thinking_token_budget": True}, "thinking_token_budget"),
    ({"thinking_token_budget": False}, "thinking_token_budget"),
    ({"thinking_token_budget": 1.5}, "thinking_token_budget"),
    ({"thinking_token_budget": 2.0}, "thinking_token_budget"),
    ({"thinking_token_budget": -1}, "thinking_token_budget"),
    ({"thinking_token_budget": "5"}, "thinking_token_budget"),
    ({"thinking_token_budget": [5]}, "thinking_token_budget"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"reasoning_effort": "HIGH"}, "reasoning_effort"),
    ({"reasoning_effort": "minimal"}, "reasoning_effort"),
    ({"reasoning_effort": ""}, "reasoning_effort"),
    ({"reasoning_effort": 1}, "reasoning_effort"),
    ({"reasoning_effort": True}, "reasoning_effort"),
    ({"reasoning_effort": ["high"]}, "reasoning_effort"),
    ({"chat_template_kwargs": {"enable_thinking": "true"}}, "chat_template_kwargs.enable_thinking"),
    ({"chat_template_kwargs": {"enable_thinking": 1}}, "chat_template_kwargs.enable_thinking"),
    ({"chat_template_kwargs": {"enable_thinking": 0}}, "chat_template_kwargs.enable_thinking"),
    ({"chat_template_kwargs": "enable_thinking"}, "chat_template_kwargs"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "100"}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_completion_tokens": True}, "max_completion_tokens"),
    ({"max_completion_tokens": 2.5}, "max_completion_tokens"),
    # a malformed field is an error even when a higher-precedence field would win
    ({"thinking_token_budget": 5, "reasoning_effort": "bogus"}, "reasoning_effort"),
    (
        {"thinking_token_budget": 5, "chat_template_kwargs": {"enable_thinking": "no"}},
        "chat_template_kwargs.enable_thinking",
    ),
    ({"max_completion_tokens": 100, "max_tokens": 0}, "max_tokens"),
]


@pytest.mark.parametrize(("body", "param"), ERRORS, ids=[f"{p}={b}" for b, p in ERRORS])
def test_errors_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        _resolve(body)
    assert e.value.param == param
    assert str(e.value).startswith(f"{param}: ") and e.value.message == str(e.value)
    assert isinstance(e.value, ValueError)
    assert error_kind(e.value).status == 400 and error_kind(e.value).code == "invalid_value"


def test_error_message_shows_the_value() -> None:
    with pytest.raises(InvalidRequest) as e:
        _resolve({"thinking_token_budget": -3})
    assert e.value.message == "thinking_token_budget: must be an integer >= 0, got -3"


def test_boundary_values_are_accepted() -> None:
    assert _resolve({"max_tokens": 1}).tokens == 0
    assert _resolve({"thinking_token_budget": 0}).tokens == 0
    assert _resolve({"chat_template_kwargs": {"enable_thinking": None}}).source == "category_default"


# ---------------------------------------------------------------------------------------------
# Policy validation
# ---------------------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    p = BudgetPolicy()
    assert (p.default_budget, p.thinking_on_budget, p.min_answer_tokens) == (1024, 1024, 16)
    assert p.max_budget is None
    assert p.effort == {"none": 0, "low": 512, "medium": 2048, "high": 8192}
    assert p.categories == {}
    b = resolve_budget(BudgetRequest(reasoning_effort="medium"), None, p)
    assert (b.tokens, b.source) == (2048, "reasoning_effort")


def test_policy_from_yaml_shaped_mapping() -> None:
    p = BudgetPolicy.model_validate(
        {
            "default_budget": 256,
            "categories": {"code": {"default": 4096, "effort": {"high": 16384}}},
        }
    )
    assert resolve_budget(BudgetRequest(reasoning_effort="high"), "code", p).tokens == 16384
    assert resolve_budget(BudgetRequest(reasoning_effort="low"), "code", p).tokens == 512


BAD_POLICIES = [
    ({"default_budget": -1}, "default_budget"),
    ({"min_answer_tokens": -1}, "min_answer_tokens"),
    ({"max_budget": -1}, "max_budget"),
    ({"thinking_on_budget": 0}, "thinking_on_budget"),
    ({"default_budget": True}, "default_budget"),
    ({"default_budget": 1.5}, "default_budget"),
    ({"effort": {"none": 0, "low": -1, "medium": 2, "high": 3}}, "effort.low"),
    ({"effort": {"none": 5, "low": 10, "medium": 20, "high": 30}}, "'none' must be 0"),
    ({"effort": {"none": 0, "low": 10, "medium": 20}}, "missing high"),
    ({"effort": {"none": 0, "low": 10, "medium": 20, "high": 30, "max": 40}}, "effort.max"),
    ({"effort": {"none": 0, "low": 30, "medium": 20, "high": 40}}, "low (30) > medium (20)"),
    ({"categories": {"math": {"default": -5}}}, "categories.math.default"),
    (
        {"categories": {"math": {"default": 5, "effort": {"none": 3}}}},
        "categories.math.effort: 'none' must be 0",
    ),
    # the category map is checked merged with the policy's: low 5000 > policy medium 2048
    (
        {"categories": {"math": {"default": 5, "effort": {"low": 5000}}}},
        "categories.math.effort: low (5000) > medium (2048)",
    ),
    ({"categories": {"math": {"default": 5, "budget": 3}}}, "categories.math.budget"),
    ({"categories": {"math": {}}}, "categories.math.default"),
    ({"default": 5}, "default"),
]


@pytest.mark.parametrize(("raw", "where"), BAD_POLICIES, ids=[w for _, w in BAD_POLICIES])
def test_bad_policy_rejected(raw: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as e:
        BudgetPolicy.model_validate(raw)
    text = "\n".join(".".join(map(str, err["loc"])) + ": " + err["msg"] for err in e.value.errors())
    assert where in text


def test_policy_is_frozen() -> None:
    with pytest.raises(ValidationError):
        POLICY.default_budget = 5  # type: ignore[misc]

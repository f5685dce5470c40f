"""`model: auto` is routed by task: requests of different kinds reach different models."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serve_graph.config import load_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LOCAL = load_config(REPO / "models.yaml").resolve("local")

PROMPTS = {
    "code": "Write a Python function that reverses a singly linked list, with type hints and a unit test.",
    "math": "Solve for x: 3x + 7 = 22. Show your steps.",
    "chat": "What's a good way to spend a rainy Sunday afternoon with friends?",
    "creative": "Write a short poem about autumn leaves falling on a quiet street.",
    "translation": "Translate into German: 'The train to Berlin leaves at nine tomorrow morning.'",
}


@pytest.mark.parametrize("category", list(PROMPTS))
def test_auto_routes_by_category(client: httpx.Client, category: str) -> None:
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": PROMPTS[category]}],
        "max_tokens": 4,
        "thinking_token_budget": 0,
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-serve-graph-category"] == category
    assert float(r.headers["x-serve-graph-confidence"]) >= LOCAL.confidence_threshold
    expected = LOCAL.category_routes[category][0]
    assert r.headers["x-serve-graph-model"] == expected == r.json()["model"]
    assert r.headers["x-serve-graph-route"] == category


def test_different_kinds_reach_different_models(client: httpx.Client) -> None:
    served = set()
    for text in PROMPTS.values():
        r = client.post(
            "/v1/chat/completions",
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 2,
                "thinking_token_budget": 0,
            },
        )
        assert r.status_code == 200
        served.add(r.headers["x-serve-graph-model"])
    assert len(served) >= 3, served


def test_follow_up_turn_keeps_the_category(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": PROMPTS["code"]},
        {"role": "assistant", "content": "def reverse(head):\n    prev = None\n    ..."},
        {"role": "user", "content": "now make it faster"},
    ]
    r = client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": messages, "max_tokens": 2, "thinking_token_budget": 0},
    )
    assert r.status_code == 200 and r.headers["x-serve-graph-category"] == "code"


def test_image_content_without_a_vision_model_is_400(client: httpx.Client) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    r = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "vision_not_supported" and err["param"] == "messages"

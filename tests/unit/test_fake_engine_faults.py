"""FakeEngine's failure injection (what tests/fake/test_failover.py relies on), without a cluster."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from serve_graph.testing.fake_engine import FakeEngine, FakeEngineSettings


def _engine(model_id: str, **settings: Any) -> FakeEngine:
    cfg = SimpleNamespace(model_id=model_id, engine_kwargs={"max_model_len": 256},
                          experimental_configs={"fake_engine": settings})
    return FakeEngine(cfg)


def _items(engine: FakeEngine, **fields: Any) -> list[Any]:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8, **fields)

    async def collect() -> list[Any]:
        return [item async for item in engine.chat(request)]

    return asyncio.run(collect())


def test_per_model_settings_override_the_shared_ones() -> None:
    shared = {"latency_ms": 5, "models": {"a": {"fail_first": 500, "latency_ms": 1}}}
    assert FakeEngineSettings.from_llm_config(_engine("a", **shared).llm_config) == FakeEngineSettings(
        latency_ms=1, fail_first=500)
    assert FakeEngineSettings.from_llm_config(_engine("b", **shared).llm_config) == FakeEngineSettings(latency_ms=5)
    with pytest.raises(ValueError, match="unknown"):
        _engine("a", models={"a": {"fail_frist": 500}})


def test_fail_first_answers_the_engine_error() -> None:
    (item,) = _items(_engine("a", fail_first=503))
    assert item.error.code == 503 and item.error.type == "InternalServerError"


def test_fail_after_chunks_raises_mid_stream() -> None:
    engine = _engine("a", fail_after_chunks=2)
    got: list[Any] = []

    async def collect() -> None:
        from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

        request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                        stream=True)
        async for item in engine.chat(request):
            got.append(item)

    with pytest.raises(RuntimeError, match="after 2 chunks"):
        asyncio.run(collect())
    assert len(got) == 2 and all(item.startswith("data: {") for item in got)
    assert len(_items(_engine("a", fail_after_chunks=2))) == 1  # JSON answers are whole

"""TracedLLMServer on Ray's real `LLMServer` with vLLM's own tracing code, without Ray or a model.

The replica gets exactly what `env_for_workers` puts into runtime_env (no settings object). A fake
engine does what vLLM's AsyncLLM does when `otlp_traces_endpoint` is set: `init_tracer` at start,
and an `llm_request` span per request parented by the trace headers it was handed. Importing vLLM
takes ~10-40 s.

Env: TEST_TRACEPARENT, OTEL_* and SERVE_GRAPH_TRACING_ENABLED (from env_for_workers).
Prints the headers the engine saw, one dict per request (JSON).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import ray
import ray._private.worker


def _no_ray(*_a: Any, **_k: Any) -> None:
    raise RuntimeError("this scenario must not start or join Ray")


ray.init = ray._private.worker.init = _no_ray  # before anything below can call it

from opentelemetry import trace  # noqa: E402
from ray.llm._internal.serve.core.configs.openai_api_models import (  # noqa: E402
    ChatCompletionRequest,
    CompletionRequest,
)
from ray.llm._internal.serve.core.protocol import RawRequestInfo  # noqa: E402
from ray.serve.llm import LLMConfig  # noqa: E402
from vllm.tracing import extract_trace_context, init_tracer, instrument_manual  # noqa: E402
from vllm.tracing.utils import extract_trace_headers  # noqa: E402

from serve_graph import tracing  # noqa: E402
from serve_graph.server import TracedLLMServer  # noqa: E402

CONTENT = 'data: {"id":"c","model":"tiny","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n'
USAGE = ('data: {"id":"c","model":"tiny","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,'
         '"completion_tokens_details":{"reasoning_tokens":1}}}\n\n')
DONE = "data: [DONE]\n\n"
SEEN: list[dict[str, str]] = []


def vllm_llm_request_span(raw_request_info: Any) -> None:
    """vLLM's own code path: serving layer -> trace headers -> output processor's span."""
    headers = extract_trace_headers(raw_request_info.to_starlette_request().headers)
    instrument_manual(span_name="llm_request", start_time=time.time_ns(),
                      attributes={"gen_ai.request.id": "r"}, context=extract_trace_context(headers),
                      kind=trace.SpanKind.SERVER)


class FakeEngine:
    def __init__(self, cfg: Any) -> None:
        # what vLLM's AsyncLLM does at engine start when engine_kwargs has otlp_traces_endpoint
        init_tracer("vllm.llm_engine", tracing.resolve().endpoint)

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        SEEN.append(dict(raw_request_info.headers))
        vllm_llm_request_span(raw_request_info)
        if request.stream:
            yield CONTENT
            yield USAGE
            yield DONE
        else:
            yield {"id": "c", "model": "tiny", "choices": [{"index": 0, "finish_reason": "length",
                   "message": {"role": "assistant", "content": "x"}}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2}}

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        raise ValueError("engine exploded")
        yield  # an async generator, like the real engine


async def _call(server: Any, method: str, *args: Any) -> list[Any]:
    """Exactly what Serve's replica does for handle.options(stream=True) calls."""
    gen = getattr(server, method)(*args)
    assert inspect.iscoroutine(gen)
    gen = await gen
    assert inspect.isasyncgen(gen)
    return [x async for x in gen]


async def _requests(server: Any) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    tp = os.environ["TEST_TRACEPARENT"]
    streamed = await _call(server, "chat",
                           ChatCompletionRequest(model="tiny", messages=msgs, stream=True, max_tokens=8),
                           RawRequestInfo(headers={"traceparent": tp, "x-request-id": "r-1"}))
    assert streamed == [[streamed[0][0]], [USAGE], [DONE]], streamed  # each item in a list of one
    unary = await _call(server, "chat", ChatCompletionRequest(model="tiny", messages=msgs), None)
    assert unary[0]["choices"][0]["finish_reason"] == "length"
    try:
        await _call(server, "completions", CompletionRequest(model="tiny", prompt="p"),
                    RawRequestInfo(headers={"traceparent": tp}))
    except ValueError:
        pass
    else:
        raise AssertionError("the engine error must reach the caller")


def main() -> None:
    cfg = LLMConfig(model_loading_config={"model_id": "tiny", "model_source": "/nonexistent"},
                    experimental_configs={"stream_batching_interval_ms": 0},
                    server_cls="serve_graph.server:TracedLLMServer")
    assert cfg.server_cls is TracedLLMServer
    server = TracedLLMServer.sync_init(cfg, engine_cls=FakeEngine)
    assert tracing.is_enabled()  # set up by the constructor, before any engine start
    server.engine = FakeEngine(cfg)  # not server.start(): that reports telemetry through Ray
    asyncio.run(_requests(server))
    assert tracing.force_flush()
    print(json.dumps(SEEN))


if __name__ == "__main__":
    main()

"""The model replica's side: `traced_call` continues the router's carrier and hands the engine
headers re-pointed at its own span; the engine starts vLLM-style `llm_request` span through the
*global* provider, parented by those headers.

Env: TEST_CARRIER (JSON headers from tracing_router), OTEL_* (export).
Prints the headers the engine saw (JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

from opentelemetry import trace

from serve_graph import tracing

CHUNKS = [
    ['data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'],
    ["data: [DONE]\n\n"],
]


def main() -> None:
    assert tracing.setup_tracing(tracing.LLM_SERVER_SERVICE) is True
    carrier = json.loads(os.environ["TEST_CARRIER"])
    seen: dict[str, str] = {}

    async def engine(headers: dict[str, str]) -> AsyncIterator[list[str]]:
        seen.update(headers)

        async def gen() -> AsyncIterator[list[str]]:
            # what vLLM does: its own span via the global provider, parent from the headers
            ctx = tracing.extract(headers)
            trace.get_tracer("vllm.tracing").start_span("llm_request", context=ctx,
                                                         kind=trace.SpanKind.SERVER).end()
            for chunk in CHUNKS:
                yield chunk

        return gen()

    async def run() -> list[list[str]]:
        stream = await tracing.traced_call("llm_server.chat", {**carrier, "x-request-id": "r1"}, engine)
        return [x async for x in stream]

    assert asyncio.run(run()) == CHUNKS
    assert tracing.force_flush()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()

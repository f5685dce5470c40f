"""A fake engine for Ray's `LLMServer`: vLLM's response shapes, no model, no vLLM engine, no GPU.

Ray's `LLMServer(llm_config, engine_cls=...)` takes the engine class by injection (Ray's own tests
pass their mock engine the same way). `serve_graph.app.build_app({..., "engine": "fake"})` binds
`FakeEngine` into every model's LLMServer, so a real Serve app (router, handles, replicas, health,
tracing) starts in seconds and answers like vLLM would:

- chat and completions, JSON or SSE (`data: {chunk}` ... `data: [DONE]`), with
  `stream_options.include_usage` honoured (a final chunk with `choices: []` and `usage`);
- thinking as the tiny random-weight models do on vLLM: a model configured with a reasoning parser
  thinks unless `chat_template_kwargs.enable_thinking` is false, and never stops on its own, so
  `thinking_token_budget: b` yields exactly b - 1 reasoning tokens (vLLM counts the newline after
  the pre-opened `<think>`); without a budget it thinks `think_tokens` tokens;
- `max_tokens` / `max_completion_tokens` cut reasoning and answer (`finish_reason: length`), and a
  request beyond the context answers vLLM's 400 as an `ErrorResponse` item.

Settings come from `llm_config.experimental_configs["fake_engine"]` (see `FakeEngineSettings`),
e.g. `{"latency_ms": 20}` for a fixed time to first token; `models: {<model id>: {...}}` overrides
them per model. Failure injection: `fail_first: 500` answers every request with that engine error
as the first item (`ErrorResponse`, what vLLM yields), `fail_after_chunks: n` makes a stream raise
after n chunks (the replica's generator fails mid-stream, as an engine crash would).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Any

from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionResponse,
    CompletionStreamResponse,
    ErrorInfo,
    ErrorResponse,
)
from ray.llm._internal.serve.core.engine.protocol import LLMEngine

from serve_graph.messages import message_text

SETTINGS_KEY = "fake_engine"
DEFAULT_MAX_MODEL_LEN = 4096
_TEMPLATE_TOKENS_PER_MESSAGE = 4  # <|im_start|>role\n ... <|im_end|>\n


@dataclass(frozen=True)
class FakeEngineSettings:
    latency_ms: float = 0.0  # before the first token (prefill stand-in)
    token_latency_ms: float = 0.0  # between streamed tokens
    think_tokens: int = 8  # reasoning length when the request sets no budget
    answer_tokens: int = 4  # answer length, before max_tokens cuts it
    always_thinks: bool = False  # a *-Thinking-2507 model: enable_thinking cannot switch it off
    fail_first: int | None = None  # every request's first item is an engine error with this HTTP status
    fail_after_chunks: int | None = None  # streams raise after this many chunks

    @classmethod
    def from_llm_config(cls, llm_config: Any) -> FakeEngineSettings:
        raw = dict((getattr(llm_config, "experimental_configs", None) or {}).get(SETTINGS_KEY) or {})
        per_model = raw.pop("models", None) or {}
        raw.update(per_model.get(getattr(llm_config, "model_id", None), {}))
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"experimental_configs.{SETTINGS_KEY}: unknown {sorted(unknown)}; known: {sorted(known)}")
        return cls(**raw)


def count_tokens(text: str) -> int:
    """One token per whitespace-separated word: enough for usage numbers and context checks."""
    return len(text.split())


@dataclass(frozen=True)
class Generation:
    """What the fake model 'generates' for one request, decided before any token is sent."""

    prompt_tokens: int
    reasoning: list[str] | None  # None: thinking off (vLLM's `reasoning: null`)
    answer: list[str]
    finish_reason: str

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning or [])

    @property
    def completion_tokens(self) -> int:
        return self.reasoning_tokens + len(self.answer)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def _sse(model: type[Any], data: dict[str, Any]) -> str:
    """One SSE packet, serialized as vLLM does (`model_dump_json(exclude_unset=True)`)."""
    return f"data: {model.model_validate(data).model_dump_json(exclude_unset=True)}\n\n"


class FakeEngine(LLMEngine):
    """An `LLMEngine` that fakes generation (see the module docstring)."""

    def __init__(self, llm_config: Any) -> None:
        self.llm_config = llm_config
        self.settings = FakeEngineSettings.from_llm_config(llm_config)
        engine_kwargs = getattr(llm_config, "engine_kwargs", None) or {}
        self.model_id: str = llm_config.model_id
        self.max_model_len = int(engine_kwargs.get("max_model_len") or DEFAULT_MAX_MODEL_LEN)
        self.thinks = bool(engine_kwargs.get("reasoning_parser"))  # hybrid or thinking-only Qwen3
        self.started = False

    # ---- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.started = True

    async def check_health(self) -> None:
        if not self.started:
            raise RuntimeError("fake engine not started")

    def routing_stats(self) -> dict[str, Any]:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        return None

    async def reset_prefix_cache(self) -> None:
        return None

    # ---- generation --------------------------------------------------------------------------

    def _error(self, message: str, param: str | None = None, code: int = 400) -> ErrorResponse:
        kind = "BadRequestError" if code < 500 else "InternalServerError"
        return ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code))

    def _injected_error(self) -> ErrorResponse | None:
        code = self.settings.fail_first
        return None if code is None else self._error(f"fake engine failure ({code})", code=code)

    def _check_chunk(self, sent: int) -> None:
        limit = self.settings.fail_after_chunks
        if limit is not None and sent >= limit:
            raise RuntimeError(f"fake engine failed after {sent} chunks")

    def _plan(self, request: Any, prompt_tokens: int, chat: bool) -> Generation | ErrorResponse:
        requested = getattr(request, "max_completion_tokens", None) or getattr(request, "max_tokens", None)
        room = self.max_model_len - prompt_tokens
        if requested is not None and requested > room:
            return self._error(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{requested} output tokens and your prompt contains at least {prompt_tokens} input tokens, for a "
                f"total of at least {requested + prompt_tokens} tokens.",
                param="max_tokens",
            )
        limit = requested if requested is not None else max(room, 0)
        reasoning: list[str] | None = None
        if chat and self._thinking_on(request):
            budget = getattr(request, "thinking_token_budget", None)
            n = self.settings.think_tokens if budget is None else max(int(budget) - 1, 0)
            reasoning = [f"think{i}" for i in range(min(n, limit))]
        room_left = limit - len(reasoning or [])
        words = ["fake", "answer", "from", self.model_id] + ["ok"] * max(self.settings.answer_tokens - 4, 0)
        answer = words[: min(self.settings.answer_tokens, room_left)]
        finish = "length" if len(answer) < self.settings.answer_tokens else "stop"
        return Generation(prompt_tokens, reasoning, answer, finish)

    def _thinking_on(self, request: Any) -> bool:
        if not self.thinks:
            return False
        if self.settings.always_thinks:
            return True
        kwargs = getattr(request, "chat_template_kwargs", None) or {}
        return kwargs.get("enable_thinking", True) is not False

    async def _wait(self, seconds_ms: float) -> None:
        if seconds_ms > 0:
            await asyncio.sleep(seconds_ms / 1000)

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:  # type: ignore[override]
        messages = getattr(request, "messages", None) or []
        prompt = sum(count_tokens(message_text(m)) + _TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
        gen = self._injected_error() or self._plan(request, prompt, chat=True)
        if isinstance(gen, ErrorResponse):
            yield gen
            return
        await self._wait(self.settings.latency_ms)
        model = getattr(request, "model", None) or self.model_id
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        show_reasoning = getattr(request, "include_reasoning", True) is not False
        reasoning = " ".join(gen.reasoning) if gen.reasoning is not None and show_reasoning else None
        if not getattr(request, "stream", False):
            await self._wait(self.settings.token_latency_ms * gen.completion_tokens)
            yield ChatCompletionResponse.model_validate({
                "id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "logprobs": None, "finish_reason": gen.finish_reason, "stop_reason": None,
                             "message": {"role": "assistant", "content": " ".join(gen.answer) or None,
                                         "reasoning": reasoning or None}}],
                "usage": gen.usage(),
            })
            return

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return _sse(ChatCompletionStreamResponse, {
                "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            })

        yield chunk({"role": "assistant", "content": ""})
        tokens = [("reasoning", t) for t in (gen.reasoning or []) if show_reasoning]
        tokens += [("content", t) for t in gen.answer]
        for i, (field, token) in enumerate(tokens):
            self._check_chunk(i + 1)
            await self._wait(self.settings.token_latency_ms)
            first_of_field = i == 0 or tokens[i - 1][0] != field
            last = i == len(tokens) - 1
            yield chunk({field: token if first_of_field else f" {token}"}, gen.finish_reason if last else None)
        if not tokens:
            yield chunk({"content": ""}, gen.finish_reason)
        if _include_usage(request):
            yield _usage_chunk(ChatCompletionStreamResponse, "chat.completion.chunk", rid, created, model, gen)
        yield "data: [DONE]\n\n"

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:  # type: ignore[override]
        prompt = request.prompt
        text = prompt if isinstance(prompt, str) else " ".join(p for p in (prompt or []) if isinstance(p, str))
        gen = self._injected_error() or self._plan(request, count_tokens(text), chat=False)
        if isinstance(gen, ErrorResponse):
            yield gen
            return
        await self._wait(self.settings.latency_ms)
        model = getattr(request, "model", None) or self.model_id
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if not getattr(request, "stream", False):
            await self._wait(self.settings.token_latency_ms * gen.completion_tokens)
            yield CompletionResponse.model_validate({
                "id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": " ".join(gen.answer), "logprobs": None,
                             "finish_reason": gen.finish_reason, "stop_reason": None}],
                "usage": gen.usage(),
            })
            return
        for i, token in enumerate(gen.answer):
            self._check_chunk(i)
            await self._wait(self.settings.token_latency_ms)
            last = i == len(gen.answer) - 1
            yield _sse(CompletionStreamResponse, {
                "id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": token if i == 0 else f" {token}", "logprobs": None,
                             "finish_reason": gen.finish_reason if last else None}],
            })
        if _include_usage(request):
            yield _usage_chunk(CompletionStreamResponse, "text_completion", rid, created, model, gen)
        yield "data: [DONE]\n\n"

    async def embeddings(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:  # type: ignore[override]
        yield self._error("the fake engine does not serve embeddings")

    async def transcriptions(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:  # type: ignore[override]
        yield self._error("the fake engine does not serve transcriptions")


def _usage_chunk(cls: Any, obj: str, rid: str, created: int, model: str, gen: Any) -> str:
    """The final usage chunk of a stream (`stream_options.include_usage`): no choices, usage only."""
    return _sse(cls, {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                      "usage": gen.usage()})


def _include_usage(request: Any) -> bool:
    options = getattr(request, "stream_options", None)
    return bool(options is not None and getattr(options, "include_usage", False))



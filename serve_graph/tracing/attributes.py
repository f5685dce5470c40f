"""What goes on a span: GenAI request/response attributes, the router's decision, errors.

Attributes are only built when the span is sampled (`span.is_recording()`). Prompt and completion
text go on spans only with content capture on (opt-in: it is user data), truncated to
`CONTENT_LIMIT` characters.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from serve_graph.tracing import runtime
from serve_graph.tracing.names import (
    CONTENT_LIMIT,
    ERROR_TYPE,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROVIDER,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_REASONING_LEVEL,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    OPERATION_CHAT,
    OPERATION_TEXT_COMPLETION,
    SG_BUDGET,
    SG_BUDGET_CAPPED_BY,
    SG_BUDGET_SOURCE,
    SG_CANDIDATES,
    SG_CATEGORY,
    SG_CLASSIFIER_LATENCY_MS,
    SG_CONFIDENCE,
    SG_MODEL,
    SG_REASON,
    SG_ROUTE,
    SG_SKIPPED,
    SG_STREAM,
    SG_TIME_TO_FIRST_CHUNK_MS,
)

# SSE chunks worth parsing when content is not captured: a finish reason, usage, or an error.
_SSE_INTERESTING = re.compile(r'"finish_reason":\s*"|"usage":\s*\{|"error"|"object":\s*"error"')


def clean(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None values and make sequences tuples of primitives (what OTel accepts)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple, set, frozenset)):
            v = tuple(str(x) if not isinstance(x, (str, bool, int, float)) else x for x in v)
        elif not isinstance(v, (str, bool, int, float)):
            v = str(v)
        out[k] = v
    return out


def set_attributes(span: Span, attrs: Mapping[str, Any]) -> None:
    """Set attributes (None skipped) only if the span is sampled."""
    if span.is_recording():
        span.set_attributes(clean(attrs))


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def operation_name(body: Any) -> str:
    """GenAI operation: `chat` for messages, `text_completion` for a prompt."""
    return OPERATION_CHAT if _get(body, "messages") is not None else OPERATION_TEXT_COMPLETION


def request_attributes(body: Any, *, model: str | None = None, operation: str | None = None) -> dict[str, Any]:
    """gen_ai.request.* from an OpenAI-style request (object or dict); input only with capture on."""
    max_tokens = _get(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _get(body, "max_tokens")
    attrs: dict[str, Any] = {
        GEN_AI_OPERATION_NAME: operation or operation_name(body),
        GEN_AI_PROVIDER_NAME: GEN_AI_PROVIDER,
        GEN_AI_REQUEST_MODEL: model if model is not None else _get(body, "model"),
        GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
        GEN_AI_REQUEST_TEMPERATURE: _get(body, "temperature"),
        GEN_AI_REQUEST_TOP_P: _get(body, "top_p"),
        GEN_AI_REQUEST_REASONING_LEVEL: _get(body, "reasoning_effort"),
        SG_STREAM: bool(_get(body, "stream")),
        SG_BUDGET: _get(body, "thinking_token_budget"),
    }
    if runtime.STATE.capture_content:
        messages = _get(body, "messages")
        attrs[GEN_AI_INPUT_MESSAGES] = _json_truncated(messages if messages is not None else
                                                       [{"role": "user", "content": _get(body, "prompt")}])
    return attrs


def record_decision(span: Span, *, decision: Any = None, classification: Any = None, budget: Any = None) -> None:
    """serve_graph.* from the router's Decision / Classification / Budget (duck-typed)."""
    if not span.is_recording():
        return
    attrs: dict[str, Any] = {}
    if classification is not None:
        attrs[SG_CATEGORY] = classification.category
        attrs[SG_CONFIDENCE] = float(classification.confidence)
        attrs[SG_CLASSIFIER_LATENCY_MS] = getattr(classification, "latency_ms", None)
    if decision is not None:
        attrs.update({SG_MODEL: decision.model, SG_ROUTE: decision.route, SG_REASON: decision.reason,
                      SG_CANDIDATES: tuple(getattr(decision, "candidates", ()) or ()),
                      SG_SKIPPED: tuple(getattr(decision, "skipped", ()) or ())})
    if budget is not None:
        attrs.update({SG_BUDGET: budget.tokens, SG_BUDGET_SOURCE: budget.source,
                      SG_BUDGET_CAPPED_BY: getattr(budget, "capped_by", None)})
    span.set_attributes(clean(attrs))


def record_error(span: Span, error: BaseException | str, message: str | None = None) -> None:
    """Mark the span failed: status ERROR, `error.type` (exception class or a short code such as
    "timeout" / "400"), the exception event when there is one."""
    if not span.is_recording():
        return
    if isinstance(error, BaseException):
        etype = type(error).__qualname__
        if type(error).__module__ not in ("builtins", "asyncio.exceptions"):
            etype = f"{type(error).__module__}.{etype}"
        span.record_exception(error)
        description = message or str(error) or etype
    else:
        etype, description = str(error), message or str(error)
    span.set_attribute(ERROR_TYPE, etype)
    span.set_status(Status(StatusCode.ERROR, description[:512]))


def record_first_chunk(span: Span) -> None:
    """Time to first chunk (ms since the span started); call once, when the first item arrives."""
    if span.is_recording():
        start = getattr(span, "start_time", None)
        if start:
            span.set_attribute(SG_TIME_TO_FIRST_CHUNK_MS, (time.time_ns() - start) / 1e6)


def record_response(span: Span, response: Any) -> None:
    """Finish reasons, response model/id and usage (incl. reasoning tokens) of a whole response."""
    if span.is_recording():
        obs = StreamObserver(span)
        obs.observe(response)
        obs.finish()


def _as_dict(item: Any) -> dict[str, Any] | None:
    if isinstance(item, dict):
        return item
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        try:
            out = dump()
            return out if isinstance(out, dict) else None
        except Exception:  # noqa: BLE001 - a response we cannot read is not worth failing a request
            return None
    return None


def _json_truncated(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CONTENT_LIMIT else text[: CONTENT_LIMIT - 3] + "..."


class StreamObserver:
    """Reads responses/chunks as they pass and puts what matters on the span at the end.

    Cheap per chunk: SSE strings are only JSON-parsed when they can carry a finish reason or usage
    (or content, when capture is on). Engine errors (ErrorResponse items) mark the span failed.
    """

    def __init__(self, span: Span) -> None:
        self.span = span
        self.chunks = 0
        self.finish_reasons: dict[int, str] = {}
        self.attrs: dict[str, Any] = {}
        self.capture = runtime.STATE.capture_content
        self.text: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}
        self._captured = 0

    def observe(self, item: Any) -> None:
        self.chunks += 1
        self._observe(item)

    def _observe(self, item: Any) -> None:
        if isinstance(item, (list, tuple)):
            for x in item:
                self._observe(x)
        elif isinstance(item, (str, bytes)):
            self._observe_sse(item.decode() if isinstance(item, bytes) else item)
        elif (err := getattr(item, "error", None)) is not None and hasattr(err, "message"):
            code = getattr(err, "code", None)
            record_error(self.span, str(getattr(err, "type", None) or code or "engine_error"), str(err.message))
        elif (d := _as_dict(item)) is not None:
            self._observe_dict(d)

    def _observe_sse(self, text: str) -> None:
        for line in text.splitlines():
            if not line.startswith("data: {"):
                continue
            if not self.capture and _SSE_INTERESTING.search(line) is None:
                continue
            try:
                d = json.loads(line[6:])
            except ValueError:
                continue
            if isinstance(d.get("error"), dict) or d.get("object") == "error":
                e = d["error"] if isinstance(d.get("error"), dict) else d
                record_error(self.span, str(e.get("type") or e.get("code") or "engine_error"), str(e.get("message")))
            else:
                self._observe_dict(d)

    def _observe_dict(self, d: Mapping[str, Any]) -> None:
        if d.get("model"):
            self.attrs[GEN_AI_RESPONSE_MODEL] = d["model"]
        if d.get("id"):
            self.attrs[GEN_AI_RESPONSE_ID] = d["id"]
        for i, choice in enumerate(d.get("choices") or ()):
            if not isinstance(choice, Mapping):
                continue
            idx = choice.get("index", i)
            if choice.get("finish_reason"):
                self.finish_reasons[idx] = str(choice["finish_reason"])
            if self.capture:
                part = choice.get("message") or choice.get("delta") or {}
                self._capture(self.text, idx, part.get("content") if isinstance(part, Mapping) else None)
                self._capture(self.text, idx, choice.get("text"))
                if isinstance(part, Mapping):
                    self._capture(self.reasoning, idx, part.get("reasoning") or part.get("reasoning_content"))
        usage = d.get("usage")
        if isinstance(usage, Mapping):
            self.attrs[GEN_AI_USAGE_INPUT_TOKENS] = usage.get("prompt_tokens")
            self.attrs[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.get("completion_tokens")
            details = usage.get("completion_tokens_details")
            if isinstance(details, Mapping) and details.get("reasoning_tokens") is not None:
                self.attrs[GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = details["reasoning_tokens"]

    def _capture(self, into: dict[int, list[str]], idx: int, text: Any) -> None:
        if isinstance(text, str) and text and self._captured < CONTENT_LIMIT:
            into.setdefault(idx, []).append(text)
            self._captured += len(text)

    def finish(self) -> None:
        if not self.span.is_recording():
            return
        attrs = dict(self.attrs)
        if self.finish_reasons:
            attrs[GEN_AI_RESPONSE_FINISH_REASONS] = tuple(self.finish_reasons[k] for k in sorted(self.finish_reasons))
        if self.capture and (self.text or self.reasoning):
            msgs = [{"role": "assistant", "content": "".join(self.text.get(i, [])),
                     **({"reasoning": "".join(self.reasoning[i])} if i in self.reasoning else {}),
                     "finish_reason": self.finish_reasons.get(i)}
                    for i in sorted(set(self.text) | set(self.reasoning))]
            attrs[GEN_AI_OUTPUT_MESSAGES] = _json_truncated(msgs)
        self.span.set_attributes(clean(attrs))

"""`TracedLLMServer`: Ray's LLMServer with one SERVER span per chat/completions call.

Select it with `LLMConfig(server_cls=TracedLLMServer)` (or the string
"serve_graph.server:TracedLLMServer"). Why a subclass and not Ray Serve's native tracing: the
router hands us an explicit W3C carrier in `RawRequestInfo.headers`, which works whatever Serve's
tracing setting is, and we re-point that carrier at our span before the engine sees it, so vLLM's
`llm_request` span (emitted when engine_kwargs has `otlp_traces_endpoint`) nests under the replica.

Return types are Ray's: `chat`/`completions` are `async def` methods that *return* an async
generator (Serve awaits the coroutine, then iterates the generator). We return our wrapper
generator, which yields the very same items and ends the span when the stream ends.
Note: `build_llm_deployment` names deployments after the class ("TracedLLMServer:<model>")
unless it is given `name_prefix`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ray.serve.llm.deployment import LLMServer

from serve_graph import tracing


def _replica_attributes() -> dict[str, Any]:
    """Deployment and replica id when running inside a Serve replica ({} elsewhere, e.g. tests)."""
    try:
        from ray import serve

        ctx = serve.get_replica_context()
        return {tracing.SG_DEPLOYMENT: ctx.deployment, tracing.SG_REPLICA_ID: ctx.replica_id.unique_id}
    except Exception:  # noqa: BLE001 - not in a replica
        return {}


def _with_headers(raw_request_info: Any, headers: dict[str, str]) -> Any:
    """The same RawRequestInfo with other headers (a new one when the caller sent none)."""
    if raw_request_info is None:
        from ray.llm._internal.serve.core.protocol import RawRequestInfo

        return RawRequestInfo(headers=headers)
    return dataclasses.replace(raw_request_info, headers=headers)


class TracedLLMServer(LLMServer):
    """LLMServer whose chat/completions run under an `llm_server.<method>` SERVER span."""

    def _init_shared(self, llm_config: Any, engine_cls: Any = None, model_downloader: Any = None) -> None:
        # Both constructors (Serve's async __init__ and sync_init) pass here before the engine
        # starts: our provider must be global before vLLM's AsyncLLM tries to install its own.
        tracing.setup_tracing(tracing.LLM_SERVER_SERVICE)
        self._trace_attrs: dict[str, Any] | None = None
        super()._init_shared(llm_config, engine_cls, model_downloader)

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        if not tracing.is_enabled():
            return await super().chat(request, raw_request_info)
        return await self._traced("chat", tracing.OPERATION_CHAT, request, raw_request_info, super().chat)

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        if not tracing.is_enabled():
            return await super().completions(request, raw_request_info)
        return await self._traced(
            "completions", tracing.OPERATION_TEXT_COMPLETION, request, raw_request_info, super().completions
        )

    async def _traced(self, method: str, operation: str, request: Any, raw_request_info: Any,
                      call: Callable[[Any, Any], Awaitable[AsyncIterator[Any]]]) -> AsyncIterator[Any]:
        if self._trace_attrs is None:
            self._trace_attrs = _replica_attributes()
        replica = self._trace_attrs
        model_id = self._llm_config.model_id

        def attrs() -> dict[str, Any]:  # built only for sampled spans
            return {**tracing.request_attributes(request, model=model_id, operation=operation), **replica}

        headers = raw_request_info.headers if raw_request_info is not None else {}

        async def run(new_headers: dict[str, str]) -> AsyncIterator[Any]:
            return await call(request, _with_headers(raw_request_info, new_headers))

        return await tracing.traced_call(f"llm_server.{method}", headers, run, attributes=attrs)

"""The router's side of the model deployments: one request's calls, with failover before the
first byte, and waking models that sleep at zero replicas.

`Upstream.call` walks `failover.Failover` (the pure order) and for each step:

1. candidates passed over are recorded with their reason; a sleeping one (scaled to zero) is woken;
2. calls the model's handle under a CLIENT span and waits for the first item. A call that may still
   fail over waits `replica_wait_s`, then asks what Serve knows (`ServeView`): not yet handed to a
   replica and no live replica -> cancel, reason `no_replica`; handed over, or replicas that are
   all busy -> keep waiting (load is not failure), up to `request_timeout_s`;
3. a call that raises before its first item fails over (`replica_died`, `backpressure`,
   `no_replica`, else `upstream_error`), and so does a first item that is an engine 5xx
   (`upstream_error`). An engine 4xx is the client's fault: it is the answer, no failover.

A failed model is marked down in the HealthTracker, so that following requests skip it at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.trace import Span

from serve_graph import tracing
from serve_graph.config import RouterSettings
from serve_graph.router.errors import (
    EngineRejected,
    ServeGraphError,
    UpstreamError,
    UpstreamFailure,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from serve_graph.router.failover import CandidateState, Failover, candidate_state
from serve_graph.router.health import HealthTracker
from serve_graph.router.plan import Plan
from serve_graph.router.scope import RequestScope
from serve_graph.router.serve_view import ServeView, failure_reason

logger = logging.getLogger("serve_graph.router")


@dataclass
class Served:
    """A call that produced its first item: the rest streams from `rest`."""

    plan: Plan
    span: Span
    first: Any
    rest: AsyncIterator[Any]
    cancel: Callable[[], None]


class Upstream:
    def __init__(self, handles: Mapping[str, Any], view: ServeView, health: HealthTracker,
                 settings: RouterSettings) -> None:
        self._plain = dict(handles)  # for the wake-up call (unary)
        self._stream = {m: h.options(stream=True) for m, h in handles.items()}
        self._view = view
        self._health = health
        self._settings = settings
        self._waking: dict[str, asyncio.Task[None]] = {}

    @property
    def handles(self) -> Mapping[str, Any]:
        """The model handles, by model id (unary; calls go through their `stream=True` copies)."""
        return self._plain

    def state(self, model: str) -> CandidateState:
        return candidate_state(live=self._view.live_replicas(model), ready=self._health.ready(model),
                               min_replicas=self._health.min_replicas(model), marked=self._health.marked(model))

    def healthy(self) -> frozenset[str]:
        """Models that are up right now: Serve's own replica sets, else the poll; minus marked ones."""
        return frozenset(m for m in self._stream if self.state(m).up)

    async def call(self, scope: RequestScope, kind: Literal["chat", "completions"], candidates: Sequence[str],
                   prepare: Callable[[str], tuple[Plan, Any]], headers: Mapping[str, str]) -> Served:
        """The first candidate that produces a first item, or the typed error of the last failure."""
        from ray.llm._internal.serve.core.protocol import RawRequestInfo

        s = self._settings
        failover = Failover(candidates, max_attempts=s.max_attempts, budget_s=s.failover_budget_s)
        last: UpstreamFailure | None = None
        while (step := failover.next(self.state)) is not None:
            scope.skipped(step.skipped)
            for f in step.skipped:
                if f.reason == "scaled_to_zero":
                    self.wake(f.model)
            plan, body = prepare(step.model)
            t0 = time.monotonic()
            with scope.call_span(step.model, body) as span:
                carrier = {**headers, **tracing.inject()}  # parent: this call's span
                response = getattr(self._stream[step.model], kind).remote(body, RawRequestInfo(headers=carrier))
            try:
                first = await self._first_item(step.model, response, may_fail_over=not step.last)
            except UpstreamFailure as e:
                fallback = failover.failed(step.model, e.reason, time.monotonic() - t0)
                self._health.mark_down(step.model, e.reason)
                scope.call_failed(span, fallback, e)
                logger.warning("%s failed before its first byte (%s): %s", step.model, e.reason, e.message)
                last = e
                continue
            except EngineRejected as e:
                tracing.record_error(span, str(e.status), e.message)
                raise
            scope.first_item(span)
            return Served(plan, span, first, _rest(step.model, response), response.cancel)
        raise last or UpstreamUnavailable("no candidate model could take the request")

    async def _first_item(self, model: str, response: Any, *, may_fail_over: bool) -> Any:
        s = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.request_timeout_s
        task = asyncio.ensure_future(response.__anext__())
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise UpstreamTimeout(f"model {model} did not answer within {s.request_timeout_s:g} s",
                                          model=model)
                done, _ = await asyncio.wait({task}, timeout=min(s.replica_wait_s, remaining)
                                             if may_fail_over else remaining)
                if done:
                    break
                if may_fail_over and self._view.assigned(response):
                    may_fail_over = False  # a replica has it: what remains is load, not failure
                elif may_fail_over and await self._no_replica(model):
                    raise UpstreamUnavailable(f"model {model} has no running replica", model=model,
                                              reason="no_replica")
            item = task.result()
        except StopAsyncIteration:
            raise UpstreamError(f"model {model} returned nothing", model=model) from None
        except (ServeGraphError, asyncio.CancelledError):
            raise
        except Exception as e:
            logger.info("call to %s raised %s: %s", model, type(e).__name__, str(e)[:500])
            raise upstream_failure(model, e, "before its first byte") from e
        finally:
            if not task.done():
                task.cancel()
                response.cancel()
        error = engine_error(item, model)
        if error is not None:
            raise error
        return item

    async def _no_replica(self, model: str) -> bool:
        live = self._view.live_replicas(model)
        if live is None:
            live = await self._view.running(model)
        return live == 0

    def wake(self, model: str) -> None:
        """Wake a model scaled to zero: one cheap queued call per model at a time is enough for
        Serve to start a replica (Serve scales up from zero at once on a queued request)."""
        task = self._waking.get(model)
        if task is None or task.done():
            self._waking[model] = asyncio.get_running_loop().create_task(self._wake(model))

    async def _wake(self, model: str) -> None:
        logger.info("waking %s: scaled to zero, passed over by a request", model)
        response = self._plain[model].check_health.remote()
        try:
            await asyncio.wait_for(_awaited(response), self._settings.request_timeout_s)
            logger.info("%s is awake", model)
        except Exception as e:  # noqa: BLE001 - a failed wake-up is retried by the next request
            logger.warning("waking %s failed: %r", model, e)
            response.cancel()


async def _awaited(response: Any) -> Any:
    return await response


async def _rest(model: str, response: Any) -> AsyncIterator[Any]:
    """The items after the first, with a failure typed like one before it (for the error event)."""
    while True:
        try:
            item = await response.__anext__()
        except StopAsyncIteration:
            return
        except Exception as e:
            failure = upstream_failure(model, e, "mid-stream")
            logger.warning("%s failed mid-stream (%s): %s", model, failure.reason, str(e)[:500])
            raise failure from e
        yield item


def upstream_failure(model: str, exc: Exception, when: str) -> UpstreamFailure:
    """A call's exception as the typed failure of that model: why (Serve's and Ray's exception
    types, `failure_reason`) decides whether it is unavailable or an error."""
    reason = failure_reason(exc)
    cls = UpstreamError if reason == "upstream_error" else UpstreamUnavailable
    return cls(f"model {model} failed {when} ({reason})", model=model, reason=reason)


def engine_error(item: Any, model: str) -> ServeGraphError | None:
    """The engine's error as the first item (vLLM's ErrorResponse, or an SSE error packet):
    a 5xx is a failure of that model (UpstreamError), a 4xx the client's (EngineRejected)."""
    first = item[0] if isinstance(item, list) and item else item
    err = getattr(first, "error", None)
    if err is not None and hasattr(err, "message"):
        return _from_engine(model, str(err.message), getattr(err, "code", None), getattr(err, "param", None))
    if isinstance(first, str) and first.startswith('data: {"error"'):
        try:
            e = json.loads(first[len("data: "):].split("\n", 1)[0])["error"]
        except (ValueError, KeyError, TypeError):
            return None
        if isinstance(e, dict):
            return _from_engine(model, str(e.get("message")), e.get("code"), e.get("param"))
    return None


def _from_engine(model: str, message: str, code: Any, param: Any) -> ServeGraphError:
    try:
        status = int(code)
    except (TypeError, ValueError):
        status = 400  # vLLM reports request errors without a numeric code as the client's
    if status >= 500:
        return UpstreamError(f"model {model} failed: {message}", model=model)
    return EngineRejected(message, status=status, param=param if isinstance(param, str) else None)

"""What Serve itself knows about a model deployment, read from the router's own handles.

Every `DeploymentHandle` of the router has a Serve router of its own, which the controller keeps
informed by long-poll push of the deployment's running replicas, and which drops a replica at once
when a call finds it dead. Reading that set costs a `len()`; it is how a request learns "no
replica" without waiting for the 2-s health poll or queueing behind a restart.

Ray 2.60 internals used (pinned; tests/unit/test_serve_view.py breaks if they move):
- `DeploymentHandle._router` (ray/serve/handle.py:94), a `SingletonThreadRouter` or
  `CurrentLoopRouter` whose `_asyncio_router` is the `AsyncioRouter` (_private/router.py:1696, 2055);
- `AsyncioRouter._deployment_available` (router.py:823; False once the deployment failed to deploy),
  `._request_router` (created lazily, router.py:767) and, before it exists, `._running_replicas`
  (router.py:832);
- `RequestRouter.curr_replicas` (_private/request_router/request_router.py:790): updated from the
  controller's push (`update_replicas`, :901) and by `on_replica_actor_died` (:810) when a call or a
  queue-length probe meets a dead replica;
- `DeploymentResponseGenerator._replica_result_future` (handle.py:356): done once the call has been
  assigned to a replica; until then it waits in the handle's queue (router.py:1134 "blocks
  indefinitely if no replicas are available").
Anything missing reads as "unknown" (None), and the router falls back to a fresh controller read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from serve_graph.router.errors import FallbackReason

logger = logging.getLogger("serve_graph.router")


class ServeView(Protocol):
    """What the failover loop asks about a model deployment (a fake in tests)."""

    def live_replicas(self, model: str) -> int | None:
        """Running replicas in the handle's replica set; None when unknown."""

    def assigned(self, response: Any) -> bool | None:
        """Whether a call has been handed to a replica; None when unknown."""

    async def running(self, model: str) -> int | None:
        """Running replicas per a fresh controller read (slow path); None when it cannot tell."""


class RayServeView:
    """`ServeView` over real `DeploymentHandle`s (see the module docstring for the internals)."""

    def __init__(self, handles: Mapping[str, Any], read_status: Callable[[], dict[str, tuple[str, int]]],
                 timeout_s: float = 0.5) -> None:
        self._handles = dict(handles)
        self._read_status = read_status
        self._timeout_s = timeout_s

    def live_replicas(self, model: str) -> int | None:
        return handle_live_replicas(self._handles.get(model))

    def assigned(self, response: Any) -> bool | None:
        future = getattr(response, "_replica_result_future", None)
        done = getattr(future, "done", None)
        return bool(done()) if callable(done) else None

    async def running(self, model: str) -> int | None:
        handle = self._handles.get(model)
        if handle is None:
            return None
        try:
            status = await asyncio.wait_for(asyncio.to_thread(self._read_status), self._timeout_s)
        except Exception as e:  # noqa: BLE001 - a slow or failing controller means "cannot tell"
            logger.info("controller status read for %s failed: %r", model, e)
            return None
        return status.get(handle.deployment_name, ("MISSING", 0))[1]


def handle_live_replicas(handle: Any) -> int | None:
    """Replicas in a handle's own replica set, or None when the handle does not expose it (yet)."""
    inner = getattr(getattr(handle, "_router", None), "_asyncio_router", None)
    if inner is None:
        return None
    if getattr(inner, "_deployment_available", True) is False:
        return 0
    request_router = getattr(inner, "_request_router", None)
    replicas = getattr(request_router, "curr_replicas", None)
    if replicas is not None:
        return len(replicas)
    running = getattr(inner, "_running_replicas", None)
    return len(running) if running is not None else None


def failure_reason(exc: BaseException) -> FallbackReason:
    """Why a call raised before its first item, from Serve's and Ray's exception types."""
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    if isinstance(exc, BackPressureError):
        return "backpressure"
    if isinstance(exc, DeploymentUnavailableError):
        return "no_replica"
    if isinstance(exc, (RayActorError, ReplicaUnavailableError)):
        return "replica_died"
    if isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None), RayActorError):
        return "replica_died"
    return "upstream_error"

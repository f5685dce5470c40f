"""The Ray Serve internals serve_graph/router/serve_view.py reads (Ray is pinned: these tests are the
alarm when an upgrade moves them), and how it reads them. The same reads against a real cluster:
tests/fake/test_failover.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from types import SimpleNamespace

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve._private.request_router.request_router import RequestRouter
from ray.serve._private.router import AsyncioRouter, CurrentLoopRouter, SingletonThreadRouter
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentResponseGenerator, _DeploymentHandleBase

from serve_graph.router.serve_view import RayServeView, failure_reason, handle_live_replicas


def test_the_internals_we_read_are_where_we_expect() -> None:
    assert "self._router: Optional[Router] = _router" in inspect.getsource(_DeploymentHandleBase.__init__)
    for wrapper in (SingletonThreadRouter, CurrentLoopRouter):
        assert "self._asyncio_router = AsyncioRouter(" in inspect.getsource(wrapper.__init__)
    init = inspect.getsource(AsyncioRouter.__init__)
    assert "self._deployment_available = True" in init and "self._request_router: Optional[RequestRouter]" in init
    assert "self._running_replicas: Optional[List[RunningReplicaInfo]] = None" in init
    targets = inspect.getsource(AsyncioRouter.update_deployment_targets)
    assert "self._deployment_available = deployment_target_info.is_available" in targets
    assert "self._running_replicas = running_replicas" in targets
    assert isinstance(inspect.getattr_static(RequestRouter, "curr_replicas"), property)
    assert "self._replicas.pop(replica_id, None)" in inspect.getsource(RequestRouter.on_replica_actor_died)
    assert "self._replica_result_future = replica_result_future" in inspect.getsource(
        DeploymentResponseGenerator.__mro__[1].__init__)


def _handle(inner: object) -> SimpleNamespace:
    return SimpleNamespace(_router=SimpleNamespace(_asyncio_router=inner), deployment_name="LLMServer:m")


def test_live_replicas_from_the_handle() -> None:
    rr = SimpleNamespace(curr_replicas={"r1": object(), "r2": object()})
    assert handle_live_replicas(_handle(SimpleNamespace(_deployment_available=True, _request_router=rr))) == 2
    # before the request router exists: the replica list the controller pushed
    inner = SimpleNamespace(_deployment_available=True, _request_router=None, _running_replicas=[1])
    assert handle_live_replicas(_handle(inner)) == 1
    # nothing pushed yet: unknown
    inner = SimpleNamespace(_deployment_available=True, _request_router=None, _running_replicas=None)
    assert handle_live_replicas(_handle(inner)) is None
    # failed to deploy: none
    assert handle_live_replicas(_handle(SimpleNamespace(_deployment_available=False, _request_router=rr))) == 0
    # not a Serve handle (or an upgrade moved things): unknown
    assert handle_live_replicas(SimpleNamespace()) is None
    assert handle_live_replicas(None) is None


def test_assigned_reads_the_replica_future() -> None:
    view = RayServeView({}, dict)
    fut: concurrent.futures.Future[object] = concurrent.futures.Future()
    response = SimpleNamespace(_replica_result_future=fut)
    assert view.assigned(response) is False
    fut.set_result(object())
    assert view.assigned(response) is True
    assert view.assigned(SimpleNamespace()) is None


def test_controller_read_is_bounded() -> None:
    handle = _handle(None)

    def slow() -> dict[str, tuple[str, int]]:
        import time

        time.sleep(1)
        return {}

    assert asyncio.run(RayServeView({"m": handle}, lambda: {"LLMServer:m": ("HEALTHY", 0)}).running("m")) == 0
    assert asyncio.run(RayServeView({"m": handle}, lambda: {"LLMServer:m": ("HEALTHY", 2)}).running("m")) == 2
    assert asyncio.run(RayServeView({"m": handle}, slow, timeout_s=0.05).running("m")) is None
    assert asyncio.run(RayServeView({"m": handle}, dict).running("other")) is None


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (BackPressureError(num_queued_requests=3, max_queued_requests=3), "backpressure"),
        (DeploymentUnavailableError(None), "no_replica"),  # type: ignore[arg-type]
        (ActorDiedError(), "replica_died"),
        (ActorUnavailableError("gone", b"x" * 16), "replica_died"),
        (ReplicaUnavailableError("r1"), "replica_died"),
        (RayTaskError("chat", "tb", ActorDiedError()), "replica_died"),
        (RayTaskError("chat", "tb", ValueError("engine")), "upstream_error"),
        (RuntimeError("?"), "upstream_error"),
    ],
)
def test_failure_reason(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == reason

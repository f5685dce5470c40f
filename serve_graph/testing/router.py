"""The production Router, in-process, over fake model handles (no Ray, no engine).

Only the engine is fake: parsing, classification, budget, routing, spans, metrics and response
building are the production code.

    router, calls = make_router(config="models.yaml", profile="local")
    resp = asyncio.run(post_chat(router, {"model": "auto", "messages": [...]}))
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from serve_graph.config import load_config
from serve_graph.metrics import RouterMetrics
from serve_graph.testing.handles import Call, FakeHandle, FakeServeView, NullMetrics, fake_probe


def default_config() -> Path:
    """$SERVE_GRAPH_CONFIG, else the checkout's models.yaml (beside the package), else ./models.yaml."""
    env = os.environ.get("SERVE_GRAPH_CONFIG")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "models.yaml"
    return beside if beside.is_file() else Path("models.yaml")


def make_router(profile: str = "local", config: str | Path | None = None, *,
                metrics: RouterMetrics | None = None, router_settings: dict[str, Any] | None = None,
                ) -> tuple[Any, list[Call]]:
    """A Router instance (the production class) over fake handles; returns it and its call log.

    The handles are `router.upstream.handles` (FakeHandle: set `behaviour`, `replicas`, `running`);
    `router_settings` overrides the profile's `router:` fields (e.g. a short `replica_wait_s`).
    """
    from serve_graph.router.ingress import Router

    prof = load_config(config or default_config()).resolve(profile)
    if router_settings:
        prof = prof.model_copy(update={"router": prof.router.model_copy(update=router_settings)})
    calls: list[Call] = []
    handles = {m.id: FakeHandle(m.id, calls) for m in prof.models}
    deployment: Any = Router  # the @serve.deployment wrapper; the class itself is func_or_class
    cls = deployment.func_or_class
    # Serve's ingress wrapper has an async __del__ (it shuts the ASGI app down in a replica); an
    # instance built here never started one, and would warn "never awaited" when collected.
    cls = type(cls.__name__, (cls,), {"__del__": lambda self: None})
    router = cls.__new__(cls)
    router._setup(prof.model_dump(mode="json"), handles, fake_probe(handles),
                  metrics or RouterMetrics(NullMetrics()), FakeServeView(handles))
    return router, calls


def make_request(body: dict[str, Any], headers: dict[str, str] | None = None,
                 path: str = "/v1/chat/completions") -> Request:
    """A Starlette request carrying `body` as JSON, as the Serve proxy would deliver it."""
    raw = json.dumps(body).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    hdrs = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in (headers or {}).items())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": hdrs, "query_string": b""}
    return Request(scope, receive)


async def post(router: Any, kind: Literal["chat", "completions"], body: dict[str, Any],
               headers: dict[str, str] | None = None) -> Response:
    """One request through Router._handle; returns the Starlette response (body fully built)."""
    if not router.health.healthy:
        await router.health.refresh()
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    response: Response = await router._handle(make_request(body, headers, path), kind)
    return response


async def post_chat(router: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """One chat request through Router._handle."""
    return await post(router, "chat", body, headers)
